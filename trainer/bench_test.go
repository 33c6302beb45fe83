package trainer

import "testing"

// BenchmarkLossAndGradients times one forward+backward step at stories15M size
// (dim 288, 6 layers, 6 heads, FFN 768, vocab 32000) with random weights, a
// 4-token, r=64 adapter and a batch of 4 sequences of 128 rows (4 soft, 60
// instruction and 64 response rows each).
func BenchmarkLossAndGradients(b *testing.B) {
	benchmarkStep(b, true)
}

// BenchmarkLoss times the forward pass alone on the same model and batch.
func BenchmarkLoss(b *testing.B) {
	benchmarkStep(b, false)
}

func benchmarkStep(b *testing.B, backward bool) {
	cfg := Config{
		Layers: 6, Dim: 288, Heads: 6, KVHeads: 6, HeadDim: 48, FFN: 768, Vocab: 32000,
		RMSEps: 1e-5, RopeBase: 10000, ContextLength: 256,
	}
	base, err := LoadBase(cfg, randomWeights(cfg, 1))
	if err != nil {
		b.Fatal(err)
	}
	a, err := NewAdapter(cfg.AdapterConfig(4, 64, ShareNone), 2)
	if err != nil {
		b.Fatal(err)
	}
	model, err := NewModel(base, a, Options{})
	if err != nil {
		b.Fatal(err)
	}
	examples := randomExamples(cfg, 3, [2]int{60, 64}, [2]int{60, 64}, [2]int{60, 64}, [2]int{60, 64})
	batch, err := NewBatch(4, examples, 0)
	if err != nil {
		b.Fatal(err)
	}
	step := func() error {
		if backward {
			_, _, err := model.LossAndGradients(batch)
			return err
		}
		_, err := model.Loss(batch)
		return err
	}
	if err := step(); err != nil { // compiles the graph
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if err := step(); err != nil {
			b.Fatal(err)
		}
	}
}
