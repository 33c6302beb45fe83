package trainer

import (
	"math"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/iapt-go/iapt/gguf"
)

func TestAdapterRoundTrip(t *testing.T) {
	cfg := tinyConfig()
	for _, share := range []string{ShareNone, ShareUpDown} {
		a, err := NewAdapter(cfg, AdapterConfig{SoftTokens: 4, Bottleneck: 6, Share: share}, InitRandom, 21)
		if err != nil {
			t.Fatal(err)
		}
		a.Name = "test adapter"
		a.Train = TrainInfo{BaseModel: "tiny", Dataset: "random", Steps: 12, FinalLoss: 3.5}
		path := filepath.Join(t.TempDir(), "a.gguf")
		if err := SaveAdapter(path, a); err != nil {
			t.Fatal(err)
		}
		b, err := LoadAdapter(path)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("share=%s: loaded adapter differs from the saved one", share)
		}

		// The file holds what the spec lists, in ggml shapes.
		f, err := gguf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		for key, want := range map[string]any{
			"general.type": "adapter", "general.architecture": "llama", "adapter.type": "iapt",
			"adapter.iapt.soft_tokens": uint32(4), "adapter.iapt.bottleneck": uint32(6),
			"adapter.iapt.embedding_length": uint32(cfg.Dim), "adapter.iapt.layer_count": uint32(cfg.Layers),
			"adapter.iapt.share": share, "adapter.iapt.rational.version": "B",
			"adapter.iapt.rational.degrees": []uint32{5, 4}, "general.name": "test adapter",
			"adapter.iapt.train.steps": uint32(12), "adapter.iapt.train.final_loss": float32(3.5),
		} {
			if got, _ := f.Value(key); !reflect.DeepEqual(got, want) {
				t.Errorf("share=%s: %s = %#v, want %#v", share, key, got, want)
			}
		}
		shapes := map[string][]uint64{
			"blk.1.iapt_pool.weight": {6, 4}, "blk.1.iapt_rat_num": {6}, "blk.1.iapt_rat_den": {4},
		}
		prefix := "blk.0."
		if share == ShareUpDown {
			prefix = ""
		}
		shapes[prefix+"iapt_down.weight"] = []uint64{uint64(cfg.Dim), 6}
		shapes[prefix+"iapt_down.bias"] = []uint64{6}
		shapes[prefix+"iapt_up.weight"] = []uint64{6, uint64(cfg.Dim)}
		shapes[prefix+"iapt_up.bias"] = []uint64{uint64(cfg.Dim)}
		for name, want := range shapes {
			info, ok := f.Tensor(name)
			if !ok || !reflect.DeepEqual(info.Shape, want) || info.Type != gguf.TypeF32 {
				t.Errorf("share=%s: tensor %s: %+v (present %v), want F32 %v", share, name, info, ok, want)
			}
		}
		wantCount := 3*cfg.Layers + 4*cfg.Layers
		if share == ShareUpDown {
			wantCount = 3*cfg.Layers + 4
		}
		if len(f.Tensors) != wantCount {
			t.Errorf("share=%s: %d tensors, want %d", share, len(f.Tensors), wantCount)
		}
	}
}

// rawTensor is a tensor for writeRaw.
type rawTensor struct {
	name  string
	shape []uint64
	data  []float32
}

// adapterFileParts returns the metadata and tensors SaveAdapter would write.
func adapterFileParts(a *Adapter) ([]gguf.KV, []rawTensor) {
	kv := []gguf.KV{
		{Key: "general.type", Value: "adapter"}, {Key: "general.architecture", Value: a.Arch},
		{Key: "adapter.type", Value: "iapt"},
		{Key: "adapter.iapt.soft_tokens", Value: uint32(a.SoftTokens)},
		{Key: "adapter.iapt.bottleneck", Value: uint32(a.Bottleneck)},
		{Key: "adapter.iapt.embedding_length", Value: uint32(a.Dim)},
		{Key: "adapter.iapt.layer_count", Value: uint32(a.Layers)},
		{Key: "adapter.iapt.share", Value: a.Share},
		{Key: "adapter.iapt.rational.version", Value: "B"},
		{Key: "adapter.iapt.rational.degrees", Value: []uint32{5, 4}},
	}
	var ts []rawTensor
	for _, p := range a.params() {
		shape := make([]uint64, len(p.shape))
		for i, d := range p.shape {
			shape[i] = uint64(d)
		}
		ts = append(ts, rawTensor{p.name, shape, append([]float32{}, *p.data...)})
	}
	return kv, ts
}

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

func TestLoadAdapterRefusesBadFiles(t *testing.T) {
	cfg := tinyConfig()
	a, err := NewAdapter(cfg, AdapterConfig{SoftTokens: 4, Bottleneck: 6, Share: ShareNone}, InitDefault, 22)
	if err != nil {
		t.Fatal(err)
	}
	setKV := func(key string, value any) func([]gguf.KV, []rawTensor) ([]gguf.KV, []rawTensor) {
		return func(kv []gguf.KV, ts []rawTensor) ([]gguf.KV, []rawTensor) {
			for i := range kv {
				if kv[i].Key == key {
					kv[i].Value = value
				}
			}
			return kv, ts
		}
	}
	cases := []struct {
		name   string
		mutate func([]gguf.KV, []rawTensor) ([]gguf.KV, []rawTensor)
		want   string
	}{
		{"lora", setKV("adapter.type", "lora"), `adapter.type is "lora"`},
		{"general type", setKV("general.type", "model"), `general.type is "model"`},
		{"version", setKV("adapter.iapt.rational.version", "A"), "rational.version"},
		{"degrees", setKV("adapter.iapt.rational.degrees", []uint32{3, 2}), "rational.degrees"},
		{"degrees type", setKV("adapter.iapt.rational.degrees", []int32{5, 4}), "rational.degrees"},
		{"share", setKV("adapter.iapt.share", "all"), "Share"},
		{"u32 type", setKV("adapter.iapt.bottleneck", uint64(6)), "want u32"},
		{"missing key", func(kv []gguf.KV, ts []rawTensor) ([]gguf.KV, []rawTensor) {
			return kv[:len(kv)-1], ts
		}, "rational.degrees is missing"},
		{"missing tensor", func(kv []gguf.KV, ts []rawTensor) ([]gguf.KV, []rawTensor) {
			return kv, ts[1:]
		}, "blk.0.iapt_down.weight is missing"},
		{"unknown tensor", func(kv []gguf.KV, ts []rawTensor) ([]gguf.KV, []rawTensor) {
			return kv, append(ts, rawTensor{"iapt_down.weight", []uint64{1}, []float32{0}})
		}, `unknown tensor "iapt_down.weight"`},
		{"shape", func(kv []gguf.KV, ts []rawTensor) ([]gguf.KV, []rawTensor) {
			ts[0].shape = []uint64{6, uint64(cfg.Dim)}
			return kv, ts
		}, "has shape [6 32], want [32 6]"},
		{"nan", func(kv []gguf.KV, ts []rawTensor) ([]gguf.KV, []rawTensor) {
			ts[2].data[5] = float32(math.NaN())
			return kv, ts
		}, "value 5 is NaN"},
		{"inf", func(kv []gguf.KV, ts []rawTensor) ([]gguf.KV, []rawTensor) {
			ts[3].data[0] = float32(math.Inf(1))
			return kv, ts
		}, "value 0 is +Inf"},
	}
	for _, c := range cases {
		path := filepath.Join(t.TempDir(), "bad.gguf")
		kv, ts := adapterFileParts(a)
		kv, ts = c.mutate(kv, ts)
		writeRaw(t, path, kv, ts)
		_, err := LoadAdapter(path)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %v, want one naming %s and containing %q", c.name, err, path, c.want)
		}
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
		a, err := NewAdapter(c.cfg, AdapterConfig{SoftTokens: 4, Bottleneck: 6, Share: ShareNone}, InitDefault, 24)
		if err != nil {
			t.Fatal(err)
		}
		a.Arch = c.arch
		if _, err := NewModel(base, a, Options{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want one containing %q", err, c.want)
		}
	}
}

func TestBaseFromGGUF(t *testing.T) {
	cfg := tinyConfig()
	w := randomWeights(cfg, 25)
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
