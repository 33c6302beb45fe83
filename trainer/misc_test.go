package trainer

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"weak"

	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/iapt-go/iapt/adapterfile"
)

func randomTensor(rng *rand.Rand, dims ...int) *tensors.Tensor {
	v := make([]float32, product(dims))
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return tensors.FromFlatDataAndDimensions(v, dims...)
}

// TestDotGradient compares the gradient of dot (gomlxfix.go) with GoMLX's
// own DotGeneral gradient on several axis layouts.
func TestDotGradient(t *testing.T) {
	installGradientFixes()
	backend, err := backendFor("")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		lhs, rhs       []int
		lc, lb, rc, rb []int
		name           string
	}{
		{[]int{3, 5}, []int{4, 5}, []int{1}, nil, []int{1}, nil, "linear"},
		{[]int{2, 3, 5}, []int{5, 4}, []int{-1}, nil, []int{0}, nil, "matmul"},
		{[]int{2, 3, 2, 2, 4}, []int{2, 5, 2, 4}, []int{4}, []int{0, 2}, []int{3}, []int{0, 2}, "attention scores"},
		{[]int{2, 2, 3, 2, 5}, []int{2, 5, 2, 4}, []int{4}, []int{0, 1}, []int{1}, []int{0, 2}, "attention values"},
		{[]int{3, 4, 5}, []int{5, 2, 4}, []int{2, 1}, nil, []int{0, 2}, nil, "two contracted axes, crossed"},
		{[]int{4, 2, 3}, []int{3, 4, 6}, []int{0}, []int{2}, []int{1}, []int{0}, "batch after contraction"},
	}
	for _, c := range cases {
		grads := func(useDot bool) [][]float32 {
			e, err := NewExec(backend, func(a, b, r *Node) []*Node {
				var y *Node
				if useDot {
					y = dot(a, c.lc, c.lb, b, c.rc, c.rb)
					if _, ok := dotTable.Load(weak.Make(y)); !ok {
						t.Errorf("%s: dot did not record its node", c.name)
					}
				} else {
					y = DotGeneral(a, slices.Clone(c.lc), slices.Clone(c.lb), b, slices.Clone(c.rc), slices.Clone(c.rb))
				}
				loss := ReduceAllSum(Mul(y, Reshape(r, y.Shape().Dimensions...)))
				return Gradient(loss, a, b)
			})
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(3, 4))
			a, b := randomTensor(rng, c.lhs...), randomTensor(rng, c.rhs...)
			out, err := e.Exec(a, b, randomTensor(rng, outSize(c.lhs, c.rhs, c.lc, c.lb, c.rc)))
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			return [][]float32{tensors.MustCopyFlatData[float32](out[0]), tensors.MustCopyFlatData[float32](out[1])}
		}
		got, want := grads(true), grads(false)
		for i := range got {
			for j := range got[i] {
				if math.Abs(float64(got[i][j]-want[i][j])) > 1e-4 {
					t.Fatalf("%s: gradient %d [%d] = %g, GoMLX's %g", c.name, i, j, got[i][j], want[i][j])
				}
			}
		}
	}
}

// outSize returns the number of elements of a DotGeneral output.
func outSize(lhs, rhs []int, lc, lb, rc []int) int {
	n := 1
	for _, d := range lhs {
		n *= d
	}
	for _, a := range lc {
		n /= lhs[(a+len(lhs))%len(lhs)]
	}
	for _, d := range rhs {
		n *= d
	}
	for _, a := range rc {
		n /= rhs[(a+len(rhs))%len(rhs)]
	}
	for _, a := range lb {
		n /= lhs[a]
	}
	return n
}

func TestSimpleGoFixConfig(t *testing.T) {
	for in, want := range map[string]string{
		"go":                                 "go:ops_sequential",
		"go:parallelism=4":                   "go:parallelism=4,ops_sequential",
		"go:ops_parallel":                    "go:ops_parallel",
		"go:dotgeneral_large,ops_sequential": "go:dotgeneral_large,ops_sequential",
		"xla:cpu":                            "xla:cpu",
	} {
		if got := withSimpleGoFix(in); got != want {
			t.Errorf("withSimpleGoFix(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUnavailableBackend(t *testing.T) {
	cfg := tinyConfig()
	base, err := LoadBase(cfg, randomWeights(cfg, 31))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewModel(base, nil, Options{Backend: "xla:cpu"}); err == nil || !strings.Contains(err.Error(), `"xla" is not available`) {
		t.Errorf("error %v, want backend not available", err)
	}
}

func TestLoadBaseErrors(t *testing.T) {
	cfg := tinyConfig()
	bad := cfg
	bad.KVHeads = 3
	if _, err := LoadBase(bad, randomWeights(cfg, 32)); err == nil || !strings.Contains(err.Error(), "multiple of KVHeads") {
		t.Errorf("bad config: error %v", err)
	}
	w := randomWeights(cfg, 32)
	delete(w, "blk.1.ffn_up.weight")
	if _, err := LoadBase(cfg, w); !errors.Is(err, ErrTensorNotFound) || !strings.Contains(err.Error(), "blk.1.ffn_up.weight") {
		t.Errorf("missing tensor: error %v", err)
	}
	w = randomWeights(cfg, 32)
	w["blk.0.attn_k.weight"] = memTensor{w["blk.0.attn_q.weight"].data, []int{32, 32}}
	if _, err := LoadBase(cfg, w); err == nil || !strings.Contains(err.Error(), "shape [32 32], want [32 16]") {
		t.Errorf("bad shape: error %v", err)
	}
	w = randomWeights(cfg, 32)
	w["output_norm.weight"].data[3] = float32(math.NaN())
	if _, err := LoadBase(cfg, w); err == nil || !strings.Contains(err.Error(), "value 3 is NaN") {
		t.Errorf("NaN: error %v", err)
	}
}

func TestBatchErrors(t *testing.T) {
	cfg := tinyConfig()
	a, err := NewAdapter(cfg.AdapterConfig(4, 5, ShareNone), 33)
	if err != nil {
		t.Fatal(err)
	}
	model := newTestModel(t, cfg, randomWeights(cfg, 33), a)
	good := func() *Batch { return mustBatch(t, 4, randomExamples(cfg, 34, [2]int{3, 3}, [2]int{2, 5})) }
	long := randomExamples(cfg, 35, [2]int{40, 30})
	cases := []struct {
		name   string
		mutate func(b *Batch)
		want   string
	}{
		{"token", func(b *Batch) { b.Tokens[5] = int32(cfg.Vocab) }, "outside the vocabulary"},
		{"negative token", func(b *Batch) { b.Tokens[0] = -1 }, "outside the vocabulary"},
		{"length", func(b *Batch) { b.Lengths[1] = 4 }, "length 4"},
		{"instruction gap", func(b *Batch) { b.Instruction[5] = false }, "instruction row 6"},
		{"instruction on soft row", func(b *Batch) { b.Instruction[2] = true }, "instruction row 2"},
		{"loss on instruction", func(b *Batch) { b.Loss[4] = true }, "loss row 4"},
		{"loss on padding", func(b *Batch) { b.Lengths[0] = 9; b.Loss[9] = true }, "loss row 9"},
		{"no loss", func(b *Batch) { clear(b.Loss) }, "no loss rows"},
		{"sizes", func(b *Batch) { b.Tokens = b.Tokens[1:] }, "tokens"},
		{"context", func(b *Batch) { *b = *mustBatch(t, 4, long) }, "context length"},
	}
	for _, c := range cases {
		b := good()
		c.mutate(b)
		if _, err := model.Loss(b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	if _, err := NewBatch(4, nil, 0); err == nil {
		t.Error("NewBatch accepted no examples")
	}
}

// TestModelAdapterState checks reading and replacing the adapter, that Loss
// and LossAndGradients agree, and that the base weights are left untouched.
func TestModelAdapterState(t *testing.T) {
	cfg := tinyConfig()
	w := randomWeights(cfg, 36)
	a, err := adapterfile.Random(cfg.AdapterConfig(4, 5, ShareUpDown), 37, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	model := newTestModel(t, cfg, w, a)
	got, err := model.Adapter()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Layers[1].PoolW, a.Layers[1].PoolW) || !slices.Equal(got.Shared.UpW, a.Shared.UpW) {
		t.Fatal("Adapter() does not return the values the model was built with")
	}
	b := mustBatch(t, 4, randomExamples(cfg, 38, [2]int{4, 6}))
	loss, grad, err := model.LossAndGradients(b)
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := model.Loss(b)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(loss-fwd) > 1e-6 {
		t.Errorf("LossAndGradients loss %g, Loss %g", loss, fwd)
	}
	for i, v := range model.base.tensors {
		if !slices.Equal(tensors.MustCopyFlatData[float32](v), w[baseSpecs(cfg)[i].name].data) {
			t.Errorf("base weight %s changed", baseSpecs(cfg)[i].name)
		}
	}

	// One gradient step through SetAdapter lowers the loss.
	next, err := model.Adapter()
	if err != nil {
		t.Fatal(err)
	}
	gp := params(grad)
	for i, p := range params(next) {
		for j := range p.data {
			p.data[j] -= 0.05 * gp[i].data[j]
		}
	}
	if err := model.SetAdapter(next); err != nil {
		t.Fatal(err)
	}
	after, err := model.Loss(b)
	if err != nil {
		t.Fatal(err)
	}
	if !(after < loss) {
		t.Errorf("loss %g after a gradient step, %g before", after, loss)
	}

	other, err := NewAdapter(cfg.AdapterConfig(8, 5, ShareUpDown), 39)
	if err != nil {
		t.Fatal(err)
	}
	if err := model.SetAdapter(other); err == nil {
		t.Error("SetAdapter accepted an adapter with another configuration")
	}
	bare := newTestModel(t, cfg, w, nil)
	if _, _, err := bare.LossAndGradients(mustBatch(t, 0, randomExamples(cfg, 40, [2]int{2, 2}))); err == nil {
		t.Error("LossAndGradients without adapter succeeded")
	}
}
