package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/iapt-go/iapt/adapterfile"
	"github.com/iapt-go/iapt/bench"
	"github.com/iapt-go/iapt/bridge"
	"github.com/spf13/cobra"
)

// benchCmd measures the runtime; its subcommands measure IAPT adapters and
// the server.
var benchCmd = &cobra.Command{
	Use:   "bench",
	Short: "Measure prompt-processing and generation speed (tokens/s) of GGUF models",
	Example: `  iapt bench --model models/stories15M-f32.gguf --model models/stories15M-q8_0.gguf --threads 1,2
  iapt bench adapters --model models/stories15M-f32.gguf`,
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a list of positive integers", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func init() {
	var (
		models            []string
		threads           string
		prompt, gen, runs int
	)
	benchCmd.RunE = func(cmd *cobra.Command, args []string) error {
		ths, err := parseInts(threads)
		if err != nil {
			return fmt.Errorf("--threads: %w", err)
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(w, "model\tthreads\tprompt tok/s (pp%d)\tgen tok/s (tg%d)\tgen tok/s, 8 seqs batched\t\n", prompt, gen)
		for _, path := range models {
			m, err := bridge.LoadModel(path, bridge.ModelParams{})
			if err != nil {
				return err
			}
			for _, th := range ths {
				r, err := bench.MeasureModel(m, th, prompt, gen, runs)
				if err != nil {
					m.Close()
					return err
				}
				fmt.Fprintf(w, "%s\t%d\t%.0f\t%.1f\t%.1f\t\n", r.Model, r.Threads, r.PromptTokPerS, r.GenTokPerS, r.BatchedGenTokS)
			}
			m.Close()
		}
		return w.Flush()
	}
	f := benchCmd.Flags()
	f.StringArrayVarP(&models, "model", "m", []string{"models/stories15M-f32.gguf", "models/stories15M-q8_0.gguf"}, "GGUF model (repeatable)")
	f.StringVarP(&threads, "threads", "t", "1,2", "comma-separated thread counts")
	f.IntVar(&prompt, "prompt-tokens", 128, "prompt length for prompt processing")
	f.IntVar(&gen, "gen-tokens", 128, "tokens to generate")
	f.IntVar(&runs, "runs", 3, "repetitions (the median is reported)")

	var (
		model                       string
		th, m, r, tenants, steps, n int
		share, lens                 string
	)
	adaptersCmd := &cobra.Command{
		Use:   "adapters",
		Short: "Measure IAPT cost: prefill with vs without an adapter, and multi-tenant batched decoding",
		RunE: func(cmd *cobra.Command, args []string) error {
			pl, err := parseInts(lens)
			if err != nil {
				return fmt.Errorf("--prompt-lens: %w", err)
			}
			base, err := bridge.LoadModel(model, bridge.ModelParams{})
			if err != nil {
				return err
			}
			defer base.Close()
			info := base.Info()
			cfg := adapterfile.Config{Arch: info.Architecture, Embd: info.Embd, Layers: info.Layers, SoftTokens: m, Bottleneck: r, Share: share}
			res, err := bench.MeasureAdapters(base, cfg, th, tenants, steps, n, pl)
			if err != nil {
				return err
			}
			fmt.Printf("%s, %d threads, adapters m=%d r=%d share=%s\n\n", info.Path, th, m, r, share)
			w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintf(w, "prompt tokens\tprefill base ms\tprefill IAPT ms\toverhead\t\n")
			for _, p := range res.Prefill {
				fmt.Fprintf(w, "%d\t%.2f\t%.2f\t%+.1f%%\t\n", p.PromptTokens, p.Base.Seconds()*1e3, p.IAPT.Seconds()*1e3, 100*p.Overhead())
			}
			w.Flush()
			fmt.Printf("\ndecode, %d sequences: %d different adapters %.1f tok/s, no adapters %.1f tok/s (%.1f%%)\n",
				res.Tenants, res.Tenants, res.DecodeAdapterTokS, res.DecodeBaseTokS, 100*res.DecodeAdapterTokS/res.DecodeBaseTokS)
			return nil
		},
	}
	af := adaptersCmd.Flags()
	af.StringVarP(&model, "model", "m", "models/stories15M-f32.gguf", "GGUF base model")
	af.IntVarP(&th, "threads", "t", 2, "CPU threads")
	af.IntVar(&m, "soft-tokens", 4, "soft tokens per layer (m)")
	af.IntVar(&r, "bottleneck", 64, "generator bottleneck (r)")
	af.StringVar(&share, "share", "none", "cross-layer sharing: none or updown")
	af.IntVar(&tenants, "tenants", 8, "sequences (each with its own adapter) decoded together")
	af.IntVar(&steps, "steps", 64, "decode steps")
	af.IntVar(&n, "runs", 5, "repetitions (the median is reported)")
	af.StringVar(&lens, "prompt-lens", "16,64,200", "comma-separated prompt lengths")
	benchCmd.AddCommand(adaptersCmd)
	rootCmd.AddCommand(benchCmd)
}
