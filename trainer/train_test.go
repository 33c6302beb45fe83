package trainer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/iapt-go/iapt/adapterfile"
	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/gguf"
	"github.com/iapt-go/iapt/internal/testmodels"
	"github.com/iapt-go/iapt/prompt"
)

// testOptim is the optimizer of the training tests.
var testOptim = OptimConfig{LR: 1e-2, Warmup: 2, Schedule: ScheduleCosine, WeightDecay: 0.01,
	Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, ClipNorm: 1, RationalLR: 0.1}

// TestLoopLowersLossFrozenBase runs the training loop on a tiny random model
// and a fixed set of examples: the loss drops, the adapter's values are the
// optimizer's, and the base weights are bit-identical to their source.
func TestLoopLowersLossFrozenBase(t *testing.T) {
	cfg := tinyConfig()
	w := randomWeights(cfg, 51)
	a, err := NewAdapter(cfg.AdapterConfig(4, 8, ShareNone), 52)
	if err != nil {
		t.Fatal(err)
	}
	model := newTestModel(t, cfg, w, a)
	examples := randomExamples(cfg, 53, [2]int{6, 3}, [2]int{4, 5}, [2]int{7, 2}, [2]int{5, 4},
		[2]int{3, 6}, [2]int{8, 3}, [2]int{5, 5}, [2]int{6, 4})
	all := mustBatch(t, 4, examples)
	tc := TrainConfig{Steps: 40, BatchSize: 4, Accum: 2, Seed: 54, Optim: testOptim}
	scale, err := initFromData(model, a, examples, tc.BatchSize, true, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	before, err := model.Loss(all)
	if err != nil {
		t.Fatal(err)
	}
	l, err := newLoop(model, a, newAdamW(a.NumParams()), scale, examples, tc)
	if err != nil {
		t.Fatal(err)
	}
	for range tc.Steps {
		if _, err := l.step(); err != nil {
			t.Fatal(err)
		}
	}
	after, err := model.Loss(all)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loss %.4f -> %.4f after %d steps", before, after, tc.Steps)
	if !(after < 0.8*before) {
		t.Errorf("loss %.4f after %d steps, %.4f before: want a drop of 20%% or more", after, tc.Steps, before)
	}
	got, err := model.Adapter()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(flatten(got), l.values) {
		t.Error("the model's adapter is not the optimizer's values")
	}
	changed := 0
	for i, p := range params(got) {
		if !slices.Equal(p.data, params(a)[i].data) {
			changed++
		}
	}
	if changed != len(params(a)) {
		t.Errorf("%d of %d adapter tensors changed, want all", changed, len(params(a)))
	}
	for i, v := range model.base.tensors {
		name := baseSpecs(cfg)[i].name
		if !slices.Equal(tensors.MustCopyFlatData[float32](v), w[name].data) {
			t.Errorf("base weight %s changed", name)
		}
	}
}

func TestOptimConfig(t *testing.T) {
	o := testOptim
	o.Warmup = 10
	if got := o.rate(0, 110); math.Abs(got-o.LR/10) > 1e-12 {
		t.Errorf("first warm-up rate %g, want %g", got, o.LR/10)
	}
	if got := o.rate(9, 110); got != o.LR {
		t.Errorf("last warm-up rate %g, want %g", got, o.LR)
	}
	if got := o.rate(60, 110); math.Abs(got-o.LR/2) > 1e-12 {
		t.Errorf("cosine rate half-way %g, want %g", got, o.LR/2)
	}
	o.Schedule = ScheduleLinear
	if got := o.rate(35, 110); math.Abs(got-0.75*o.LR) > 1e-12 {
		t.Errorf("linear rate a quarter of the way %g, want %g", got, 0.75*o.LR)
	}
	for _, bad := range []func(*OptimConfig){
		func(o *OptimConfig) { o.LR = 0 },
		func(o *OptimConfig) { o.Schedule = "step" },
		func(o *OptimConfig) { o.Beta2 = 1 },
		func(o *OptimConfig) { o.ClipNorm = -1 },
		func(o *OptimConfig) { o.RationalLR = -0.1 },
		func(o *OptimConfig) { o.RationalLR = math.Inf(1) },
	} {
		c := testOptim
		bad(&c)
		if c.Validate() == nil {
			t.Errorf("%+v: accepted", c)
		}
	}
	g := []float32{3, 4}
	if n := clip(g, 1); n != 5 || math.Abs(float64(g[0])-0.6) > 1e-6 || math.Abs(float64(g[1])-0.8) > 1e-6 {
		t.Errorf("clip: norm %g, clipped %v", n, g)
	}
}

// tinyGGUF writes a tiny random llama model with stories15M's tokenizer,
// which llama.cpp loads: the training entry point runs on it in a blink.
func tinyGGUF(t *testing.T) string {
	t.Helper()
	cfg := tinyConfig()
	cfg.Vocab, cfg.ContextLength = 32000, 128
	kv, ts := tinyGGUFParts(cfg, randomWeights(cfg, 61))
	stories, err := gguf.Open(testmodels.Path(t, testmodels.StoriesF32))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range stories.KV {
		if strings.HasPrefix(e.Key, "tokenizer.") {
			kv = append(kv, e)
		}
	}
	kv = append(kv, gguf.KV{Key: "general.name", Value: "tiny"})
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	writeRaw(t, path, kv, ts)
	return path
}

// writeJSONL writes rows (one JSON text each) to a file and returns its path.
func writeJSONL(t *testing.T, dir, name string, rows []string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(strings.Join(rows, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// storyRows returns n instruction rows about names and objects.
func storyRows(n int) []string {
	names := []string{"Lily", "Tom", "Sue", "Ben", "Mia", "Max"}
	objects := []string{"ball", "kite", "cat", "dog", "cake", "boat", "tree"}
	rows := make([]string, n)
	for i := range rows {
		name, obj := names[i%len(names)], objects[i%len(objects)]
		row, _ := json.Marshal(map[string]string{
			"instruction": fmt.Sprintf("Write a story about %s and a %s.", name, obj),
			"response":    fmt.Sprintf("%s had a %s. %s played with the %s all day.", name, obj, name, obj),
		})
		rows[i] = string(row)
	}
	return rows
}

// tinyTrainConfig is a Train configuration for the tiny model.
func tinyTrainConfig(t *testing.T, model string) TrainConfig {
	dir := t.TempDir()
	return TrainConfig{
		BaseModel:  model,
		TrainData:  writeJSONL(t, dir, "train.jsonl", storyRows(10)),
		EvalData:   writeJSONL(t, dir, "eval.jsonl", storyRows(13)[10:]),
		SoftTokens: 4, Bottleneck: 8, Share: ShareUpDown,
		Steps: 6, BatchSize: 3, Accum: 2, Seed: 5, Optim: testOptim,
		EvalEvery: 2, Task: TaskStories, MetricTokens: 8, FinalExamples: -1,
		Out: filepath.Join(dir, "out.gguf"), RunDir: filepath.Join(dir, "run"), Threads: 1,
	}
}

// TestTrainResumeIsExact interrupts a run and resumes it: the parameters,
// optimizer moments, best adapter and metrics are those of the same run
// without interruption, bit for bit.
func TestTrainResumeIsExact(t *testing.T) {
	model := tinyGGUF(t)
	full := tinyTrainConfig(t, model)
	res, err := Train(context.Background(), full)
	if err != nil {
		t.Fatal(err)
	}
	if res.Steps != full.Steps || res.Interrupted {
		t.Fatalf("uninterrupted run: %+v", res)
	}

	cut := tinyTrainConfig(t, model)
	cut.TrainData, cut.EvalData = full.TrainData, full.EvalData
	ctx, cancel := context.WithCancel(context.Background())
	cut.Progress = func(p Progress) {
		if p.Step == 3 {
			cancel()
		}
	}
	res, err = Train(ctx, cut)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted || res.Steps != 3 {
		t.Fatalf("interrupted run: %+v, want interrupted after step 3", res)
	}
	if _, err := os.Stat(cut.Out); err == nil {
		t.Error("an interrupted run wrote the output adapter")
	}
	cut.Progress = nil
	cut.Resume = filepath.Join(cut.RunDir, CheckpointDir)
	if res, err = Train(context.Background(), cut); err != nil {
		t.Fatal(err)
	}
	if res.Steps != full.Steps || res.Interrupted {
		t.Fatalf("resumed run: %+v", res)
	}
	for _, f := range []string{ckptAdapter, ckptBest, ckptMoments} {
		a, errA := os.ReadFile(filepath.Join(full.RunDir, CheckpointDir, f))
		b, errB := os.ReadFile(filepath.Join(cut.RunDir, CheckpointDir, f))
		if errA != nil || errB != nil {
			t.Fatal(errA, errB)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("checkpoint %s differs between the uninterrupted and the resumed run", f)
		}
	}
	fa, err := adapterfile.Read(full.Out)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := adapterfile.Read(cut.Out)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(flatten(fa), flatten(fb)) || fa.Meta[MetaSteps] != fb.Meta[MetaSteps] {
		t.Error("the resumed run wrote another adapter")
	}
	ra, err := readRecords(filepath.Join(full.RunDir, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	rb, err := readRecords(filepath.Join(cut.RunDir, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(ra) != full.Steps || len(rb) != full.Steps {
		t.Fatalf("%d and %d metric records, want %d", len(ra), len(rb), full.Steps)
	}
	for i := range ra {
		a, b := ra[i], rb[i]
		a.Elapsed, b.Elapsed, a.TokensPerSec, b.TokensPerSec = 0, 0, 0, 0
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if !bytes.Equal(ja, jb) {
			t.Errorf("metrics of step %d differ:\n%s\n%s", i+1, ja, jb)
		}
	}
	if ra[1].EvalLoss == nil || ra[1].Metric == nil {
		t.Errorf("step 2 has no evaluation: %+v", ra[1])
	}

	// A resume with other options is refused, naming them.
	other := cut
	other.Optim.LR *= 2
	other.Steps = 8
	if _, err := Train(context.Background(), other); err == nil ||
		!strings.Contains(err.Error(), "lr") || !strings.Contains(err.Error(), "steps: checkpoint 6, now 8") {
		t.Errorf("resume with other options: error %v", err)
	}
}

// TestTrainMalformedRow checks that Train names the file and line of a
// malformed JSONL row.
func TestTrainMalformedRow(t *testing.T) {
	model := tinyGGUF(t)
	cfg := tinyTrainConfig(t, model)
	rows := storyRows(5)
	rows[2] = `{"instruction": "Write a story about Tom.", "response": 3}`
	cfg.TrainData = writeJSONL(t, t.TempDir(), "bad.jsonl", rows)
	_, err := Train(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "bad.jsonl:3:") || !strings.Contains(err.Error(), `"response"`) {
		t.Errorf("error %v, want one naming bad.jsonl:3 and the field", err)
	}
	cfg = tinyTrainConfig(t, model)
	cfg.Task = "poetry"
	if _, err := Train(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), `task "poetry"`) {
		t.Errorf("bad task: error %v", err)
	}
}

// TestTrainedAdapterInRuntime trains a few steps on stories15M and checks
// the adapter written: its metadata, and that the runtime loads it and
// computes the trainer's logits (parity) and evaluation loss.
func TestTrainedAdapterInRuntime(t *testing.T) {
	path := testmodels.Path(t, testmodels.StoriesF32)
	cfg := tinyTrainConfig(t, path)
	cfg.Steps, cfg.Accum, cfg.EvalEvery, cfg.Task, cfg.Share = 3, 1, 0, TaskNone, ShareNone
	cfg.FinalExamples = 0
	cfg.Optim.LR = 0.05 // large steps, so that the adapter changes the logits clearly
	res, err := Train(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// iapt eval computes Train's final comparison from the files alone.
	ea, eb, err := Evaluate(context.Background(), EvalConfig{BaseModel: path, Adapter: cfg.Out, Data: cfg.EvalData, Task: TaskNone, Threads: 1}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.Adapter == nil || res.Base == nil || ea.Loss != res.Adapter.Loss || eb.Loss != res.Base.Loss || ea.LossExamples != res.Adapter.LossExamples {
		t.Errorf("Evaluate: adapter %+v, base %+v; Train's final comparison: adapter %+v, base %+v", ea, eb, res.Adapter, res.Base)
	}
	if ea.Loss == eb.Loss {
		t.Errorf("Evaluate: the adapter's loss %.4f is the base model's", ea.Loss)
	}
	for _, bad := range []EvalConfig{
		{BaseModel: path, Adapter: cfg.Out, Data: cfg.EvalData, Task: "summary"},
		{BaseModel: path, Adapter: cfg.Out, Data: cfg.EvalData, Task: TaskNone, Examples: -1},
		{BaseModel: path, Adapter: cfg.Out + ".missing", Data: cfg.EvalData, Task: TaskNone},
	} {
		if _, _, err := Evaluate(context.Background(), bad, io.Discard); err == nil {
			t.Errorf("Evaluate(%+v): no error", bad)
		} else {
			t.Logf("Evaluate(%+v): %v", bad, err)
		}
	}
	a, err := adapterfile.Read(cfg.Out)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		adapterfile.PromptTemplateKey: prompt.DefaultTemplate, "general.name": "out",
		MetaSteps: "3", MetaDataset: cfg.TrainData + " (eval " + cfg.EvalData + ")",
		MetaFinalEvalLoss: fmt.Sprintf("%.6g", res.BestLoss), MetaBaseModel: "stories15M (stories15M-f32.gguf)",
	} {
		if a.Meta[key] != want {
			t.Errorf("metadata %s = %q, want %q", key, a.Meta[key], want)
		}
	}

	rt, err := bridge.LoadModel(path, bridge.ModelParams{NoRepack: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	data, err := loadData(rt, &cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	noEOS := cfg
	noEOS.NoEOSLoss = true
	stripped, err := loadData(rt, &noEOS, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	eos := rt.Info().EOS
	for i, e := range data.train {
		if r := stripped.train[i].Response; e.Response[len(e.Response)-1] != eos || !slices.Equal(r, e.Response[:len(e.Response)-1]) {
			t.Fatalf("example %d: response %v, with NoEOSLoss %v", i, e.Response, r)
		}
	}
	base, err := LoadBaseBridge(rt)
	if err != nil {
		t.Fatal(err)
	}
	// stories15M's tied output gives EOS the row of 16,937 never-trained
	// tokens.
	if twins, err := base.headTwins(eos); err != nil || twins != 16937 {
		t.Errorf("EOS head twins: %d, %v; want 16937", twins, err)
	}
	model, err := NewModel(base, a, Options{})
	if err != nil {
		t.Fatal(err)
	}
	bare, err := NewModel(base, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var exs []Example
	for _, e := range data.eval {
		exs = append(exs, e.Example)
	}
	loss, err := model.Loss(mustBatch(t, 4, exs))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("eval loss: runtime %.5f, trainer %.5f", res.BestLoss, loss)
	if math.Abs(loss-res.BestLoss) > 1e-3*math.Max(1, loss) {
		t.Errorf("runtime eval loss %.5f, trainer %.5f", res.BestLoss, loss)
	}

	ra, err := rt.LoadAdapter(cfg.Out)
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	ctx := ParityContext(t, rt)
	defer ctx.Close()
	prompts := []Example{{Instruction: exs[0].Instruction}, {Instruction: exs[1].Instruction}}
	want, err := model.Logits(mustBatch(t, 4, prompts))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := bare.Logits(mustBatch(t, 0, prompts))
	if err != nil {
		t.Fatal(err)
	}
	var worst, scale, effect float64
	for j, p := range prompts {
		if err := ctx.RemoveTokens(0, -1, -1); err != nil {
			t.Fatal(err)
		}
		pf, err := ctx.Prefill(0, p.Instruction, ra, true)
		if err != nil {
			t.Fatal(err)
		}
		for k := range p.Instruction {
			got, err := ctx.Logits(pf.Offset + k)
			if err != nil {
				t.Fatal(err)
			}
			for v, g := range got {
				ref := float64(want.Row(j, 4+k)[v])
				worst = math.Max(worst, math.Abs(float64(g)-ref))
				scale = math.Max(scale, math.Abs(ref))
				effect = math.Max(effect, math.Abs(ref-float64(plain.Row(j, k)[v])))
			}
		}
	}
	t.Logf("runtime vs trainer: max |diff| %.3g, max |logit| %.3g; adapter effect %.3g", worst, scale, effect)
	if worst > 1e-3*math.Max(1, scale) {
		t.Errorf("runtime and trainer logits differ by %g", worst)
	}
	if effect < 0.1 {
		t.Errorf("the trained adapter changes the logits by at most %g", effect)
	}
	checkInitRun(t, cfg, data.train, model)
}

// checkInitRun trains on from the adapter file of run trained, which model
// holds (train are its training examples): the first step's loss is that
// adapter's on the first batch, and an adapter of another shape is refused
// with an error naming its file.
func checkInitRun(t *testing.T, trained TrainConfig, train []Example, model *Model) {
	cfg := tinyTrainConfig(t, trained.BaseModel)
	cfg.TrainData, cfg.EvalData, cfg.Share, cfg.Task = trained.TrainData, trained.EvalData, trained.Share, TaskNone
	cfg.Steps, cfg.Accum, cfg.EvalEvery, cfg.Seed, cfg.Init = 1, 1, 0, 9, trained.Out
	if _, err := Train(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	recs, err := readRecords(filepath.Join(cfg.RunDir, MetricsFile))
	if err != nil || len(recs) != 1 {
		t.Fatalf("init run metrics: %v, %v", recs, err)
	}
	first := (&loop{train: train, cfg: cfg, batches: len(train) / cfg.BatchSize, orderEpoch: -1}).batch(0)
	want, err := model.Loss(mustBatch(t, 4, first))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("init run: first step loss %.5f, the initial adapter's %.5f", recs[0].TrainLoss, want)
	if math.Abs(recs[0].TrainLoss-want) > 1e-4*math.Max(1, want) {
		t.Errorf("init run: first step loss %.5f, want the initial adapter's %.5f", recs[0].TrainLoss, want)
	}
	cfg.Bottleneck, cfg.RunDir = cfg.Bottleneck+1, t.TempDir()
	if _, err := Train(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), trained.Out) || !strings.Contains(err.Error(), "shape") {
		t.Errorf("init adapter of another shape: error %v, want one naming %s and its shape", err, trained.Out)
	}
}

// TestScaledAdamIsAdamInFittedUnits checks the learning-rate factors of
// adamW.update: a step on values p with factors s and gradient g·s is the
// plain AdamW step on p/s with gradient g·s, multiplied back by s.
func TestScaledAdamIsAdamInFittedUnits(t *testing.T) {
	o := testOptim
	p := []float32{0.5, -2, 30, 0.01}
	g := []float32{0.3, -0.1, 2e-3, 5}
	s := []float32{0.02, 1, 40, 3}
	decay := []bool{true, false, true, true}
	scaled, unit := slices.Clone(p), make([]float32, len(p))
	gs := make([]float32, len(g))
	for i := range p {
		unit[i] = p[i] / s[i]
		gs[i] = g[i] * s[i]
	}
	a, b := newAdamW(len(p)), newAdamW(len(p))
	ones := []float32{1, 1, 1, 1}
	for range 3 {
		a.update(o, scaled, gs, decay, s, 1e-2)
		b.update(o, unit, gs, decay, ones, 1e-2)
	}
	for i := range p {
		if want := unit[i] * s[i]; math.Abs(float64(scaled[i]-want)) > 1e-5*math.Abs(float64(want))+1e-7 {
			t.Errorf("value %d: %g with factor %g, want %g (AdamW on p/s)", i, scaled[i], s[i], want)
		}
		if scaled[i] == p[i] {
			t.Errorf("value %d did not move", i)
		}
	}
}

// TestFitToDataAndLRScales checks the data-dependent initialisation and the
// learning-rate factors that go with it, per layer and shared.
func TestFitToDataAndLRScales(t *testing.T) {
	st := inputStats{RMS: []float64{0.5, 4}, Std: []float64{0.25, 3}, Mean: [][]float32{{1, 2, 3, 4}, {-1, -2, -3, -4}}}
	for _, share := range []string{ShareNone, ShareUpDown} {
		a, err := NewAdapter(adapterfile.Config{Arch: "llama", SoftTokens: 2, Bottleneck: 3, Embd: 4, Layers: 2, Share: share}, 7)
		if err != nil {
			t.Fatal(err)
		}
		before := flatten(a)
		if err := fitToData(a, st); err != nil {
			t.Fatal(err)
		}
		scale, err := lrScales(a, st, 0.25)
		if err != nil {
			t.Fatal(err)
		}
		after := flatten(a)
		i := 0
		for _, p := range params(a) {
			rms, std, mean := sharedScale(st.RMS), sharedScale(st.Std), []float32{0, 0, 0, 0} // shared: mean of the mean rows
			if l := p.layer; l >= 0 {
				rms, std, mean = st.RMS[l], st.Std[l], st.Mean[l]
			}
			for j := range p.data {
				var wantValue, wantScale float64 = float64(before[i]), 1
				switch {
				case strings.HasSuffix(p.name, "iapt_down.weight"):
					wantValue, wantScale = float64(before[i])/std, 1/std
				case strings.HasSuffix(p.name, "iapt_down.bias"):
					// Z = H·Wdown + bdown is 0 for H = the mean row.
					wantValue = 0
					for k, x := range mean {
						w0 := i - j - 4*3 // the 4×3 weights precede the bias
						wantValue -= float64(x) * float64(before[w0+j*4+k]) / std
					}
				case strings.HasSuffix(p.name, "iapt_up.weight"):
					wantValue, wantScale = float64(before[i])*rms, rms
				case strings.HasSuffix(p.name, "iapt_up.bias"):
					wantValue, wantScale = float64(mean[j]), rms
				case strings.Contains(p.name, "iapt_rat_"):
					wantScale = 0.25
				}
				if math.Abs(float64(after[i])-wantValue) > 1e-5 || math.Abs(float64(scale[i])-wantScale) > 1e-6 {
					t.Errorf("%s %s[%d]: value %g factor %g, want %g and %g", share, p.name, j, after[i], scale[i], wantValue, wantScale)
				}
				i++
			}
		}
	}
	a, _ := NewAdapter(adapterfile.Config{Arch: "llama", SoftTokens: 2, Bottleneck: 3, Embd: 4, Layers: 2, Share: ShareNone}, 7)
	bad := inputStats{RMS: []float64{1, 1}, Std: []float64{1, 0}, Mean: st.Mean}
	if err := fitToData(a, bad); err == nil || !strings.Contains(err.Error(), "layer 1") {
		t.Errorf("zero spread: error %v, want one naming layer 1", err)
	}
}

// ParityContext returns a runtime context whose logits can be compared
// with the trainer's as the specification's parity asks: KV cache in F32,
// and flash attention off, since llama.cpp's CPU flash attention rounds
// through F16 (base-model logits then differ by ~1e-2 instead of ~1e-5).
// The caller closes it, before the model. (Exported for the external
// parity test.)
func ParityContext(t *testing.T, rt *bridge.Model) *bridge.Context {
	t.Helper()
	ctx, err := rt.NewContext(bridge.ContextParams{NCtx: 256, TypeK: "f32", TypeV: "f32", FlashAttn: "off", Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	return ctx
}
