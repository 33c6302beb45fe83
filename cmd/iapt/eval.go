package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/trainer"
)

func init() {
	rootCmd.AddCommand(newEvalCmd())
}

// newEvalCmd is `iapt eval`: an adapter against its base model on held-out
// data.
func newEvalCmd() *cobra.Command {
	var cfg trainer.EvalConfig
	var verbose bool
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "Compare an IAPT adapter with its base model on held-out data (loss and task metric)",
		Long: `Evaluate an adapter file (a trained adapter, or a checkpoint's
RUN/checkpoint/adapter.gguf) on JSONL examples in the training data format,
against the bare base model: the mean loss of the response tokens and, with
--task, the metric of greedy answers (sentiment: label accuracy; stories:
instruction-following rate). This is the comparison iapt train prints at its
end, computed the same way by the llama.cpp runtime. Prompts are rendered
with the template stored in the adapter, as iapt serve does.`,
		Example: `  iapt eval --model models/stories15M-q8_0.gguf --adapter models/adapters/imdb.iapt.gguf \
      --data data/imdb/eval.jsonl --task sentiment --no-eos-loss`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			bridge.SetVerbose(verbose)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			a, b, err := trainer.Evaluate(ctx, cfg, os.Stderr)
			if err != nil {
				return err
			}
			fmt.Printf("examples: %d\n", a.LossExamples)
			fmt.Printf("loss:  base %.4f   adapter %.4f\n", b.Loss, a.Loss)
			if cfg.Task != trainer.TaskNone {
				fmt.Printf("%s:  base %.3f   adapter %.3f\n", trainer.MetricName(cfg.Task), b.Metric, a.Metric)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfg.BaseModel, "model", "m", "models/stories15M-f32.gguf", "GGUF base model the adapter was trained on")
	f.StringVarP(&cfg.Adapter, "adapter", "a", "", "IAPT adapter file (required)")
	f.StringVar(&cfg.Data, "data", "", "evaluation data, JSONL (required)")
	f.IntVarP(&cfg.Examples, "examples", "n", 0, "use the first N examples (0 = all)")
	f.StringVar(&cfg.Task, "task", trainer.TaskNone, "metric of greedy answers: sentiment (label accuracy), stories (instruction-following rate) or none")
	f.IntVar(&cfg.MetricTokens, "metric-tokens", 0, "longest greedy answer for the metric (0 = 4 for sentiment, 150 for stories)")
	f.BoolVar(&cfg.NoEOSLoss, "no-eos-loss", false, "leave the end-of-sequence token that ends each response out of the loss (as iapt train --no-eos-loss)")
	f.IntVarP(&cfg.Threads, "threads", "t", 1, "CPU threads of the runtime")
	f.BoolVarP(&verbose, "verbose", "v", false, "show llama.cpp's log")
	_ = cmd.MarkFlagRequired("adapter")
	_ = cmd.MarkFlagRequired("data")
	return cmd
}
