package adapterfile

import (
	"fmt"
	"math/rand/v2"

	"github.com/iapt-go/iapt/gguf"
)

// LoRAConfig describes a llama.cpp-format LoRA adapter for square attention
// projections of a base model (used to compare IAPT with native LoRA).
type LoRAConfig struct {
	Arch    string
	Embd    int      // width of the projections (n_embd)
	Layers  int      // layers to adapt
	Rank    int      // LoRA rank
	Targets []string // base tensor kinds, e.g. "attn_q", "attn_v"
	Alpha   float32
}

// WriteRandomLoRA writes a LoRA adapter in llama.cpp's GGUF LoRA format
// (adapter.type "lora"; blk.N.<target>.weight.lora_a [Embd, Rank] and
// .lora_b [Rank, Embd]) with random weights of the given scale.
func WriteRandomLoRA(path string, c LoRAConfig, seed int64, scale float32) error {
	if c.Rank < 1 || c.Embd < 1 || c.Layers < 1 || len(c.Targets) == 0 {
		return fmt.Errorf("LoRA config %+v: rank, width, layers and targets must be set", c)
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x10ba))
	random := func(n int) []float32 {
		xs := make([]float32, n)
		for i := range xs {
			xs[i] = (2*rng.Float32() - 1) * scale
		}
		return xs
	}
	w := gguf.NewWriter()
	for _, kv := range []struct {
		k string
		v any
	}{{"general.type", "adapter"}, {"general.architecture", c.Arch}, {"adapter.type", "lora"}, {"adapter.lora.alpha", c.Alpha}} {
		if err := w.Set(kv.k, kv.v); err != nil {
			return err
		}
	}
	d, r := uint64(c.Embd), uint64(c.Rank)
	for l := 0; l < c.Layers; l++ {
		for _, t := range c.Targets {
			name := fmt.Sprintf("blk.%d.%s.weight", l, t)
			if err := w.AddTensorF32(name+".lora_a", []uint64{d, r}, random(c.Embd*c.Rank)); err != nil {
				return err
			}
			if err := w.AddTensorF32(name+".lora_b", []uint64{r, d}, random(c.Embd*c.Rank)); err != nil {
				return err
			}
		}
	}
	return w.WriteFile(path)
}
