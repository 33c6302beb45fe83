package trainer

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/iapt-go/iapt/adapterfile"
	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/dataset"
	"github.com/iapt-go/iapt/tasks"
)

// Tasks: the metric computed on greedy answers during evaluation.
const (
	// TaskSentiment is label accuracy: the answer's first word is the
	// reference label (tasks.SentimentCorrect).
	TaskSentiment = "sentiment"
	// TaskStories is the instruction-following rate: the story names the
	// name and the object the instruction asks for (tasks.StoryFollows).
	TaskStories = "stories"
	// TaskNone computes no metric.
	TaskNone = "none"
)

// defaultMetricTokens is the answer length of a task's metric when
// TrainConfig.MetricTokens is 0: enough for a label, or for a story.
var defaultMetricTokens = map[string]int{TaskSentiment: 4, TaskStories: 150}

// knownTask reports whether task is one of the Task constants.
func knownTask(task string) bool {
	return task == TaskSentiment || task == TaskStories || task == TaskNone
}

// unknownTask describes the error of an unknown task.
func unknownTask(task string) string {
	return fmt.Sprintf("task %q: want %q, %q or %q", task, TaskSentiment, TaskStories, TaskNone)
}

// metricName names a task's metric in logs and plots.
var metricName = map[string]string{TaskSentiment: "accuracy", TaskStories: "instruction-following rate"}

// MetricName names the metric of task ("" for TaskNone or an unknown task).
func MetricName(task string) string { return metricName[task] }

// EvalResult is an evaluation of an adapter (or of the bare base model) on
// held-out examples, computed by the llama.cpp runtime.
type EvalResult struct {
	// Loss is the mean cross-entropy of the response tokens given the
	// instruction, over LossExamples examples (LossTokens tokens).
	Loss                     float64
	LossExamples, LossTokens int
	// Metric is the task metric of greedy answers, in [0, 1], over
	// MetricExamples examples; NaN (and 0 examples) for TaskNone.
	Metric         float64
	MetricExamples int
}

// evaluator computes evaluation losses and metrics with the runtime: the
// adapter exported to a file and loaded by llama.cpp, the computation that
// serving does. The instruction is prefilled with the adapter (soft tokens
// generated from it), then the response is decoded by the plain base graph;
// the loss is that of the response tokens, which is the trainer's training
// loss up to the runtime's numerics (exactly the trainer's function, per
// the parity test, on an F32 base model).
type evaluator struct {
	rt           *bridge.Model
	ctx          *bridge.Context
	task         string
	metricTokens int
}

// newEvaluator makes a runtime context for evaluation on rt, with the whole
// training context in one ubatch so that any example prefills at once.
func newEvaluator(rt *bridge.Model, task string, metricTokens, threads int) (*evaluator, error) {
	n := rt.Info().CtxTrain
	ctx, err := rt.NewContext(bridge.ContextParams{NCtx: n, NBatch: n, NUbatch: n, Threads: threads, ThreadsBatch: threads})
	if err != nil {
		return nil, fmt.Errorf("evaluation context: %w", err)
	}
	if metricTokens == 0 {
		metricTokens = defaultMetricTokens[task]
	}
	return &evaluator{rt: rt, ctx: ctx, task: task, metricTokens: metricTokens}, nil
}

// Close frees the runtime context.
func (e *evaluator) Close() { e.ctx.Close() }

// evaluate computes the loss on lossEx and the metric on metricEx with
// adapter a (nil: the bare base model). It stops early with ctx's error
// when ctx is done.
func (e *evaluator) evaluate(ctx context.Context, a *bridge.Adapter, lossEx, metricEx []evalExample) (EvalResult, error) {
	r := EvalResult{Metric: math.NaN(), LossExamples: len(lossEx)}
	total := 0.0
	for _, ex := range lossEx {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		nll, err := e.responseNLL(a, ex.Example)
		if err != nil {
			return r, err
		}
		total += nll
		r.LossTokens += len(ex.Response)
	}
	r.Loss = total / float64(max(r.LossTokens, 1))
	if e.task == TaskNone {
		return r, nil
	}
	good := 0
	for _, ex := range metricEx {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		answer, err := e.answer(a, ex.Instruction)
		if err != nil {
			return r, err
		}
		if e.task == TaskSentiment && tasks.SentimentCorrect(answer, ex.response) ||
			e.task == TaskStories && tasks.StoryFollows(ex.instruction, answer) {
			good++
		}
		r.MetricExamples++
	}
	r.Metric = float64(good) / float64(max(r.MetricExamples, 1))
	return r, nil
}

// responseNLL returns the summed negative log-likelihood of the example's
// response tokens given its instruction.
func (e *evaluator) responseNLL(a *bridge.Adapter, ex Example) (float64, error) {
	if err := e.ctx.RemoveTokens(0, -1, -1); err != nil {
		return 0, err
	}
	pf, err := e.ctx.Prefill(0, ex.Instruction, a, false)
	if err != nil {
		return 0, err
	}
	logits, err := e.ctx.Logits(pf.LastIndex)
	if err != nil {
		return 0, err
	}
	nll := tokenNLL(logits, ex.Response[0])
	if len(ex.Response) == 1 {
		return nll, nil
	}
	b := bridge.NewBatch(len(ex.Response)-1, 1)
	defer b.Close()
	for i, tok := range ex.Response[:len(ex.Response)-1] {
		if _, err := b.Add(tok, pf.NextPos+i, []int{0}, true); err != nil {
			return 0, err
		}
	}
	if err := e.ctx.Decode(b); err != nil {
		return 0, err
	}
	for i, tok := range ex.Response[1:] {
		if logits, err = e.ctx.Logits(i); err != nil {
			return 0, err
		}
		nll += tokenNLL(logits, tok)
	}
	return nll, nil
}

// tokenNLL is -log softmax(logits)[tok], computed in float64.
func tokenNLL(logits []float32, tok int32) float64 {
	mx := float64(slices.Max(logits))
	sum := 0.0
	for _, v := range logits {
		sum += math.Exp(float64(v) - mx)
	}
	return math.Log(sum) + mx - float64(logits[tok])
}

// answer generates a greedy answer to a prompt, at most metricTokens
// tokens (and what the context leaves), stopping at an end-of-generation
// token or at BOS (with which llama2.c models such as stories15M begin
// another story).
func (e *evaluator) answer(a *bridge.Adapter, prompt []int32) (string, error) {
	soft := 0
	if a != nil {
		soft = a.SoftTokens
	}
	n := min(e.metricTokens, e.ctx.Params().NCtx-soft-len(prompt))
	if n <= 0 {
		return "", nil
	}
	res, err := e.ctx.Predict(prompt, bridge.PredictOptions{MaxTokens: n, Adapter: a})
	if err != nil {
		return "", err
	}
	toks := res.Tokens
	if i := slices.Index(toks, e.rt.Info().BOS); i >= 0 {
		toks = toks[:i]
	}
	return e.rt.Detokenize(toks, true, false)
}

// EvalConfig is the evaluation of a trained adapter on held-out data,
// compared with the bare base model (Evaluate).
type EvalConfig struct {
	// BaseModel is the adapter's GGUF base model, Adapter the adapter file
	// and Data the JSONL examples (the training data format).
	BaseModel, Adapter, Data string
	// Examples is the number of examples used, the first ones (0: all).
	Examples int
	// Task is the metric of greedy answers of at most MetricTokens tokens
	// (0: the task's default), as in TrainConfig.
	Task         string
	MetricTokens int
	// NoEOSLoss leaves the EOS token that ends each response out of the
	// loss, as TrainConfig.NoEOSLoss does.
	NoEOSLoss bool
	// Threads is the runtime's CPU thread count.
	Threads int
}

// Evaluate computes, with the runtime, the loss of cfg.Data's responses and
// the task metric of greedy answers with the adapter and with the bare base
// model: the held-out comparison that Train prints at its end, for any
// adapter file (a checkpoint, another data set). Prompts are rendered with
// the template stored in the adapter, as serving does. It reports on log
// what it read and dropped.
func Evaluate(ctx context.Context, cfg EvalConfig, log io.Writer) (adapter, base EvalResult, err error) {
	switch {
	case !knownTask(cfg.Task):
		return adapter, base, fmt.Errorf("evaluate: %s", unknownTask(cfg.Task))
	case cfg.Examples < 0 || cfg.MetricTokens < 0:
		return adapter, base, fmt.Errorf("evaluate: examples %d, metric tokens %d: must not be negative", cfg.Examples, cfg.MetricTokens)
	}
	rt, err := bridge.LoadModel(cfg.BaseModel, bridge.ModelParams{NoRepack: true})
	if err != nil {
		return adapter, base, err
	}
	defer rt.Close()
	ra, err := rt.LoadAdapter(cfg.Adapter)
	if err != nil {
		return adapter, base, err
	}
	defer ra.Close()
	tmpl, _ := ra.Meta(adapterfile.PromptTemplateKey)
	pairs, rep, err := dataset.Load(cfg.Data, dataset.LoadOptions{})
	if err != nil {
		return adapter, base, err
	}
	fmt.Fprintln(log, rep)
	enc, err := dataset.NewEncoder(rt, tmpl)
	if err != nil {
		return adapter, base, err
	}
	exs, err := encodeEval(enc, pairs, dataset.EncodeOptions{SoftTokens: ra.SoftTokens}, cfg.Data, log)
	if err != nil {
		return adapter, base, err
	}
	if len(exs) == 0 {
		return adapter, base, fmt.Errorf("%s: no usable examples", cfg.Data)
	}
	exs = firstN(exs, cfg.Examples)
	if cfg.NoEOSLoss {
		eos := rt.Info().EOS
		for i := range exs {
			stripEOS(&exs[i].Example, eos)
		}
	}
	ev, err := newEvaluator(rt, cfg.Task, cfg.MetricTokens, cfg.Threads)
	if err != nil {
		return adapter, base, err
	}
	defer ev.Close()
	if adapter, base, err = ev.compare(ctx, ra, exs); err != nil {
		return adapter, base, fmt.Errorf("evaluating %s: %w", cfg.Adapter, err)
	}
	return adapter, base, nil
}

// compare evaluates adapter a and the bare base model on the same
// examples, loss and metric: the held-out comparison of Train's end and of
// Evaluate.
func (e *evaluator) compare(ctx context.Context, a *bridge.Adapter, exs []evalExample) (adapter, base EvalResult, err error) {
	if adapter, err = e.evaluate(ctx, a, exs, exs); err != nil {
		return adapter, base, err
	}
	if base, err = e.evaluate(ctx, nil, exs, exs); err != nil {
		return adapter, base, fmt.Errorf("base model: %w", err)
	}
	return adapter, base, nil
}
