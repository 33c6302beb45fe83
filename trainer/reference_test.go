package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/iapt-go/iapt/adapterfile"
)

// This file holds a plain float64 implementation of the spec's math, written
// from IAPT-SPEC.md and llama.cpp's llama graph independently of the GoMLX
// code, and random test models.

// tinyConfig is the small llama model used by the tests.
func tinyConfig() Config {
	return Config{
		Layers: 2, Dim: 32, Heads: 4, KVHeads: 2, HeadDim: 8, FFN: 64, Vocab: 64,
		RMSEps: 1e-5, RopeBase: 10000, ContextLength: 64,
	}
}

// memTensor is one tensor of a memSource.
type memTensor struct {
	data  []float32
	shape []int
}

// memSource is an in-memory WeightSource.
type memSource map[string]memTensor

func (s memSource) Tensor(name string) ([]float32, []int, error) {
	t, ok := s[name]
	if !ok {
		return nil, nil, fmt.Errorf("%s: %w", name, ErrTensorNotFound)
	}
	return t.data, t.shape, nil
}

// randomWeights returns random frozen weights for cfg: norms near 1,
// matrices with variance 1/in, embeddings N(0, 1).
func randomWeights(cfg Config, seed uint64) memSource {
	rng := rand.New(rand.NewPCG(seed, 7))
	src := memSource{}
	for _, s := range baseSpecs(cfg) {
		v := make([]float32, product(s.shape))
		std := 1 / math.Sqrt(float64(s.shape[0]))
		if s.name == "token_embd.weight" {
			std = 1
		}
		for i := range v {
			if len(s.shape) == 1 {
				v[i] = float32(1 + 0.1*rng.NormFloat64())
			} else {
				v[i] = float32(std * rng.NormFloat64())
			}
		}
		src[s.name] = memTensor{v, s.shape}
	}
	return src
}

// refRational evaluates R(x) = P(x) / (1 + |Q(x)|) with num = a0..a5 and den = b1..b4.
func refRational(num, den []float32, x float64) float64 {
	p, xi := 0.0, 1.0
	for _, a := range num {
		p += float64(a) * xi
		xi *= x
	}
	q, xi := 0.0, x
	for _, b := range den {
		q += float64(b) * xi
		xi *= x
	}
	return p / (1 + math.Abs(q))
}

// refMatVec returns y[j] = Σ_k x[k]·w[j·len(x)+k] (+ bias[j]) for w stored
// ggml-style as rows of len(x) floats.
func refMatVec(x []float64, w []float32, bias []float32) []float64 {
	n := len(w) / len(x)
	y := make([]float64, n)
	for j := range y {
		s := 0.0
		for k, xv := range x {
			s += xv * float64(w[j*len(x)+k])
		}
		if bias != nil {
			s += float64(bias[j])
		}
		y[j] = s
	}
	return y
}

func refRMSNorm(x []float64, w []float32, eps float32) []float64 {
	ss := 0.0
	for _, v := range x {
		ss += v * v
	}
	scale := 1 / math.Sqrt(ss/float64(len(x))+float64(eps))
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = v * scale * float64(w[i])
	}
	return y
}

// refRope rotates the adjacent pairs of every head of v (heads × hd values)
// at position pos, with the exact angle pos·base^(-2i/hd).
func refRope(v []float64, hd int, pos int, base float64) {
	for h := 0; h < len(v)/hd; h++ {
		for i := 0; i < hd/2; i++ {
			theta := float64(pos) * math.Pow(base, -2*float64(i)/float64(hd))
			c, s := math.Cos(theta), math.Sin(theta)
			x0, x1 := v[h*hd+2*i], v[h*hd+2*i+1]
			v[h*hd+2*i] = x0*c - x1*s
			v[h*hd+2*i+1] = x0*s + x1*c
		}
	}
}

// refGenerate computes the m soft tokens of one layer from the instruction
// rows h (n × d), as the spec writes it; with n = 0, P = 0.
func refGenerate(a *adapterfile.Adapter, l int, h [][]float64) [][]float64 {
	m, r := a.SoftTokens, a.Bottleneck
	gen := a.Layers[l]
	proj := a.UpDownOf(l)
	z := make([][]float64, len(h))
	for i := range h {
		z[i] = refMatVec(h[i], proj.DownW, proj.DownB)
	}
	p := make([][]float64, m)
	for s := range m {
		p[s] = make([]float64, r)
		if len(h) == 0 {
			continue
		}
		scores := make([]float64, len(h))
		mx := math.Inf(-1)
		for i := range h {
			for j := range r {
				scores[i] += z[i][j] * float64(gen.PoolW[s*r+j])
			}
			mx = math.Max(mx, scores[i])
		}
		sum := 0.0
		for i := range scores {
			scores[i] = math.Exp(scores[i] - mx)
			sum += scores[i]
		}
		for i := range h {
			for j := range r {
				p[s][j] += scores[i] / sum * z[i][j]
			}
		}
	}
	u := make([][]float64, m)
	for s := range m {
		g := make([]float64, r)
		for j := range g {
			g[j] = refRational(gen.RatNum[:], gen.RatDen[:], p[s][j])
		}
		u[s] = refMatVec(g, proj.UpW, proj.UpB)
	}
	return u
}

// refLogits runs one unpadded sequence through the model and returns the
// logits of every row. a may be nil (bare base model); then m and n are 0.
// With an adapter, rows m..m+n-1 are the instruction.
func refLogits(cfg Config, w memSource, a *adapterfile.Adapter, tokens []int32, n int) [][]float64 {
	d, hd := cfg.Dim, cfg.HeadDim
	m := 0
	if a != nil {
		m = a.SoftTokens
	}
	t := len(tokens)
	emb := w["token_embd.weight"].data
	x := make([][]float64, t)
	for i, id := range tokens {
		x[i] = make([]float64, d)
		for k := range d {
			x[i][k] = float64(emb[int(id)*d+k])
		}
	}
	group := cfg.Heads / cfg.KVHeads
	for l := range cfg.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		wt := func(name string) []float32 { return w[p+name].data }
		if a != nil {
			u := refGenerate(a, l, x[m:m+n])
			copy(x, u)
		}
		q := make([][]float64, t)
		k := make([][]float64, t)
		v := make([][]float64, t)
		for i := range t {
			h := refRMSNorm(x[i], wt("attn_norm.weight"), cfg.RMSEps)
			q[i] = refMatVec(h, wt("attn_q.weight"), nil)
			k[i] = refMatVec(h, wt("attn_k.weight"), nil)
			v[i] = refMatVec(h, wt("attn_v.weight"), nil)
			refRope(q[i], hd, i, float64(cfg.ropeBase()))
			refRope(k[i], hd, i, float64(cfg.ropeBase()))
		}
		for i := range t {
			att := make([]float64, cfg.Heads*hd)
			for head := range cfg.Heads {
				kvh := head / group
				scores := make([]float64, i+1)
				mx := math.Inf(-1)
				for j := 0; j <= i; j++ {
					for e := range hd {
						scores[j] += q[i][head*hd+e] * k[j][kvh*hd+e]
					}
					scores[j] /= math.Sqrt(float64(hd))
					mx = math.Max(mx, scores[j])
				}
				sum := 0.0
				for j := range scores {
					scores[j] = math.Exp(scores[j] - mx)
					sum += scores[j]
				}
				for j := range scores {
					for e := range hd {
						att[head*hd+e] += scores[j] / sum * v[j][kvh*hd+e]
					}
				}
			}
			o := refMatVec(att, wt("attn_output.weight"), nil)
			for e := range d {
				x[i][e] += o[e]
			}
			h := refRMSNorm(x[i], wt("ffn_norm.weight"), cfg.RMSEps)
			gate := refMatVec(h, wt("ffn_gate.weight"), nil)
			up := refMatVec(h, wt("ffn_up.weight"), nil)
			for j := range gate {
				gate[j] = gate[j] / (1 + math.Exp(-gate[j])) * up[j]
			}
			down := refMatVec(gate, wt("ffn_down.weight"), nil)
			for e := range d {
				x[i][e] += down[e]
			}
		}
	}
	head := emb
	if !cfg.TiedOutput {
		head = w["output.weight"].data
	}
	logits := make([][]float64, t)
	for i := range t {
		logits[i] = refMatVec(refRMSNorm(x[i], w["output_norm.weight"].data, cfg.RMSEps), head, nil)
	}
	return logits
}

// refLoss is the mean cross-entropy of the response tokens of examples, each
// run alone through refLogits.
func refLoss(cfg Config, w memSource, a *adapterfile.Adapter, examples []Example) float64 {
	m := 0
	if a != nil {
		m = a.SoftTokens
	}
	total, count := 0.0, 0
	for _, e := range examples {
		tokens := append(make([]int32, m), e.Instruction...)
		tokens = append(tokens, e.Response...)
		logits := refLogits(cfg, w, a, tokens, len(e.Instruction))
		for i := max(m+len(e.Instruction), m+1); i < len(tokens); i++ {
			row := logits[i-1]
			mx := math.Inf(-1)
			for _, v := range row {
				mx = math.Max(mx, v)
			}
			sum := 0.0
			for _, v := range row {
				sum += math.Exp(v - mx)
			}
			total += math.Log(sum) + mx - row[tokens[i]]
			count++
		}
	}
	return total / float64(count)
}

// randomExamples returns examples with the given instruction and response lengths.
func randomExamples(cfg Config, seed uint64, lengths ...[2]int) []Example {
	rng := rand.New(rand.NewPCG(seed, 11))
	ids := func(n int) []int32 {
		v := make([]int32, n)
		for i := range v {
			v[i] = int32(rng.IntN(cfg.Vocab))
		}
		return v
	}
	var ex []Example
	for _, l := range lengths {
		ex = append(ex, Example{Instruction: ids(l[0]), Response: ids(l[1])})
	}
	return ex
}

// compareRows checks that the model's logits for sequence s of batch b match
// the reference rows want (for rows from..len(want)-1) within
// tol·max(1, max|want|).
func compareRows(t *testing.T, what string, got *Logits, s int, want [][]float64, from int, tol float64) {
	t.Helper()
	maxAbs, maxDiff := 1.0, 0.0
	for i := from; i < len(want); i++ {
		for j, v := range want[i] {
			maxAbs = math.Max(maxAbs, math.Abs(v))
			maxDiff = math.Max(maxDiff, math.Abs(v-float64(got.Row(s, i)[j])))
		}
	}
	t.Logf("%s: sequence %d: max |diff| %.3g, max |logit| %.3g", what, s, maxDiff, maxAbs)
	if maxDiff > tol*maxAbs {
		t.Errorf("%s: sequence %d: max |diff| %.3g exceeds %.3g (max |logit| %.3g)", what, s, maxDiff, tol*maxAbs, maxAbs)
	}
}
