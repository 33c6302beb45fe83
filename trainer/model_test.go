package trainer

import (
	"fmt"
	"math"
	"testing"

	"github.com/iapt-go/iapt/adapterfile"
)

// newTestModel builds a model on random tiny weights, with adapter a (nil for
// the bare base model).
func newTestModel(t *testing.T, cfg Config, w memSource, a *adapterfile.Adapter) *Model {
	t.Helper()
	base, err := LoadBase(cfg, w)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewModel(base, a, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestBaseForwardMatchesReference(t *testing.T) {
	for _, tied := range []bool{false, true} {
		cfg := tinyConfig()
		cfg.TiedOutput = tied
		w := randomWeights(cfg, 1)
		model := newTestModel(t, cfg, w, nil)
		examples := randomExamples(cfg, 2, [2]int{5, 7}, [2]int{3, 2})
		b, err := NewBatch(0, examples, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := model.Logits(b)
		if err != nil {
			t.Fatal(err)
		}
		for s, e := range examples {
			tokens := append(append([]int32{}, e.Instruction...), e.Response...)
			compareRows(t, fmt.Sprintf("tied=%v", tied), got, s, refLogits(cfg, w, nil, tokens, 0), 0, 1e-4)
		}
	}
}

func TestIAPTForwardMatchesReference(t *testing.T) {
	cfg := tinyConfig()
	w := randomWeights(cfg, 3)
	base := newTestModel(t, cfg, w, nil)
	for _, share := range []string{ShareNone, ShareUpDown} {
		for _, m := range []int{4, 8} {
			name := fmt.Sprintf("share=%s/m=%d", share, m)
			a, err := adapterfile.Random(cfg.AdapterConfig(m, 6, share), 4, 0.5)
			if err != nil {
				t.Fatal(err)
			}
			model := newTestModel(t, cfg, w, a)
			examples := randomExamples(cfg, 5, [2]int{6, 5}, [2]int{1, 3})
			b, err := NewBatch(m, examples, 0)
			if err != nil {
				t.Fatal(err)
			}
			got, err := model.Logits(b)
			if err != nil {
				t.Fatal(err)
			}
			// The same sequences without soft tokens, through the base model.
			bare, err := base.Logits(mustBatch(t, 0, examples))
			if err != nil {
				t.Fatal(err)
			}
			effect := 0.0
			for s, e := range examples {
				tokens := append(make([]int32, m), e.Instruction...)
				tokens = append(tokens, e.Response...)
				compareRows(t, name, got, s, refLogits(cfg, w, a, tokens, len(e.Instruction)), m, 1e-4)
				for i := m; i < len(tokens); i++ {
					for j, v := range got.Row(s, i) {
						effect = math.Max(effect, math.Abs(float64(v-bare.Row(s, i-m)[j])))
					}
				}
			}
			if effect < 0.1 {
				t.Errorf("%s: the adapter changes the logits by at most %g", name, effect)
			}
		}
	}
}

func mustBatch(t *testing.T, m int, examples []Example) *Batch {
	t.Helper()
	b, err := NewBatch(m, examples, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPaddedBatchMatchesSingleExamples(t *testing.T) {
	cfg := tinyConfig()
	w := randomWeights(cfg, 6)
	a, err := adapterfile.Random(cfg.AdapterConfig(4, 5, ShareNone), 7, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	model := newTestModel(t, cfg, w, a)
	examples := randomExamples(cfg, 8, [2]int{9, 6}, [2]int{2, 1}, [2]int{5, 11})
	batched, err := model.Logits(mustBatch(t, 4, examples))
	if err != nil {
		t.Fatal(err)
	}
	for s, e := range examples {
		single, err := model.Logits(mustBatch(t, 4, []Example{e}))
		if err != nil {
			t.Fatal(err)
		}
		for i := 4; i < single.T; i++ {
			for j, v := range single.Row(0, i) {
				if d := math.Abs(float64(v - batched.Row(s, i)[j])); d > 1e-5 {
					t.Fatalf("sequence %d row %d logit %d: batched %g, alone %g", s, i, j, batched.Row(s, i)[j], v)
				}
			}
		}
		for i := single.T; i < batched.T; i++ {
			for _, v := range batched.Row(s, i) {
				if v != 0 {
					t.Fatalf("sequence %d: padding row %d has logits", s, i)
				}
			}
		}
	}
}

func TestEmptyInstruction(t *testing.T) {
	cfg := tinyConfig()
	w := randomWeights(cfg, 9)
	a, err := adapterfile.Random(cfg.AdapterConfig(4, 5, ShareUpDown), 10, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	model := newTestModel(t, cfg, w, a)
	examples := randomExamples(cfg, 11, [2]int{0, 5}, [2]int{4, 3})
	b := mustBatch(t, 4, examples)
	got, err := model.Logits(b)
	if err != nil {
		t.Fatal(err)
	}
	if i := firstNonFinite(got.Data); i >= 0 {
		t.Fatalf("logit %d is %g", i, got.Data[i])
	}
	// With no instruction rows, P = 0 (a sum over no rows).
	tokens := append(make([]int32, 4), examples[0].Response...)
	compareRows(t, "empty instruction", got, 0, refLogits(cfg, w, a, tokens, 0), 4, 1e-4)

	loss, grad, err := model.LossAndGradients(b)
	if err != nil {
		t.Fatal(err)
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		t.Fatalf("loss is %g", loss)
	}
	for _, p := range params(grad) {
		if i := firstNonFinite(p.data); i >= 0 {
			t.Fatalf("gradient of %s: value %d is %g", p.name, i, p.data[i])
		}
	}
}

func TestGradientMatchesFiniteDifferences(t *testing.T) {
	cfg := tinyConfig()
	w := randomWeights(cfg, 12)
	for _, share := range []string{ShareNone, ShareUpDown} {
		a, err := adapterfile.Random(cfg.AdapterConfig(4, 5, share), 13, 0.5)
		if err != nil {
			t.Fatal(err)
		}
		model := newTestModel(t, cfg, w, a)
		examples := randomExamples(cfg, 14, [2]int{5, 4}, [2]int{3, 6})
		loss, grad, err := model.LossAndGradients(mustBatch(t, 4, examples))
		if err != nil {
			t.Fatal(err)
		}
		if want := refLoss(cfg, w, a, examples); math.Abs(loss-want) > 1e-5*math.Max(1, want) {
			t.Errorf("share=%s: loss %g, reference %g", share, loss, want)
		}
		gradParams := params(grad)
		for pi, p := range params(a) {
			values := p.data
			// Three coordinates per tensor: first, middle, last.
			for _, i := range []int{0, len(values) / 2, len(values) - 1} {
				// A small step (the reference runs in float64), measured
				// after rounding to float32; small enough not to straddle
				// the kink of |Q(x)| in the rational's denominator where
				// an element's Q is near 0.
				const h = 1e-5
				orig := values[i]
				values[i] = orig + h
				up, hi := refLoss(cfg, w, a, examples), float64(values[i])
				values[i] = orig - h
				down, lo := refLoss(cfg, w, a, examples), float64(values[i])
				values[i] = orig
				fd := (up - down) / (hi - lo)
				got := float64(gradParams[pi].data[i])
				if math.Abs(got-fd) > 1e-3*math.Max(1e-2, math.Abs(fd)) {
					t.Errorf("share=%s: d loss / d %s[%d] = %g, finite difference %g", share, p.name, i, got, fd)
				}
			}
		}
	}
}
