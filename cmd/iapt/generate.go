package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/iapt-go/iapt/adapterfile"
	"github.com/iapt-go/iapt/bridge"
	promptfmt "github.com/iapt-go/iapt/prompt"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// samplingFlags are the sampler options shared by generate and bench.
type samplingFlags struct {
	p bridge.SamplerParams
}

func (s *samplingFlags) register(f *pflag.FlagSet) {
	f.Float32Var(&s.p.Temperature, "temperature", 0, "sampling temperature; 0 = greedy")
	f.IntVar(&s.p.TopK, "top-k", 40, "top-k cut-off (0 = off)")
	f.Float32Var(&s.p.TopP, "top-p", 0.95, "nucleus cut-off (1 = off)")
	f.Float32Var(&s.p.MinP, "min-p", 0.05, "min-p cut-off (0 = off)")
	f.Float32Var(&s.p.RepeatPenalty, "repeat-penalty", 1, "repetition penalty (1 = off)")
	f.Float32Var(&s.p.FrequencyPenalty, "frequency-penalty", 0, "frequency penalty (0 = off)")
	f.Float32Var(&s.p.PresencePenalty, "presence-penalty", 0, "presence penalty (0 = off)")
	f.IntVar(&s.p.PenaltyLastN, "penalty-last-n", 64, "tokens the penalties look back over")
	f.Uint32Var(&s.p.Seed, "seed", 42, "random seed of the sampler")
}

func newGenerateCmd() *cobra.Command {
	var (
		modelPath, prompt, adapterPath string
		maxTokens, threads, nctx       int
		threadsBatch                   int
		chat, verbose                  bool
		samp                           samplingFlags
	)
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Generate text from a GGUF model, streaming it to stdout",
		Example: `  iapt generate --model models/stories15M-q8_0.gguf --prompt "Once upon a time"
  iapt generate --model base.gguf --adapter my.iapt.gguf --chat --prompt "Write a story about Tom and a ball."`,
		RunE: func(cmd *cobra.Command, args []string) error {
			bridge.SetVerbose(verbose)
			model, err := bridge.LoadModel(modelPath, bridge.ModelParams{})
			if err != nil {
				return err
			}
			defer model.Close()
			var adapter *bridge.Adapter
			if adapterPath != "" {
				if adapter, err = model.LoadAdapter(adapterPath); err != nil {
					return err
				}
				defer adapter.Close()
			}
			text := prompt
			if chat {
				// The same choice as training and serving: the adapter's
				// template, else the model's, else the default.
				adapterTmpl := ""
				if adapter != nil {
					adapterTmpl, _ = adapter.Meta(adapterfile.PromptTemplateKey)
				}
				tmpl := promptfmt.Choose(adapterTmpl, model.Info().ChatTemplate)
				if text, err = promptfmt.Render(tmpl, []bridge.ChatMessage{{Role: "user", Content: prompt}}); err != nil {
					return err
				}
			}
			toks, err := model.Tokenize(text, true, chat)
			if err != nil {
				return err
			}
			ctx, err := model.NewContext(bridge.ContextParams{NCtx: nctx, Threads: threads, ThreadsBatch: threadsBatch})
			if err != nil {
				return err
			}
			defer ctx.Close()
			if !chat {
				fmt.Print(prompt)
			}
			res, err := ctx.Predict(toks, bridge.PredictOptions{
				MaxTokens: maxTokens, Sampler: samp.p, Adapter: adapter,
				OnText: func(s string) bool { fmt.Print(s); return true },
			})
			fmt.Println()
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "prompt: %d tokens, %.1f tokens/s; generated: %d tokens, %.1f tokens/s; finish: %s\n",
				res.PromptTokens, res.PromptTokensPerSecond(), len(res.Tokens), res.GenTokensPerSecond(), res.FinishReason)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&modelPath, "model", "m", "models/stories15M-q8_0.gguf", "GGUF base model")
	f.StringVarP(&prompt, "prompt", "p", "Once upon a time", "prompt text")
	f.StringVar(&adapterPath, "adapter", "", "IAPT adapter GGUF to switch on for the prompt")
	f.IntVarP(&maxTokens, "max-tokens", "n", 256, "maximum tokens to generate")
	f.IntVarP(&threads, "threads", "t", 1, "CPU threads for generation (small models decode fastest on 1; llama.cpp's threads spin while waiting, so more threads than free cores stall)")
	f.IntVar(&threadsBatch, "threads-batch", runtime.NumCPU(), "CPU threads for prompt processing")
	f.IntVar(&nctx, "ctx", 0, "context size (0 = the model's)")
	f.BoolVar(&chat, "chat", false, "render the prompt as a user turn: with the adapter's prompt template, else the model's chat template, else the default instruction template")
	f.BoolVarP(&verbose, "verbose", "v", false, "show llama.cpp's log")
	samp.register(f)
	return cmd
}

func newQuantizeCmd() *cobra.Command {
	var threads int
	cmd := &cobra.Command{
		Use:     "quantize IN.gguf OUT.gguf TYPE",
		Short:   "Quantize a GGUF model with llama.cpp's quantizer (TYPE: f32, f16, q8_0, q4_0)",
		Example: "  iapt quantize models/stories15M-f32.gguf models/stories15M-q8_0.gguf q8_0",
		Args:    cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := bridge.Quantize(args[0], args[1], args[2], threads); err != nil {
				return err
			}
			st, err := os.Stat(args[1])
			if err != nil {
				return err
			}
			fmt.Printf("wrote %s (%s, %.1f MB)\n", args[1], args[2], float64(st.Size())/1e6)
			return nil
		},
	}
	cmd.Flags().IntVarP(&threads, "threads", "t", 0, "quantizer threads (0 = all cores)")
	return cmd
}

func init() {
	rootCmd.AddCommand(newGenerateCmd(), newQuantizeCmd())
}
