package trainer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/iapt-go/iapt/adapterfile"
	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/dataset"
)

// Provenance metadata keys that Train writes into the adapter, besides
// general.name and adapterfile.PromptTemplateKey.
const (
	MetaBaseModel     = "adapter.iapt.train.base_model"
	MetaDataset       = "adapter.iapt.train.dataset"
	MetaSteps         = "adapter.iapt.train.steps"
	MetaFinalEvalLoss = "adapter.iapt.train.final_eval_loss"
	MetaConfig        = "adapter.iapt.train.config"
)

// Files a run writes into TrainConfig.RunDir.
const (
	// CheckpointDir is the checkpoint folder, what --resume takes.
	CheckpointDir = "checkpoint"
	// MetricsFile is the JSON-lines metrics log (one Record per step).
	MetricsFile = "metrics.jsonl"
	// CurveFile is the PNG of the loss and metric curves.
	CurveFile = "curve.png"
)

// TrainConfig configures Train.
type TrainConfig struct {
	// BaseModel is the GGUF base model (llama architecture; F32, F16 or
	// a type ggml dequantises, such as Q8_0).
	BaseModel string
	// TrainData is the JSONL training data (see package dataset).
	// EvalData is the JSONL evaluation data; when empty, EvalFrac of the
	// training data is held out instead (shuffled with Seed).
	TrainData, EvalData string
	EvalFrac            float64
	// MaxLen bounds an example's rows: soft tokens + instruction +
	// response; 0 or more than the model's context means the context.
	// Longer examples are dropped and reported, never cut.
	MaxLen int
	// NoEOSLoss leaves the end-of-sequence token that ends every response
	// out of the loss (training and evaluation), for base models that
	// cannot learn to predict it (see unlearnableEOS); the adapter then
	// does not learn to stop.
	NoEOSLoss bool

	// SoftTokens (m), Bottleneck (r) and Share ("none" or "updown") shape
	// the adapter.
	SoftTokens, Bottleneck int
	Share                  string
	// Name is the adapter's general.name (default: the output file name).
	Name string

	// Steps is the number of optimizer steps; each takes Accum batches of
	// BatchSize examples. The data is visited in epochs, each in an order
	// drawn from Seed and the epoch number (a last incomplete batch of an
	// epoch is left out). Seed also draws the initial adapter.
	Steps, BatchSize, Accum int
	Seed                    uint64
	Optim                   OptimConfig

	// EvalEvery is the number of steps between evaluations (0: only at
	// the end). An evaluation computes the loss on the first EvalExamples
	// evaluation examples (0: all) and the Task metric (TaskSentiment,
	// TaskStories or TaskNone) on the first MetricExamples (0: all) from
	// greedy answers of at most MetricTokens tokens (0: the task's
	// default), all with the runtime.
	EvalEvery, EvalExamples      int
	Task                         string
	MetricExamples, MetricTokens int
	// Patience stops training after this many evaluations without a
	// better loss (0: never). The adapter written is the one with the best
	// evaluation loss.
	Patience int
	// FinalExamples is the number of evaluation examples (0: all) on which
	// the final adapter and the bare base model are compared after
	// training, loss and metric; negative skips the comparison.
	FinalExamples int

	// Out is the adapter file to write.
	Out string
	// RunDir receives the checkpoint, the metrics log and the curves.
	RunDir string
	// CheckpointEvery is the number of steps between checkpoints (0: only
	// at the end and on interruption).
	CheckpointEvery int
	// Resume is a checkpoint folder to continue from; the run's data and
	// hyperparameters must be those of the checkpoint.
	Resume string
	// Init is an adapter file to start from instead of a new adapter (for
	// example one trained on other data); its shape must be the one
	// SoftTokens, Bottleneck and Share give for the base model. The run
	// trains it with its own schedule and optimizer state from step 0.
	Init string
	// Threads is the number of CPU threads of the runtime evaluation.
	Threads int

	// Log receives a human-readable account of the run (nil: discarded).
	Log io.Writer
	// Progress, when set, is called after every optimizer step.
	Progress func(Progress)
}

// Progress describes the run after an optimizer step.
type Progress struct {
	// Step is the number of steps done, of Steps.
	Step, Steps int
	// Loss is the step's training loss; LR its learning rate.
	Loss, LR float64
	// TokensPerSec is the training speed of this session so far.
	TokensPerSec float64
}

// Result sums up a run.
type Result struct {
	// Steps is the number of optimizer steps done; Interrupted says the
	// run stopped on ctx before the end (the checkpoint holds it), and
	// EarlyStopped that early stopping ended it.
	Steps                     int
	Interrupted, EarlyStopped bool
	// Params is the adapter's number of trainable values.
	Params int
	// Tokens is the number of tokens trained on, Elapsed the training
	// time (evaluations included), over all sessions of the run;
	// TokensPerSec is the speed of the optimizer steps alone.
	Tokens       int64
	Elapsed      time.Duration
	TokensPerSec float64
	// BestStep and BestLoss locate the adapter written (the best
	// evaluation loss; the last step when nothing was evaluated).
	BestStep int
	BestLoss float64
	// Adapter and Base compare the written adapter and the bare base
	// model on FinalExamples evaluation examples (nil when skipped or
	// interrupted).
	Adapter, Base *EvalResult
	// MetricName names the task metric ("" for TaskNone).
	MetricName string
}

// validate checks the configuration, with errors that name the option.
func (c *TrainConfig) validate() error {
	checks := []struct {
		bad  bool
		what string
	}{
		{c.BaseModel == "", "no base model"},
		{c.TrainData == "", "no training data"},
		{c.Out == "", "no output adapter file"},
		{c.RunDir == "", "no run folder"},
		{c.EvalData == "" && !(c.EvalFrac > 0 && c.EvalFrac < 1), fmt.Sprintf("eval fraction %g must be in (0, 1) without an evaluation file", c.EvalFrac)},
		{c.MaxLen < 0, fmt.Sprintf("max length %d must not be negative", c.MaxLen)},
		{c.Steps <= 0, fmt.Sprintf("steps %d must be positive", c.Steps)},
		{c.BatchSize <= 0, fmt.Sprintf("batch size %d must be positive", c.BatchSize)},
		{c.Accum <= 0, fmt.Sprintf("gradient accumulation %d must be positive", c.Accum)},
		{c.EvalEvery < 0 || c.EvalExamples < 0 || c.MetricExamples < 0 || c.MetricTokens < 0 || c.Patience < 0 || c.CheckpointEvery < 0,
			"evaluation and checkpoint intervals and counts must not be negative"},
		{!knownTask(c.Task), unknownTask(c.Task)},
		{c.Threads < 0, fmt.Sprintf("threads %d must not be negative", c.Threads)},
	}
	for _, ch := range checks {
		if ch.bad {
			return fmt.Errorf("train: %s", ch.what)
		}
	}
	if err := c.Optim.Validate(); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	// The adapter's shape is checked by adapterfile (through NewAdapter).
	return nil
}

// Train trains an IAPT adapter on instruction data and writes it to
// cfg.Out: the best adapter by evaluation loss, with the prompt template of
// its training data (so that serving renders prompts the same way) and its
// provenance. It checkpoints into cfg.RunDir every CheckpointEvery steps, at
// the end and when ctx is done; then it finishes the current step, saves
// and returns with Result.Interrupted set and a nil error.
func Train(ctx context.Context, cfg TrainConfig) (*Result, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Log
	if log == nil {
		log = io.Discard
	}
	rt, err := bridge.LoadModel(cfg.BaseModel, bridge.ModelParams{NoRepack: true})
	if err != nil {
		return nil, err
	}
	defer rt.Close()
	info := rt.Info()
	data, err := loadData(rt, &cfg, log)
	if err != nil {
		return nil, err
	}
	base, err := LoadBaseBridge(rt)
	if err != nil {
		return nil, err
	}
	if !cfg.NoEOSLoss {
		twins, err := base.headTwins(info.EOS)
		if err != nil {
			return nil, err
		}
		if twins >= 100 {
			fmt.Fprintf(log, "warning: the end-of-sequence token (id %d) shares its output-head row with %d other tokens (never trained): "+
				"the model cannot give it a probability above 1/%d, so every response's last token costs at least %.2f nats and its gradient "+
				"only adds noise; consider --no-eos-loss\n", info.EOS, twins, twins+1, math.Log(float64(twins+1)))
		}
	}
	ac := base.cfg.AdapterConfig(cfg.SoftTokens, cfg.Bottleneck, cfg.Share)
	start, initSHA, err := startAdapter(ac, cfg)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(cfg.BaseModel)
	if err != nil {
		return nil, err
	}
	traj := trajectory{
		BaseModel: fmt.Sprintf("%s (%d bytes)", filepath.Base(cfg.BaseModel), st.Size()), DataHash: data.hash,
		SoftTokens: cfg.SoftTokens, Bottleneck: cfg.Bottleneck, Share: cfg.Share,
		Steps: cfg.Steps, BatchSize: cfg.BatchSize, Accum: cfg.Accum, Seed: cfg.Seed, Optim: cfg.Optim,
		EvalEvery: cfg.EvalEvery, EvalExamples: cfg.EvalExamples, Patience: cfg.Patience, Init: initSHA,
	}
	ck := &checkpoint{state: trainState{Trajectory: traj}, adapter: start, opt: newAdamW(start.NumParams())}
	if cfg.Resume != "" {
		if ck, err = loadCheckpoint(cfg.Resume, start.NumParams()); err != nil {
			return nil, err
		}
		if d := ck.state.Trajectory.diff(traj); len(d) > 0 {
			return nil, fmt.Errorf("resume from %s: the run differs from the checkpoint's (resume with the same data and options):\n  %s",
				cfg.Resume, strings.Join(d, "\n  "))
		}
		if ck.adapter.Config != ac {
			return nil, fmt.Errorf("resume from %s: adapter %+v, want %+v", cfg.Resume, ck.adapter.Config, ac)
		}
		fmt.Fprintf(log, "resuming from %s at step %d of %d\n", cfg.Resume, ck.state.Step, cfg.Steps)
	}
	model, err := NewModel(base, ck.adapter, Options{})
	if err != nil {
		return nil, err
	}
	if cfg.Resume == "" {
		if ck.state.Inputs, err = initFromData(model, ck.adapter, data.train, cfg.BatchSize, cfg.Init == "", log); err != nil {
			return nil, err
		}
	}
	loop, err := newLoop(model, ck.adapter, ck.opt, ck.state.Inputs, data.train, cfg)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "adapter: %d soft tokens, bottleneck %d, share %s: %d trainable values; base %s (d=%d, %d layers) frozen\n",
		cfg.SoftTokens, cfg.Bottleneck, cfg.Share, start.NumParams(), info.Name, info.Embd, info.Layers)
	fmt.Fprintf(log, "prompt template: %q\n", data.template)

	if err := os.MkdirAll(cfg.RunDir, 0o755); err != nil {
		return nil, err
	}
	keep := -1
	if cfg.Resume != "" {
		keep = ck.state.Step
	}
	mlog, records, err := openMetricsLog(filepath.Join(cfg.RunDir, MetricsFile), keep)
	if err != nil {
		return nil, err
	}
	defer mlog.Close()
	ev, err := newEvaluator(rt, cfg.Task, cfg.MetricTokens, cfg.Threads)
	if err != nil {
		return nil, err
	}
	defer ev.Close()

	r := &runner{cfg: cfg, rt: rt, ev: ev, data: data, loop: loop, ck: ck, mlog: mlog, records: records, log: log}
	res, err := r.run(ctx)
	if err != nil || res.Interrupted {
		return res, err
	}
	return res, r.finish(ctx, res)
}

// startAdapter returns the adapter a run starts from: cfg.Init's, checked
// against the shape c and returned with its file's SHA-256, or a new one
// drawn from cfg.Seed.
func startAdapter(c adapterfile.Config, cfg TrainConfig) (*adapterfile.Adapter, string, error) {
	if cfg.Init == "" {
		a, err := NewAdapter(c, cfg.Seed)
		return a, "", err
	}
	a, err := adapterfile.Read(cfg.Init)
	if err != nil {
		return nil, "", fmt.Errorf("train: initial adapter: %w", err)
	}
	if a.Config != c {
		return nil, "", fmt.Errorf("train: initial adapter %s: shape %+v, but this run's options and base model give %+v", cfg.Init, a.Config, c)
	}
	sha, err := fileSHA(cfg.Init)
	return a, sha, err
}

// initFromData measures the generator inputs of model (whose adapter is a)
// on the first training batches and returns the statistics (lrScales needs
// them for the whole run). With fit, it completes the initialisation of a
// new adapter a with fitToData on them.
func initFromData(model *Model, a *adapterfile.Adapter, train []Example, batch int, fit bool, log io.Writer) (inputStats, error) {
	var sq []float64
	var sum [][]float64
	n := 0
	for i := 0; i+batch <= len(train) && n < initScaleBatches; i += batch {
		b, err := NewBatch(a.SoftTokens, train[i:i+batch], 0)
		if err != nil {
			return inputStats{}, err
		}
		rms, mean, err := model.inputStats(b)
		if err != nil {
			return inputStats{}, err
		}
		if sq == nil {
			sq, sum = make([]float64, len(rms)), make([][]float64, len(rms))
			for l := range sum {
				sum[l] = make([]float64, len(mean[l]))
			}
		}
		for l, r := range rms {
			sq[l] += r * r
			for j, x := range mean[l] {
				sum[l][j] += float64(x)
			}
		}
		n++
	}
	if n == 0 {
		return inputStats{}, fmt.Errorf("train: %d training examples, fewer than the batch size %d", len(train), batch)
	}
	var st inputStats
	for l := range sq {
		ms := sq[l] / float64(n)
		mean := make([]float32, len(sum[l]))
		meanSq := 0.0
		for j, x := range sum[l] {
			mean[j] = float32(x / float64(n))
			meanSq += float64(mean[j]) * float64(mean[j])
		}
		st.RMS = append(st.RMS, math.Sqrt(ms))
		st.Std = append(st.Std, math.Sqrt(ms-meanSq/float64(len(mean))))
		st.Mean = append(st.Mean, mean)
	}
	use := "the initial adapter is kept as it is"
	if fit {
		use = "down projections centred and scaled by the spread, up projections scaled by the RMS; up biases start at the mean row"
	}
	fmt.Fprintf(log, "generator inputs by layer: RMS %.3g, spread around the mean row %.3g (%s)\n", st.RMS, st.Std, use)
	if !fit {
		return st, nil
	}
	if err := fitToData(a, st); err != nil {
		return inputStats{}, err
	}
	return st, model.SetAdapter(a)
}

// runner holds a run of Train in progress.
type runner struct {
	cfg     TrainConfig
	rt      *bridge.Model
	ev      *evaluator
	data    *trainData
	loop    *loop
	ck      *checkpoint
	mlog    *metricsLog
	records []Record
	log     io.Writer
	// stepTime and sessionTokens measure the optimizer steps of this
	// session.
	stepTime      time.Duration
	sessionTokens int64
}

// run trains until the last step, early stopping or ctx is done.
func (r *runner) run(ctx context.Context) (*Result, error) {
	cfg, st := r.cfg, &r.ck.state
	res := &Result{Params: r.ck.adapter.NumParams(), MetricName: metricName[cfg.Task]}
	ckptDir := filepath.Join(cfg.RunDir, CheckpointDir)
	sessionStart := time.Now()
	elapsed0 := st.Elapsed
	for st.Step < cfg.Steps && !st.Stopped {
		t0 := time.Now()
		s, err := r.loop.step()
		if err != nil {
			return nil, fmt.Errorf("train: step %d: %w", st.Step+1, err)
		}
		r.stepTime += time.Since(t0)
		r.sessionTokens += s.tokens
		st.Step++
		st.Tokens += s.tokens
		rec := Record{
			Step: st.Step, Epoch: r.loop.epoch(st.Step), TrainLoss: s.loss, GradNorm: s.gradNorm, LR: s.lr,
			TokensPerSec: float64(s.tokens) / time.Since(t0).Seconds(),
		}
		if (cfg.EvalEvery > 0 && st.Step%cfg.EvalEvery == 0) || st.Step == cfg.Steps {
			// The evaluation belongs to the step: an interruption waits for
			// it, so that the best adapter and early stopping of a resumed
			// run are those of an uninterrupted one.
			e, err := r.evaluateCurrent(context.WithoutCancel(ctx))
			if err != nil {
				return nil, fmt.Errorf("train: evaluation after step %d: %w", st.Step, err)
			}
			rec.EvalLoss = finite(e.Loss)
			if cfg.Task != TaskNone {
				rec.Metric, rec.MetricName = finite(e.Metric), metricName[cfg.Task]
			}
			r.track(e)
		}
		st.Elapsed = elapsed0 + time.Since(sessionStart).Seconds()
		rec.Elapsed = st.Elapsed
		if err := r.mlog.add(rec); err != nil {
			return nil, err
		}
		r.records = append(r.records, rec)
		if cfg.Progress != nil {
			cfg.Progress(Progress{Step: st.Step, Steps: cfg.Steps, Loss: s.loss, LR: s.lr,
				TokensPerSec: r.tokensPerSec()})
		}
		if ctx.Err() != nil {
			return r.interrupt(res, ckptDir)
		}
		if cfg.CheckpointEvery > 0 && st.Step%cfg.CheckpointEvery == 0 && st.Step < cfg.Steps && !st.Stopped {
			if err := r.saveCheckpoint(ckptDir); err != nil {
				return nil, err
			}
		}
	}
	if err := r.saveCheckpoint(ckptDir); err != nil {
		return nil, err
	}
	r.fill(res)
	return res, nil
}

// tokensPerSec is the speed of this session's optimizer steps.
func (r *runner) tokensPerSec() float64 {
	if r.stepTime <= 0 {
		return 0
	}
	return float64(r.sessionTokens) / r.stepTime.Seconds()
}

// fill sets the result's counts from the state.
func (r *runner) fill(res *Result) {
	st := r.ck.state
	res.Steps, res.EarlyStopped = st.Step, st.Stopped
	res.Tokens, res.Elapsed = st.Tokens, time.Duration(st.Elapsed*float64(time.Second))
	res.TokensPerSec = r.tokensPerSec()
}

// interrupt saves a checkpoint and returns the result of an interrupted run.
func (r *runner) interrupt(res *Result, dir string) (*Result, error) {
	if err := r.saveCheckpoint(dir); err != nil {
		return nil, err
	}
	st := r.ck.state
	r.fill(res)
	res.Interrupted = true
	fmt.Fprintf(r.log, "interrupted after step %d of %d; checkpoint saved in %s\n", st.Step, r.cfg.Steps, dir)
	return res, nil
}

// saveCheckpoint writes the checkpoint and the curves.
func (r *runner) saveCheckpoint(dir string) error {
	r.ck.adapter = r.loop.adapter
	if err := r.ck.save(dir); err != nil {
		return err
	}
	return plotCurves(filepath.Join(r.cfg.RunDir, CurveFile), r.records, r.title())
}

// title is the title of the curves.
func (r *runner) title() string {
	return fmt.Sprintf("IAPT %s: m=%d r=%d share=%s, B=%d×%d, lr %g (%s)", filepath.Base(r.cfg.TrainData),
		r.cfg.SoftTokens, r.cfg.Bottleneck, r.cfg.Share, r.cfg.BatchSize, r.cfg.Accum, r.cfg.Optim.LR, r.cfg.Optim.Schedule)
}

// track updates the best adapter and early stopping with an evaluation of
// the current adapter.
func (r *runner) track(e EvalResult) {
	st := &r.ck.state
	if st.BestLoss == nil || e.Loss < *st.BestLoss {
		loss := e.Loss
		st.BestLoss, st.BestStep, st.BadEvals = &loss, st.Step, 0
		r.ck.best = r.loop.snapshot()
	} else {
		st.BadEvals++
		if r.cfg.Patience > 0 && st.BadEvals >= r.cfg.Patience {
			st.Stopped = true
			fmt.Fprintf(r.log, "early stop after step %d: %d evaluations without a better loss than %.4f (step %d)\n",
				st.Step, st.BadEvals, *st.BestLoss, st.BestStep)
		}
	}
	line := fmt.Sprintf("step %d: eval loss %.4f on %d examples", st.Step, e.Loss, e.LossExamples)
	if r.cfg.Task != TaskNone {
		line += fmt.Sprintf(", %s %.3f on %d", metricName[r.cfg.Task], e.Metric, e.MetricExamples)
	}
	fmt.Fprintln(r.log, line)
}

// firstN returns the first n elements of xs (all when n is 0 or too large).
func firstN[T any](xs []T, n int) []T {
	if n <= 0 || n > len(xs) {
		return xs
	}
	return xs[:n]
}

// withAdapter exports a to a file in the run folder, loads it in the
// runtime and calls f with it.
func (r *runner) withAdapter(a *adapterfile.Adapter, f func(*bridge.Adapter) error) error {
	path := filepath.Join(r.cfg.RunDir, "eval-adapter.gguf")
	if err := a.Write(path); err != nil {
		return err
	}
	defer os.Remove(path)
	ra, err := r.rt.LoadAdapter(path)
	if err != nil {
		return err
	}
	defer ra.Close()
	return f(ra)
}

// evaluateCurrent evaluates the current adapter.
func (r *runner) evaluateCurrent(ctx context.Context) (EvalResult, error) {
	var res EvalResult
	err := r.withAdapter(r.loop.adapter, func(ra *bridge.Adapter) error {
		var err error
		res, err = r.ev.evaluate(ctx, ra, firstN(r.data.eval, r.cfg.EvalExamples), firstN(r.data.eval, r.cfg.MetricExamples))
		return err
	})
	return res, err
}

// finish writes the adapter with its metadata and compares it with the
// base model.
func (r *runner) finish(ctx context.Context, res *Result) error {
	cfg, st := r.cfg, r.ck.state
	out := r.ck.best
	res.BestStep, res.BestLoss = st.BestStep, math.NaN()
	if st.BestLoss != nil {
		res.BestLoss = *st.BestLoss
	}
	if out == nil { // nothing evaluated
		out, res.BestStep = r.loop.snapshot(), st.Step
	}
	name := cfg.Name
	if name == "" {
		name = strings.TrimSuffix(filepath.Base(cfg.Out), ".gguf")
	}
	dataName := cfg.TrainData
	if cfg.EvalData != "" {
		dataName += " (eval " + cfg.EvalData + ")"
	}
	info := r.rt.Info()
	conf, _ := json.Marshal(st.Trajectory) // a struct of plain values always marshals
	out.Meta["general.name"] = name
	out.Meta[adapterfile.PromptTemplateKey] = r.data.template
	out.Meta[MetaBaseModel] = fmt.Sprintf("%s (%s)", info.Name, filepath.Base(cfg.BaseModel))
	out.Meta[MetaDataset] = dataName
	out.Meta[MetaSteps] = fmt.Sprint(res.BestStep)
	out.Meta[MetaConfig] = string(conf)
	if !math.IsNaN(res.BestLoss) {
		out.Meta[MetaFinalEvalLoss] = fmt.Sprintf("%.6g", res.BestLoss)
	}
	if err := out.Write(cfg.Out); err != nil {
		return err
	}
	fmt.Fprintf(r.log, "wrote %s: the adapter after step %d (eval loss %.4f)\n", cfg.Out, res.BestStep, res.BestLoss)
	if cfg.FinalExamples < 0 {
		return nil
	}
	exs := firstN(r.data.eval, cfg.FinalExamples)
	var a, b EvalResult
	err := r.withAdapter(out, func(ra *bridge.Adapter) error {
		var err error
		a, b, err = r.ev.compare(ctx, ra, exs)
		return err
	})
	if err != nil {
		return fmt.Errorf("final evaluation: %w", err)
	}
	res.Adapter, res.Base = &a, &b
	line := fmt.Sprintf("held-out comparison on %d examples: eval loss base %.4f, adapter %.4f", len(exs), b.Loss, a.Loss)
	if cfg.Task != TaskNone {
		line += fmt.Sprintf("; %s base %.3f, adapter %.3f", res.MetricName, b.Metric, a.Metric)
	}
	fmt.Fprintln(r.log, line)
	return nil
}

// stepStats describes one optimizer step.
type stepStats struct {
	loss, gradNorm, lr float64
	// tokens counts the rows of the examples (soft tokens included).
	tokens int64
}

// loop is the optimisation: the model, its adapter values on the host, the
// optimizer and the training data order.
type loop struct {
	model   *Model
	adapter *adapterfile.Adapter // the current values
	values  []float32            // the same values, flat
	decay   []bool
	scale   []float32 // learning-rate factor of each value (lrScales)
	opt     *adamW
	train   []Example
	cfg     TrainConfig
	batches int // batches per epoch
	// order is the example order of epoch orderEpoch.
	order      []int
	orderEpoch int
}

// newLoop prepares the optimisation of model, whose adapter holds the
// values of a, with optimizer state opt (opt.steps steps done); inputs are
// the statistics a was initialised with (lrScales needs them).
func newLoop(model *Model, a *adapterfile.Adapter, opt *adamW, inputs inputStats, train []Example, cfg TrainConfig) (*loop, error) {
	if model.adapter == nil {
		return nil, errors.New("train: the model has no adapter")
	}
	nb := len(train) / cfg.BatchSize
	if nb == 0 {
		return nil, fmt.Errorf("train: %d training examples, fewer than the batch size %d", len(train), cfg.BatchSize)
	}
	ps := params(a)
	values := flatten(a)
	if len(opt.m) != len(values) {
		return nil, fmt.Errorf("train: optimizer state for %d values, adapter has %d", len(opt.m), len(values))
	}
	scale, err := lrScales(a, inputs, cfg.Optim.RationalLR)
	if err != nil {
		return nil, err
	}
	cur, err := emptyLike(a)
	if err != nil {
		return nil, err
	}
	unflatten(cur, values)
	return &loop{model: model, adapter: cur, values: values, decay: decayMask(ps), scale: scale, opt: opt, train: train,
		cfg: cfg, batches: nb, orderEpoch: -1}, nil
}

// epoch returns the (fractional) number of epochs done after step steps.
func (l *loop) epoch(step int) float64 {
	return float64(step*l.cfg.Accum) / float64(l.batches)
}

// batch returns the examples of batch k of the run: batch k mod batches of
// epoch k / batches, whose order is a shuffle drawn from the seed and the
// epoch, so that any step's data is known without replaying the run.
func (l *loop) batch(k int) []Example {
	e, j := k/l.batches, k%l.batches
	if e != l.orderEpoch {
		l.order = make([]int, len(l.train))
		for i := range l.order {
			l.order[i] = i
		}
		dataset.Shuffle(l.order, l.cfg.Seed^(uint64(e+1)*0x9e3779b97f4a7c15))
		l.orderEpoch = e
	}
	exs := make([]Example, l.cfg.BatchSize)
	for i := range exs {
		exs[i] = l.train[l.order[j*l.cfg.BatchSize+i]]
	}
	return exs
}

// step makes optimizer step opt.steps+1: Accum batches, their gradients
// averaged over all their response tokens and multiplied by the values'
// learning-rate factors (the gradient in the units of lrScales), clipped,
// and an AdamW update.
func (l *loop) step() (stepStats, error) {
	s := l.opt.steps
	acc := make([]float64, len(l.values))
	var s0 stepStats
	total, count := 0.0, 0
	for a := range l.cfg.Accum {
		b, err := NewBatch(l.adapter.SoftTokens, l.batch(s*l.cfg.Accum+a), 0)
		if err != nil {
			return s0, err
		}
		loss, grad, err := l.model.LossAndGradients(b)
		if err != nil {
			return s0, err
		}
		n := 0
		for _, v := range b.Loss {
			if v {
				n++
			}
		}
		for _, length := range b.Lengths {
			s0.tokens += int64(length)
		}
		total += loss * float64(n)
		count += n
		i := 0
		for _, p := range params(grad) {
			for _, g := range p.data {
				acc[i] += float64(g) * float64(l.scale[i]) * float64(n)
				i++
			}
		}
	}
	g := make([]float32, len(acc))
	for i, v := range acc {
		g[i] = float32(v / float64(count))
	}
	s0.loss = total / float64(count)
	if math.IsNaN(s0.loss) || math.IsInf(s0.loss, 0) {
		return s0, fmt.Errorf("training loss is %g", s0.loss)
	}
	s0.gradNorm = clip(g, l.cfg.Optim.ClipNorm)
	s0.lr = l.cfg.Optim.rate(s, l.cfg.Steps)
	l.opt.update(l.cfg.Optim, l.values, g, l.decay, l.scale, s0.lr)
	unflatten(l.adapter, l.values)
	if err := l.model.SetAdapter(l.adapter); err != nil {
		return s0, err
	}
	return s0, nil
}

// snapshot returns a copy of the current adapter.
func (l *loop) snapshot() *adapterfile.Adapter {
	a, _ := emptyLike(l.adapter) // the configuration was validated already
	unflatten(a, l.values)
	return a
}
