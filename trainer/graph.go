package trainer

import (
	"math"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/iapt-go/iapt/adapterfile"
)

// generatorNodes holds the weights of one layer's generator inside a graph,
// with the shapes of the adapter tensors in row-major order.
type generatorNodes struct {
	down     *Node // [r, d]
	downBias *Node // [r]
	up       *Node // [d, r]
	upBias   *Node // [d]
	pool     *Node // [m, r]
	ratNum   *Node // [6]: a0..a5
	ratDen   *Node // [4]: b1..b4
}

// forward builds the LLaMA + IAPT computation in a graph.
type forward struct {
	cfg     Config
	weights []*Node          // frozen weights, in baseSpecs order
	gens    []generatorNodes // one per layer; nil for the bare base model
	m       int              // soft tokens; 0 for the bare base model
}

// layerWeight returns frozen tensor i (wAttnNorm ... wDown) of layer l.
func (f *forward) layerWeight(l, i int) *Node { return f.weights[1+l*weightsPerLayer+i] }

// hidden runs the model on tokens [B, T] (int32) and returns the final
// normalised hidden states [B, T, d]. instr [B, T] (float32, 1 on instruction
// rows) feeds the generators; the bare base model ignores it. onLayer, when
// not nil, is called with each layer's input x before its generator runs.
func (f *forward) hidden(tokens, instr *Node, onLayer func(l int, x *Node)) *Node {
	g := tokens.Graph()
	t := tokens.Shape().Dimensions[1]
	x := Gather(f.weights[0], InsertAxes(tokens, -1)) // [B, T, d]
	cos, sin := ropeTables(g, f.cfg, t)
	causal := causalMask(g, t)
	for l := range f.cfg.Layers {
		if onLayer != nil {
			onLayer(l, x)
		}
		if f.gens != nil {
			x = f.generate(&f.gens[l], x, instr)
		}
		x = f.layer(l, x, cos, sin, causal)
	}
	return rmsNorm(x, f.weights[1+f.cfg.Layers*weightsPerLayer], f.cfg.RMSEps)
}

// layer is one llama block: pre-norm grouped-query attention with RoPE, then
// a pre-norm SwiGLU feed-forward block, each with a residual connection.
func (f *forward) layer(l int, x, cos, sin, causal *Node) *Node {
	c := f.cfg
	dims := x.Shape().Dimensions
	b, t := dims[0], dims[1]
	group := c.Heads / c.KVHeads

	h := rmsNorm(x, f.layerWeight(l, wAttnNorm), c.RMSEps)
	q := rope(Reshape(linear(h, f.layerWeight(l, wQ)), b, t, c.Heads, c.HeadDim), cos, sin)
	k := rope(Reshape(linear(h, f.layerWeight(l, wK)), b, t, c.KVHeads, c.HeadDim), cos, sin)
	v := Reshape(linear(h, f.layerWeight(l, wV)), b, t, c.KVHeads, c.HeadDim)

	// Query head j uses key/value head j / group, as ggml's broadcasting mul_mat does.
	q = Reshape(q, b, t, c.KVHeads, group, c.HeadDim)
	scores := dot(q, []int{4}, []int{0, 2}, k, []int{3}, []int{0, 2}) // [B, KVHeads, T, group, T]
	scores = Add(MulScalar(scores, 1/math.Sqrt(float64(c.HeadDim))), causal)
	probs := Softmax(scores, -1)
	att := dot(probs, []int{4}, []int{0, 1}, v, []int{1}, []int{0, 2}) // [B, KVHeads, T, group, hd]
	att = Reshape(TransposeAllAxes(att, 0, 2, 1, 3, 4), b, t, c.Heads*c.HeadDim)
	x = Add(x, linear(att, f.layerWeight(l, wO)))

	h = rmsNorm(x, f.layerWeight(l, wFFNNorm), c.RMSEps)
	gate := linear(h, f.layerWeight(l, wGate))
	ff := Mul(Mul(gate, Sigmoid(gate)), linear(h, f.layerWeight(l, wUp)))
	return Add(x, linear(ff, f.layerWeight(l, wDown)))
}

// generate runs one layer's IAPT generator on x [B, T, d] and returns x with
// rows 0..m-1 replaced by the soft tokens U:
//
//	Z = H·Wdown + bdown, S = Z·Wpool, A = softmax of S over the instruction
//	rows, P = Aᵀ·Z, G = rational(P), U = G·Wup + bup.
//
// All rows go through the down projection; the mask keeps only instruction
// rows in the pooling. A sequence without instruction rows gets P = 0.
func (f *forward) generate(p *generatorNodes, x, instr *Node) *Node {
	g := x.Graph()
	dims := x.Shape().Dimensions
	b, t, d := dims[0], dims[1], dims[2]

	z := Add(linear(x, p.down), ExpandLeftToRank(p.downBias, 3)) // [B, T, r]
	s := linear(z, p.pool)                                       // [B, T, m]

	// Masked softmax over the rows (axis 1), kept finite everywhere, gradient
	// included, when a sequence has no instruction rows.
	isInstr := GreaterThan(instr, ZerosLike(instr))                                         // [B, T]
	hasInstr := GreaterThan(ReduceSum(instr, 1), Scalar(g, dtypes.Float32, 0))              // [B]
	hasInstr = Reshape(hasInstr, b, 1)                                                      // a prefix of [B, 1, m]
	maxS := ReduceAndKeep(Where(isInstr, s, Infinity(g, dtypes.Float32, -1)), ReduceMax, 1) // [B, 1, m]
	maxS = StopGradient(Where(hasInstr, maxS, ZerosLike(maxS)))
	e := Mul(Exp(Where(isInstr, Sub(s, maxS), ZerosLike(s))), InsertAxes(instr, -1))
	sum := ReduceAndKeep(e, ReduceSum, 1)
	a := Div(e, Where(hasInstr, sum, OnesLike(sum))) // [B, T, m]

	pooled := dot(a, []int{1}, []int{0}, z, []int{1}, []int{0}) // [B, m, r]
	u := Add(linear(rationalB(pooled, p.ratNum, p.ratDen), p.up), ExpandLeftToRank(p.upBias, 3))
	if t > f.m {
		u = Concatenate([]*Node{u, Zeros(g, shapes.Make(dtypes.Float32, b, t-f.m, d))}, 1)
	}
	soft := LessThan(Iota(g, shapes.Make(dtypes.Int32, b, t), 1), Scalar(g, dtypes.Int32, f.m)) // [B, T]
	return Where(soft, u, x)
}

// Degrees of the rational activation (Padé unit version "B"): the lengths of
// adapterfile.Layer's RatNum (a0..a5) and RatDen (b1..b4) less one and zero.
const (
	ratNumDegree = len(adapterfile.Layer{}.RatNum) - 1
	ratDenDegree = len(adapterfile.Layer{}.RatDen)
)

// rationalB is the Padé unit version "B" applied elementwise:
// R(x) = (a0 + a1 x + ... + a5 x^5) / (1 + |b1 x + ... + b4 x^4|).
func rationalB(x, num, den *Node) *Node {
	powers := []*Node{OnesLike(x), x}
	for len(powers) <= max(ratNumDegree, ratDenDegree) {
		powers = append(powers, Mul(powers[len(powers)-1], x))
	}
	last := x.Rank()
	p := dot(Stack(powers[:ratNumDegree+1], -1), []int{last}, nil, num, []int{0}, nil)
	q := dot(Stack(powers[1:ratDenDegree+1], -1), []int{last}, nil, den, []int{0}, nil)
	return Div(p, OnePlus(Abs(q)))
}

// linear computes x · wᵀ over the last axis of x, for w [out, in] (ggml's
// mul_mat(w, x)).
func linear(x, w *Node) *Node {
	return dot(x, []int{-1}, nil, w, []int{1}, nil)
}

// rmsNorm is ggml_rms_norm followed by the elementwise weight:
// x / sqrt(mean(x²) + eps) * w over the last axis.
func rmsNorm(x, w *Node, eps float32) *Node {
	meanSquare := ReduceAndKeep(Square(x), ReduceMean, -1)
	return Mul(Div(x, Sqrt(AddScalar(meanSquare, eps))), ExpandLeftToRank(w, x.Rank()))
}

// causalMask returns the additive attention mask [1, 1, T, 1, T] (0 where
// key ≤ query, -inf elsewhere), to be broadcast over scores [B, KVHeads, T,
// group, T].
// Right padding needs no key mask: a valid row t only sees keys ≤ t, which
// are all valid.
func causalMask(g *Graph, t int) *Node {
	shape := shapes.Make(dtypes.Int32, 1, 1, t, 1, t)
	allowed := GreaterOrEqual(Iota(g, shape, 2), Iota(g, shape, 4))
	zeros := Zeros(g, shapes.Make(dtypes.Float32, 1, 1, t, 1, t))
	return Where(allowed, zeros, Infinity(g, dtypes.Float32, -1))
}

// ropeTables returns cos and sin of the RoPE angles, shaped [1, T, 1, hd/2],
// computed as ggml's rope cache does in float32: theta_scale =
// powf(base, -2/hd), and the angle of pair i at position p is p multiplied
// i times by theta_scale.
func ropeTables(g *Graph, c Config, t int) (cos, sin *Node) {
	half := c.HeadDim / 2
	scale := float32(math.Pow(float64(c.ropeBase()), float64(float32(-2)/float32(c.HeadDim))))
	cosV := make([]float32, t*half)
	sinV := make([]float32, t*half)
	for p := range t {
		theta := float32(p)
		for i := range half {
			cosV[p*half+i] = float32(math.Cos(float64(theta)))
			sinV[p*half+i] = float32(math.Sin(float64(theta)))
			theta *= scale
		}
	}
	shape := []int{1, t, 1, half}
	return Reshape(Const(g, cosV), shape...), Reshape(Const(g, sinV), shape...)
}

// rope applies llama.cpp's "normal" RoPE (mode 0) to x [B, T, heads, hd]: each
// adjacent pair (x[2i], x[2i+1]) of a head is rotated by the angle of pair i at
// the row's position. The pair halves are taken with masked sums rather than
// slices (see gomlxfix.go).
func rope(x, cos, sin *Node) *Node {
	g := x.Graph()
	dims := x.Shape().Dimensions
	pairs := Reshape(x, dims[0], dims[1], dims[2], dims[3]/2, 2)
	even := ReduceSum(Mul(pairs, Const(g, [][][][][]float32{{{{{1, 0}}}}})), -1)
	odd := ReduceSum(Mul(pairs, Const(g, [][][][][]float32{{{{{0, 1}}}}})), -1)
	rotEven := Sub(Mul(even, cos), Mul(odd, sin))
	rotOdd := Add(Mul(even, sin), Mul(odd, cos))
	return Reshape(Stack([]*Node{rotEven, rotOdd}, -1), dims...)
}

// headRows gathers rows [K] (int32 indices into the B*T rows) of the final
// hidden states h [B, T, d] and returns their logits [K, V].
func (f *forward) headRows(h, rows *Node) *Node {
	d := h.Shape().Dimensions[2]
	flat := Reshape(h, -1, d)
	picked := Gather(flat, InsertAxes(rows, -1))
	head := f.weights[0] // tied output: token_embd.weight
	if !f.cfg.TiedOutput {
		head = f.weights[len(f.weights)-1]
	}
	return linear(picked, head)
}

// meanNLL returns the weighted mean of the cross-entropy of targets [K]
// (int32) under logits [K, V], with weights [K] (float32; 0 for filler rows).
func meanNLL(logits, targets, weights *Node) *Node {
	g := logits.Graph()
	k := logits.Shape().Dimensions[0]
	maxL := StopGradient(ReduceAndKeep(logits, ReduceMax, -1))
	lse := Add(Log(ReduceSum(Exp(Sub(logits, maxL)), -1)), Squeeze(maxL, -1)) // [K]
	idx := Stack([]*Node{Iota(g, shapes.Make(dtypes.Int32, k), 0), targets}, -1)
	target := Gather(logits, idx) // [K]
	return Div(ReduceAllSum(Mul(Sub(lse, target), weights)), ReduceAllSum(weights))
}
