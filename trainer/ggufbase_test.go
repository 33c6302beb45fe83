package trainer

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/iapt-go/iapt/gguf"
)

// rawTensor is a tensor for writeRaw.
type rawTensor struct {
	name  string
	shape []uint64
	data  []float32
}

// writeRaw writes a GGUF file with the given metadata and F32 tensors.
func writeRaw(t *testing.T, path string, kv []gguf.KV, ts []rawTensor) {
	t.Helper()
	w := gguf.NewWriter()
	for _, e := range kv {
		if err := w.Set(e.Key, e.Value); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range ts {
		if err := w.AddTensorF32(e.name, e.shape, e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
}

func TestAdapterMustFitBase(t *testing.T) {
	cfg := tinyConfig()
	base, err := LoadBase(cfg, randomWeights(cfg, 23))
	if err != nil {
		t.Fatal(err)
	}
	other := cfg
	other.Dim = 16
	other.HeadDim = 4
	for _, c := range []struct {
		cfg  Config
		arch string
		want string
	}{
		{other, "llama", "width 16"},
		{func() Config { c := cfg; c.Layers = 3; return c }(), "llama", "3 layers"},
		{cfg, "qwen2", `architecture "qwen2"`},
	} {
		ac := c.cfg.AdapterConfig(4, 6, ShareNone)
		ac.Arch = c.arch
		a, err := NewAdapter(ac, 24)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := NewModel(base, a, Options{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want one containing %q", err, c.want)
		}
	}
}

// tinyGGUFParts returns the metadata and tensors of a GGUF file holding
// the tiny llama model cfg with weights w.
func tinyGGUFParts(cfg Config, w memSource) ([]gguf.KV, []rawTensor) {
	var ts []rawTensor
	for _, s := range baseSpecs(cfg) {
		shape := make([]uint64, len(s.shape))
		for i, d := range s.shape {
			shape[i] = uint64(d)
		}
		ts = append(ts, rawTensor{s.name, shape, w[s.name].data})
	}
	kv := []gguf.KV{
		{Key: "general.architecture", Value: "llama"},
		{Key: "llama.block_count", Value: uint32(cfg.Layers)},
		{Key: "llama.embedding_length", Value: uint32(cfg.Dim)},
		{Key: "llama.feed_forward_length", Value: uint32(cfg.FFN)},
		{Key: "llama.attention.head_count", Value: uint32(cfg.Heads)},
		{Key: "llama.attention.head_count_kv", Value: uint32(cfg.KVHeads)},
		{Key: "llama.attention.layer_norm_rms_epsilon", Value: cfg.RMSEps},
		{Key: "llama.rope.dimension_count", Value: uint32(cfg.HeadDim)},
		{Key: "llama.context_length", Value: uint32(cfg.ContextLength)},
	}
	return kv, ts
}

func TestBaseFromGGUF(t *testing.T) {
	cfg := tinyConfig()
	w := randomWeights(cfg, 25)
	kv, ts := tinyGGUFParts(cfg, w)
	path := filepath.Join(t.TempDir(), "base.gguf")
	writeRaw(t, path, kv, ts)
	base, err := LoadBaseGGUF(path)
	if err != nil {
		t.Fatal(err)
	}
	if base.Config() != cfg {
		t.Fatalf("config %+v, want %+v", base.Config(), cfg)
	}
	model, err := NewModel(base, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	examples := randomExamples(cfg, 26, [2]int{4, 4})
	got, err := model.Logits(mustBatch(t, 0, examples))
	if err != nil {
		t.Fatal(err)
	}
	tokens := append(append([]int32{}, examples[0].Instruction...), examples[0].Response...)
	compareRows(t, "gguf base", got, 0, refLogits(cfg, w, nil, tokens, 0), 0, 1e-4)

	// Without output.weight the head is tied to the embedding.
	writeRaw(t, path, kv, ts[:len(ts)-1])
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := ConfigFromGGUF(f); err != nil || !c.TiedOutput {
		t.Fatalf("tied config %+v, %v", c, err)
	}
}
