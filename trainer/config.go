// Package trainer trains IAPT (Instruction-Aware Prompt Tuning) adapters: it
// computes the LLaMA forward pass with IAPT generators in GoMLX, the
// cross-entropy loss on response tokens and its gradient with respect to the
// generator weights (adapters are adapterfile.Adapter values), and runs the
// training loop of `iapt train` (Train): AdamW, learning-rate schedule,
// evaluation through the llama.cpp runtime, checkpoints and resume.
//
// The math is fixed by the shared IAPT specification (IAPT-SPEC.md): the
// forward pass reproduces llama.cpp's `llama` architecture graph, so that the
// logits computed here agree with the patched llama.cpp runtime on the same
// base model, adapter and tokens.
//
// Weight layout convention: every weight matrix, frozen or trainable, is kept
// exactly as ggml stores it. A ggml tensor with shape ne = [in, out] is held
// as a row-major [out][in] array (out rows of in floats), and a projection
// computes y = x · Wᵀ, i.e. y[j] = Σ_k x[k]·W[j][k], which is what
// ggml_mul_mat(W, x) computes.
package trainer

import (
	"errors"
	"fmt"
)

// DefaultRopeBase is the RoPE frequency base used when a model does not set one.
const DefaultRopeBase = 10000

// Config describes a llama-architecture base model.
type Config struct {
	// Layers is the number of transformer blocks (llama.block_count).
	Layers int
	// Dim is the width of the residual stream (llama.embedding_length).
	Dim int
	// Heads is the number of query heads (llama.attention.head_count).
	Heads int
	// KVHeads is the number of key/value heads (llama.attention.head_count_kv);
	// it must divide Heads (grouped-query attention).
	KVHeads int
	// HeadDim is the size of one attention head (usually Dim/Heads).
	HeadDim int
	// FFN is the hidden width of the SwiGLU feed-forward block (llama.feed_forward_length).
	FFN int
	// Vocab is the vocabulary size.
	Vocab int
	// RMSEps is the RMSNorm epsilon (llama.attention.layer_norm_rms_epsilon).
	RMSEps float32
	// RopeBase is the RoPE frequency base (llama.rope.freq_base); 0 means DefaultRopeBase.
	RopeBase float32
	// ContextLength is the training context length (llama.context_length); sequences
	// longer than this are refused.
	ContextLength int
	// TiedOutput is true when the model has no output.weight and the output head
	// reuses token_embd.weight.
	TiedOutput bool
}

// ropeBase returns the RoPE frequency base, applying the default.
func (c Config) ropeBase() float32 {
	if c.RopeBase == 0 {
		return DefaultRopeBase
	}
	return c.RopeBase
}

// Validate reports whether the configuration describes a model this package can run.
func (c Config) Validate() error {
	positive := []struct {
		name  string
		value int
	}{
		{"Layers", c.Layers}, {"Dim", c.Dim}, {"Heads", c.Heads}, {"KVHeads", c.KVHeads},
		{"HeadDim", c.HeadDim}, {"FFN", c.FFN}, {"Vocab", c.Vocab}, {"ContextLength", c.ContextLength},
	}
	for _, p := range positive {
		if p.value <= 0 {
			return fmt.Errorf("trainer: model config: %s must be positive, got %d", p.name, p.value)
		}
	}
	if c.Heads%c.KVHeads != 0 {
		return fmt.Errorf("trainer: model config: Heads (%d) must be a multiple of KVHeads (%d)", c.Heads, c.KVHeads)
	}
	if c.HeadDim%2 != 0 {
		return fmt.Errorf("trainer: model config: HeadDim must be even for RoPE, got %d", c.HeadDim)
	}
	if !(c.RMSEps > 0) {
		return fmt.Errorf("trainer: model config: RMSEps must be positive, got %g", c.RMSEps)
	}
	if c.RopeBase < 0 || (c.RopeBase > 0 && c.RopeBase <= 1) {
		return fmt.Errorf("trainer: model config: RopeBase must be > 1 (or 0 for the default), got %g", c.RopeBase)
	}
	return nil
}

// ErrTensorNotFound is returned (possibly wrapped) by a WeightSource that has
// no tensor of the requested name.
var ErrTensorNotFound = errors.New("tensor not found")

// WeightSource provides the frozen weights of a base model by GGUF tensor name.
//
// Tensor returns the values as float32 in ggml memory order and the shape in
// ggml order (ne0 first), e.g. blk.0.attn_q.weight has shape [Dim, Heads*HeadDim]
// and its data holds Heads*HeadDim rows of Dim floats. A missing tensor is
// reported with an error wrapping ErrTensorNotFound.
type WeightSource interface {
	Tensor(name string) (data []float32, shape []int, err error)
}
