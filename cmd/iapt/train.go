package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/trainer"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

// barLog writes log lines above the progress bar: it clears the bar first;
// the bar draws itself again at the next step.
type barLog struct{ bar *progressbar.ProgressBar }

func (l barLog) Write(p []byte) (int, error) {
	_ = l.bar.Clear()
	return os.Stderr.Write(p)
}

func newTrainCmd() *cobra.Command {
	var (
		cfg        trainer.TrainConfig
		cpuProfile string
		verbose    bool
	)
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Train an IAPT adapter on instruction data (JSONL)",
		Long: `Train an IAPT adapter for a frozen GGUF base model on instruction/response
pairs, JSONL rows {"instruction", "response"[, "input", "system"]} or
{"messages": [...]} (see package dataset). Prompts are rendered with the base
model's chat template, or with the default instruction template when it has
none (stories15M); the template is stored in the adapter, so that serving
renders requests exactly as training did. Examples longer than --max-len are
dropped and reported, never cut.

Only the generators train (AdamW with decoupled weight decay on the weight
matrices, warm-up then cosine or linear decay, global-norm gradient clipping,
gradient accumulation); the base weights (dequantised to float32 for
quantised models) stay frozen. Every --eval-every steps the adapter is
exported and evaluated by the llama.cpp runtime: loss of the response tokens
on held-out examples, and with --task a metric of greedy answers (sentiment:
label accuracy; stories: instruction-following rate). The adapter written is
the one with the best evaluation loss; --patience stops early.

The run folder (--run-dir) receives metrics.jsonl (one JSON line per step),
curve.png (loss and metric curves) and checkpoint/ (every
--checkpoint-every steps, at the end, and on Ctrl-C or SIGTERM, which finish
the current step first). --resume RUN/checkpoint continues exactly where the
run stopped: run the same command with --resume added. --init ADAPTER starts
from a trained adapter of the same shape instead of a new one (for example to
train it further on other data); the run has its own schedule and optimizer
state from step 0.

Initialisation from the data (of a new adapter; --init keeps its own): before
the first step, the generator inputs (each layer's instruction rows) are
measured on a few training batches; the down projections are centred on the
mean row and scaled to unit spread, and each soft token starts as the mean
instruction row plus a small instruction-dependent part. The learning rate is
relative to those scales (Adam in units where every layer's generator is of
unit size), so one rate suits every layer although hidden-state sizes differ
by 15x in stories15M. The rational activations' coefficients learn at
--rational-lr times that rate: each acts on all pooled values of its layer at
once (the high ones on their fifth power), and at the full rate their gradient
was 7-10x that of any other group of values and the loss spiked.

Defaults: 4 soft tokens per layer as in the paper. The paper's learning rate,
1e-4, is for LLaMA-2 7B with a bottleneck of 320; for stories15M (d=288) with
a bottleneck of 64, 1e-3 to 3e-3 works well in a few hundred steps (the
README's adapters: 3e-3). When the response is a single label token
(sentiment), each example carries one token of weak evidence: the README's
sentiment adapter needed one pass over 16000 reviews in batches of 32 (500
steps) to reach 62%.`,
		Example: `  iapt train --model models/stories15M-q8_0.gguf --train data/imdb/train.jsonl --eval data/imdb/eval.jsonl \
      --task sentiment --steps 300 --out adapters/imdb.iapt.gguf
  iapt train ... --resume adapters/imdb.iapt.run/checkpoint     # the same options, continued`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			bridge.SetVerbose(verbose)
			if cfg.RunDir == "" {
				cfg.RunDir = strings.TrimSuffix(cfg.Out, ".gguf") + ".run"
			}
			bar := progressbar.NewOptions(cfg.Steps,
				progressbar.OptionSetWriter(os.Stderr),
				progressbar.OptionSetDescription("training"),
				progressbar.OptionShowCount(),
				progressbar.OptionSetElapsedTime(true),
				progressbar.OptionSetPredictTime(true),
				progressbar.OptionSetWidth(24),
				progressbar.OptionThrottle(500*time.Millisecond),
				progressbar.OptionShowDescriptionAtLineEnd())
			cfg.Log = barLog{bar}
			cfg.Progress = func(p trainer.Progress) {
				bar.Describe(fmt.Sprintf("loss %.4f  lr %.2e  %.0f tok/s", p.Loss, p.LR, p.TokensPerSec))
				_ = bar.Set(p.Step)
			}

			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			go func() {
				<-ctx.Done()
				stop() // a second signal ends the program at once
				fmt.Fprintln(cfg.Log, "stopping: finishing the current step, then saving a checkpoint (signal again to quit at once)")
			}()
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			res, err := trainer.Train(ctx, cfg)
			_ = bar.Exit()
			fmt.Fprintln(os.Stderr)
			if err != nil {
				return err
			}
			printTrainResult(cfg, res)
			if res.Interrupted {
				return errors.New("interrupted; continue with --resume " + cfg.RunDir + "/" + trainer.CheckpointDir)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfg.BaseModel, "model", "m", "models/stories15M-f32.gguf", "GGUF base model (llama; F32, F16 or quantised, e.g. Q8_0, dequantised for training)")
	f.StringVar(&cfg.TrainData, "train", "", "training data, JSONL (required)")
	f.StringVar(&cfg.EvalData, "eval", "", "evaluation data, JSONL (default: hold out --eval-frac of --train)")
	f.Float64Var(&cfg.EvalFrac, "eval-frac", 0.1, "share of --train held out for evaluation when there is no --eval")
	f.IntVar(&cfg.MaxLen, "max-len", 0, "longest example in rows: soft tokens + instruction + response (0 = the model's context)")
	f.BoolVar(&cfg.NoEOSLoss, "no-eos-loss", false, "leave the end-of-sequence token that ends each response out of the loss (for models that cannot predict it, such as stories15M; the adapter then does not learn to stop)")
	f.IntVar(&cfg.SoftTokens, "soft-tokens", 4, "soft tokens per layer, m (the paper's 4)")
	f.IntVar(&cfg.Bottleneck, "bottleneck", 64, "generator bottleneck width, r (the paper used 320 for d=4096)")
	f.StringVar(&cfg.Share, "share", trainer.ShareNone, "cross-layer sharing: none, or updown (one down/up projection for all layers)")
	f.StringVar(&cfg.Name, "name", "", "adapter name, general.name (default: the --out file name)")
	f.IntVar(&cfg.Steps, "steps", 300, "optimizer steps")
	f.IntVarP(&cfg.BatchSize, "batch", "b", 4, "examples per batch")
	f.IntVar(&cfg.Accum, "accum", 1, "batches per optimizer step (gradient accumulation)")
	f.Uint64Var(&cfg.Seed, "seed", 1, "random seed: initial adapter, data order, eval split")
	f.Float64Var(&cfg.Optim.LR, "lr", 2e-3, "peak learning rate (the paper's 1e-4 is for a 7B model; see --help)")
	f.IntVar(&cfg.Optim.Warmup, "warmup", 20, "warm-up steps (linear rise to --lr)")
	f.StringVar(&cfg.Optim.Schedule, "schedule", trainer.ScheduleCosine, "decay after the warm-up: cosine or linear (to 0 at the last step)")
	f.Float64Var(&cfg.Optim.WeightDecay, "weight-decay", 0.01, "AdamW decoupled weight decay (weight matrices only)")
	f.Float64Var(&cfg.Optim.Beta1, "beta1", 0.9, "AdamW beta1")
	f.Float64Var(&cfg.Optim.Beta2, "beta2", 0.999, "AdamW beta2")
	f.Float64Var(&cfg.Optim.Eps, "adam-eps", 1e-8, "AdamW epsilon")
	f.Float64Var(&cfg.Optim.ClipNorm, "clip", 1, "clip gradients to this global L2 norm (0 = off)")
	f.Float64Var(&cfg.Optim.RationalLR, "rational-lr", 0.1, "learning-rate factor of the rational activations' coefficients (0 = frozen at GELU; see --help)")
	f.IntVar(&cfg.EvalEvery, "eval-every", 50, "steps between evaluations (0 = only at the end)")
	f.IntVar(&cfg.EvalExamples, "eval-examples", 100, "evaluation examples for the loss (0 = all)")
	f.StringVar(&cfg.Task, "task", trainer.TaskNone, "metric of greedy answers: sentiment (label accuracy), stories (instruction-following rate) or none")
	f.IntVar(&cfg.MetricExamples, "metric-examples", 100, "evaluation examples for the metric during training (0 = all)")
	f.IntVar(&cfg.MetricTokens, "metric-tokens", 0, "longest greedy answer for the metric (0 = 4 for sentiment, 150 for stories)")
	f.IntVar(&cfg.Patience, "patience", 0, "stop after this many evaluations without a better loss (0 = never)")
	f.IntVar(&cfg.FinalExamples, "final-examples", 0, "evaluation examples on which the adapter and the base model are compared at the end (0 = all, -1 = skip)")
	f.StringVarP(&cfg.Out, "out", "o", "", "adapter file to write (required)")
	f.StringVar(&cfg.RunDir, "run-dir", "", "folder for the checkpoint, metrics.jsonl and curve.png (default: --out without .gguf, plus .run)")
	f.IntVar(&cfg.CheckpointEvery, "checkpoint-every", 50, "steps between checkpoints (0 = only at the end and on interruption)")
	f.StringVar(&cfg.Resume, "resume", "", "checkpoint folder to continue from (RUN-DIR/checkpoint)")
	f.StringVar(&cfg.Init, "init", "", "adapter file to start from instead of a new adapter (same shape), trained further with this run's schedule")
	f.IntVarP(&cfg.Threads, "threads", "t", 1, "CPU threads of the runtime evaluation (1 is the safe choice on a busy 2-core machine: llama.cpp's threads spin while they wait for each other)")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile (pprof) of the run to this file")
	f.BoolVarP(&verbose, "verbose", "v", false, "show llama.cpp's log")
	_ = cmd.MarkFlagRequired("train")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

// printTrainResult prints the summary of a run on stdout.
func printTrainResult(cfg trainer.TrainConfig, res *trainer.Result) {
	fmt.Printf("steps: %d of %d", res.Steps, cfg.Steps)
	if res.EarlyStopped {
		fmt.Print(" (early stop)")
	}
	fmt.Printf("\ntrainable parameters: %d\n", res.Params)
	fmt.Printf("time: %s; %d tokens trained on, %.0f tokens/s in the optimizer steps\n",
		res.Elapsed.Round(time.Second), res.Tokens, res.TokensPerSec)
	if res.Interrupted {
		return
	}
	fmt.Printf("adapter: %s (step %d, eval loss %.4f)\n", cfg.Out, res.BestStep, res.BestLoss)
	if res.Adapter != nil {
		fmt.Printf("held-out examples: %d\n", res.Adapter.LossExamples)
		fmt.Printf("eval loss:  base %.4f   adapter %.4f\n", res.Base.Loss, res.Adapter.Loss)
		if res.MetricName != "" {
			fmt.Printf("%s:  base %.3f   adapter %.3f\n", res.MetricName, res.Base.Metric, res.Adapter.Metric)
		}
	}
}

func init() {
	rootCmd.AddCommand(newTrainCmd())
}
