package trainer_test

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/iapt-go/iapt/adapterfile"
	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/internal/testmodels"
	"github.com/iapt-go/iapt/trainer"
)

// TestParityWithRuntime holds the GoMLX forward and the patched llama.cpp
// runtime to the spec: same base model (F32), same adapter, same tokens, KV
// cache in F32 => logits agree at every prompt position within
// 1e-3 * max(1, max |logit|), and greedy continuations are identical. It
// runs for 2 soft-token counts, 2 bottlenecks and both share modes.
func TestParityWithRuntime(t *testing.T) {
	path := testmodels.Path(t, testmodels.StoriesF32)
	base, err := trainer.LoadBaseGGUF(path)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := bridge.LoadModel(path, bridge.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ctx := trainer.ParityContext(t, rt)
	defer ctx.Close()
	instructions := []string{
		"Hi",
		"Write a story about Tom and a ball.",
		"The little dog was sad because his red ball was lost in the big park near the river, so he",
	}
	prompts := make([][]bridge.Token, len(instructions))
	for i, s := range instructions {
		if prompts[i], err = rt.Tokenize(s, true, false); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		m, r   int
		share  string
		greedy bool
	}{
		{4, 16, "none", true}, {4, 64, "updown", false}, {8, 16, "updown", false}, {8, 64, "none", true},
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("m%d_r%d_%s", c.m, c.r, c.share), func(t *testing.T) {
			cfg := adapterfile.Config{Arch: "llama", Embd: 288, Layers: 6, SoftTokens: c.m, Bottleneck: c.r, Share: c.share}
			a, err := adapterfile.Random(cfg, int64(100+i), 0.5)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(t.TempDir(), "parity.gguf")
			if err := a.Write(p); err != nil {
				t.Fatal(err)
			}
			ta, err := adapterfile.Read(p)
			if err != nil {
				t.Fatal(err)
			}
			model, err := trainer.NewModel(base, ta, trainer.Options{})
			if err != nil {
				t.Fatal(err)
			}
			ra, err := rt.LoadAdapter(p)
			if err != nil {
				t.Fatal(err)
			}
			defer ra.Close()

			examples := make([]trainer.Example, len(prompts))
			for j, toks := range prompts {
				examples[j] = trainer.Example{Instruction: toks}
			}
			batch, err := trainer.NewBatch(c.m, examples, 0)
			if err != nil {
				t.Fatal(err)
			}
			want, err := model.Logits(batch)
			if err != nil {
				t.Fatal(err)
			}
			var worst, scale float64
			for j, toks := range prompts {
				ctx.RemoveTokens(0, -1, -1)
				pf, err := ctx.Prefill(0, toks, ra, true)
				if err != nil {
					t.Fatal(err)
				}
				for k := range toks {
					got, err := ctx.Logits(pf.Offset + k)
					if err != nil {
						t.Fatal(err)
					}
					ref := want.Row(j, c.m+k)
					for v := range got {
						worst = math.Max(worst, math.Abs(float64(got[v]-ref[v])))
						scale = math.Max(scale, math.Abs(float64(ref[v])))
					}
				}
			}
			tol := 1e-3 * math.Max(1, scale)
			t.Logf("max |diff| %.3g, max |logit| %.3g, tolerance %.3g", worst, scale, tol)
			if worst > tol {
				t.Fatalf("runtime and trainer logits differ by %g > %g", worst, tol)
			}
			if c.greedy {
				checkGreedy(t, ctx, ra, model, c.m, prompts[1], 20)
			}
		})
	}
}

// checkGreedy generates n tokens greedily with the runtime and with the
// trainer's forward (re-run on the growing sequence) and compares them.
func checkGreedy(t *testing.T, ctx *bridge.Context, ra *bridge.Adapter, model *trainer.Model, m int, prompt []bridge.Token, n int) {
	t.Helper()
	res, err := ctx.Predict(prompt, bridge.PredictOptions{MaxTokens: n, IgnoreEOG: true, Adapter: ra})
	if err != nil {
		t.Fatal(err)
	}
	// A padding example of the final length keeps the batch shape fixed, so
	// the trainer compiles its graph once.
	pad := trainer.Example{Instruction: prompt, Response: make([]int32, n)}
	var gen []int32
	for len(gen) < n {
		batch, err := trainer.NewBatch(m, []trainer.Example{{Instruction: prompt, Response: gen}, pad}, 0)
		if err != nil {
			t.Fatal(err)
		}
		l, err := model.Logits(batch)
		if err != nil {
			t.Fatal(err)
		}
		row := l.Row(0, m+len(prompt)+len(gen)-1)
		best := 0
		for v := range row {
			if row[v] > row[best] {
				best = v
			}
		}
		gen = append(gen, int32(best))
	}
	for i := range gen {
		if gen[i] != res.Tokens[i] {
			t.Fatalf("greedy token %d: trainer %d, runtime %d\ntrainer %v\nruntime %v", i, gen[i], res.Tokens[i], gen, res.Tokens)
		}
	}
}
