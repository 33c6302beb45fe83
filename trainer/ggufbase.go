package trainer

import (
	"fmt"

	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/gguf"
)

// ConfigFromGGUF reads the configuration of a llama-architecture model from
// its GGUF metadata and tensor descriptions.
func ConfigFromGGUF(f *gguf.File) (Config, error) {
	var c Config
	arch, err := f.String("general.architecture")
	if err != nil {
		return c, err
	}
	if arch != "llama" {
		return c, fmt.Errorf("%s: architecture %q is not supported (only llama)", f.Path, arch)
	}
	ints := []struct {
		key string
		dst *int
	}{
		{"llama.block_count", &c.Layers},
		{"llama.embedding_length", &c.Dim},
		{"llama.feed_forward_length", &c.FFN},
		{"llama.attention.head_count", &c.Heads},
		{"llama.attention.head_count_kv", &c.KVHeads},
		{"llama.context_length", &c.ContextLength},
	}
	for _, k := range ints {
		v, err := f.Uint32(k.key)
		if err != nil {
			return c, err
		}
		*k.dst = int(v)
	}
	if c.RMSEps, err = f.Float32("llama.attention.layer_norm_rms_epsilon"); err != nil {
		return c, err
	}
	c.RopeBase = DefaultRopeBase
	if _, ok := f.Value("llama.rope.freq_base"); ok {
		if c.RopeBase, err = f.Float32("llama.rope.freq_base"); err != nil {
			return c, err
		}
	}
	if c.Heads == 0 || c.Dim%c.Heads != 0 {
		return c, fmt.Errorf("%s: embedding length %d is not a multiple of the head count %d", f.Path, c.Dim, c.Heads)
	}
	c.HeadDim = c.Dim / c.Heads
	for _, key := range []string{"llama.attention.key_length", "llama.attention.value_length", "llama.rope.dimension_count"} {
		if _, ok := f.Value(key); !ok {
			continue
		}
		v, err := f.Uint32(key)
		if err != nil {
			return c, err
		}
		if int(v) != c.HeadDim {
			return c, fmt.Errorf("%s: %s is %d; only %d (embedding length / head count) is supported", f.Path, key, v, c.HeadDim)
		}
	}
	if _, ok := f.Value("llama.rope.scaling.type"); ok {
		s, err := f.String("llama.rope.scaling.type")
		if err != nil {
			return c, err
		}
		if s != "none" {
			return c, fmt.Errorf("%s: RoPE scaling %q is not supported", f.Path, s)
		}
	}
	embd, ok := f.Tensor("token_embd.weight")
	if !ok || len(embd.Shape) != 2 {
		return c, fmt.Errorf("%s: no two-dimensional tensor token_embd.weight", f.Path)
	}
	c.Vocab = int(embd.Shape[1])
	_, hasOutput := f.Tensor("output.weight")
	c.TiedOutput = !hasOutput
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%s: %w", f.Path, err)
	}
	return c, nil
}

// ggufSource is a WeightSource reading F32 and F16 tensors of a GGUF file.
type ggufSource struct{ f *gguf.File }

// NewGGUFSource returns a WeightSource over the tensors of a GGUF file. It
// reads F32 and F16 tensors; quantised tensors are refused.
func NewGGUFSource(f *gguf.File) WeightSource { return ggufSource{f} }

// Tensor implements WeightSource.
func (s ggufSource) Tensor(name string) ([]float32, []int, error) {
	info, ok := s.f.Tensor(name)
	if !ok {
		return nil, nil, fmt.Errorf("%s: %w", s.f.Path, ErrTensorNotFound)
	}
	data, err := s.f.ReadF32(name)
	if err != nil {
		return nil, nil, err
	}
	shape := make([]int, len(info.Shape))
	for i, d := range info.Shape {
		shape[i] = int(d)
	}
	return data, shape, nil
}

// LoadBaseGGUF reads the configuration and the frozen weights of a
// llama-architecture model stored in F32 or F16 in the GGUF file at path.
func LoadBaseGGUF(path string) (*Base, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	cfg, err := ConfigFromGGUF(f)
	if err != nil {
		return nil, err
	}
	return LoadBase(cfg, NewGGUFSource(f))
}

// bridgeSource is a WeightSource reading the tensors of a model loaded by
// the llama.cpp runtime, dequantised to float32 by ggml.
type bridgeSource struct {
	f *gguf.File
	m *bridge.Model
}

// Tensor implements WeightSource.
func (s bridgeSource) Tensor(name string) ([]float32, []int, error) {
	if _, ok := s.f.Tensor(name); !ok {
		return nil, nil, fmt.Errorf("%s: %w", s.f.Path, ErrTensorNotFound)
	}
	return s.m.TensorF32(name)
}

// LoadBaseBridge reads the configuration of a llama-architecture model from
// its GGUF metadata (ConfigFromGGUF) and its frozen weights through the
// runtime, which dequantises any tensor type ggml can convert (F32, F16,
// Q8_0, ...) to float32. m must have been loaded with
// bridge.ModelParams{NoRepack: true}: repacked quantised weights cannot be
// read back.
func LoadBaseBridge(m *bridge.Model) (*Base, error) {
	f, err := gguf.Open(m.Info().Path)
	if err != nil {
		return nil, err
	}
	cfg, err := ConfigFromGGUF(f)
	if err != nil {
		return nil, err
	}
	return LoadBase(cfg, bridgeSource{f, m})
}
