package trainer

import (
	"fmt"
	"math"
	"slices"

	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// Per-layer frozen tensors, in the order they are kept in Base.tensors.
const (
	wAttnNorm = iota
	wQ
	wK
	wV
	wO
	wFFNNorm
	wGate
	wUp
	wDown
	weightsPerLayer
)

// weightSpec names one frozen tensor and its expected ggml shape (ne0 first).
type weightSpec struct {
	name  string
	shape []int
}

// baseSpecs lists the frozen tensors of a llama model in the order used by
// Base.tensors: token embedding, the layers, the output norm and, unless the
// output is tied to the embedding, the output head.
func baseSpecs(c Config) []weightSpec {
	q, kv := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	specs := []weightSpec{{"token_embd.weight", []int{c.Dim, c.Vocab}}}
	for l := range c.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		specs = append(specs,
			weightSpec{p + "attn_norm.weight", []int{c.Dim}},
			weightSpec{p + "attn_q.weight", []int{c.Dim, q}},
			weightSpec{p + "attn_k.weight", []int{c.Dim, kv}},
			weightSpec{p + "attn_v.weight", []int{c.Dim, kv}},
			weightSpec{p + "attn_output.weight", []int{q, c.Dim}},
			weightSpec{p + "ffn_norm.weight", []int{c.Dim}},
			weightSpec{p + "ffn_gate.weight", []int{c.Dim, c.FFN}},
			weightSpec{p + "ffn_up.weight", []int{c.Dim, c.FFN}},
			weightSpec{p + "ffn_down.weight", []int{c.FFN, c.Dim}},
		)
	}
	specs = append(specs, weightSpec{"output_norm.weight", []int{c.Dim}})
	if !c.TiedOutput {
		specs = append(specs, weightSpec{"output.weight", []int{c.Dim, c.Vocab}})
	}
	return specs
}

// Base holds the frozen weights of a llama base model. They enter the
// computation graphs as inputs, never as variables, so they receive no
// gradient and are never modified. A Base may be shared by several models
// that use the same backend.
type Base struct {
	cfg     Config
	tensors []*tensors.Tensor // float32, in baseSpecs order, dimensions in reversed ggml order
}

// LoadBase reads and checks every frozen tensor of the model described by cfg
// from src: each must exist, have the expected shape and hold finite values.
func LoadBase(cfg Config, src WeightSource) (*Base, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	specs := baseSpecs(cfg)
	b := &Base{cfg: cfg, tensors: make([]*tensors.Tensor, len(specs))}
	for i, s := range specs {
		data, shape, err := src.Tensor(s.name)
		if err != nil {
			return nil, fmt.Errorf("trainer: base weight %s: %w", s.name, err)
		}
		if !slices.Equal(shape, s.shape) {
			return nil, fmt.Errorf("trainer: base weight %s: shape %v, want %v (ggml order)", s.name, shape, s.shape)
		}
		if len(data) != product(s.shape) {
			return nil, fmt.Errorf("trainer: base weight %s: %d values for shape %v", s.name, len(data), s.shape)
		}
		if j := firstNonFinite(data); j >= 0 {
			return nil, fmt.Errorf("trainer: base weight %s: value %d is %g", s.name, j, data[j])
		}
		b.tensors[i] = tensors.FromFlatDataAndDimensions(slices.Clone(data), reversed(s.shape)...)
	}
	return b, nil
}

// Config returns the model configuration.
func (b *Base) Config() Config { return b.cfg }

func product(dims []int) int {
	p := 1
	for _, d := range dims {
		p *= d
	}
	return p
}

// reversed returns the dimensions in the opposite order: ggml order (ne0
// first) to row-major order (slowest axis first), or back.
func reversed(dims []int) []int {
	r := slices.Clone(dims)
	slices.Reverse(r)
	return r
}

// firstNonFinite returns the index of the first NaN or infinite value, or -1.
func firstNonFinite(data []float32) int {
	for i, v := range data {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return i
		}
	}
	return -1
}

// headTwins returns the number of other vocabulary rows of the output head
// that are the same as token tok's (within an L2 distance of 1e-3 of its
// norm). Tokens never seen in training can end up with one shared row (in
// stories15M, 16,937 tokens share the EOS token's); the model then cannot
// give tok a probability above 1/(twins+1), whatever its hidden state.
func (b *Base) headTwins(tok int32) (int, error) {
	head := b.tensors[0] // tied output: token_embd.weight
	if !b.cfg.TiedOutput {
		head = b.tensors[len(b.tensors)-1]
	}
	w, err := tensors.CopyFlatData[float32](head)
	if err != nil {
		return 0, err
	}
	d := b.cfg.Dim
	if tok < 0 || int(tok) >= len(w)/d {
		return 0, fmt.Errorf("trainer: token %d is outside the vocabulary", tok)
	}
	ref := w[int(tok)*d : int(tok+1)*d]
	norm := 0.0
	for _, v := range ref {
		norm += float64(v) * float64(v)
	}
	limit := 1e-6 * norm // (1e-3 · |ref|)²
	twins := 0
	for r := 0; r < len(w)/d; r++ {
		if r == int(tok) {
			continue
		}
		dist := 0.0
		for k, v := range w[r*d : (r+1)*d] {
			diff := float64(v - ref[k])
			dist += diff * diff
		}
		if dist <= limit {
			twins++
		}
	}
	return twins, nil
}
