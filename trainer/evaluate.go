package trainer

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/iapt-go/iapt/bridge"
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

// metricName names a task's metric in logs and plots.
var metricName = map[string]string{TaskSentiment: "accuracy", TaskStories: "instruction-following rate"}

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
