package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
)

// Degrees of the rational activation (Padé unit version "B").
const (
	RationalNumDegree = 5
	RationalDenDegree = 4
)

// geluNum and geluDen are the coefficients with which GoMLX's
// pkg/ml/layers/rational initialises a version "B", degrees 5/4 rational
// function to approximate GELU (its cache entry {"gelu", "B", 5, 4}, itself
// taken from github.com/ml-research/rational_activations). The fit holds on
// about [-4, 4].
var (
	geluNum = [RationalNumDegree + 1]float32{
		-0.0004221071456647063, 0.49999955516606254, 0.40270535451115536,
		0.07366976895222031, -0.012954788054484537, -0.0037414002583076983,
	}
	geluDen = [RationalDenDegree]float32{
		4.9585381197087913e-05, 0.1472977407631199, 1.1645825701440633e-05, -0.007483871514842074,
	}
)

// UpDown holds a generator's down and up projections in ggml layout.
type UpDown struct {
	// Down is iapt_down.weight, ggml shape [d, r]: r rows of d floats, row j
	// producing column j of Z = H·Wdown (Z[i][j] = Σ_k H[i][k]·Down[j·d+k] + DownBias[j]).
	Down []float32
	// DownBias is iapt_down.bias, [r].
	DownBias []float32
	// Up is iapt_up.weight, ggml shape [r, d]: d rows of r floats, row c
	// producing column c of U = G·Wup (U[s][c] = Σ_j G[s][j]·Up[c·r+j] + UpBias[c]).
	Up []float32
	// UpBias is iapt_up.bias, [d].
	UpBias []float32
}

// Generator holds the weights of the generator of one layer.
type Generator struct {
	// UpDown holds this layer's projections; with ShareUpDown they are nil
	// and Adapter.Shared is used instead.
	UpDown
	// Pool is iapt_pool.weight, ggml shape [r, m]: m rows of r floats, row s
	// being soft token s's query (S[i][s] = Σ_j Z[i][j]·Pool[s·r+j]).
	Pool []float32
	// RatNum is iapt_rat_num, the numerator coefficients a0..a5.
	RatNum []float32
	// RatDen is iapt_rat_den, the denominator coefficients b1..b4.
	RatDen []float32
}

// TrainInfo is optional provenance stored under adapter.iapt.train.*.
type TrainInfo struct {
	BaseModel string  // adapter.iapt.train.base_model
	Dataset   string  // adapter.iapt.train.dataset
	Steps     uint32  // adapter.iapt.train.steps
	FinalLoss float32 // adapter.iapt.train.final_loss
}

// Adapter is an IAPT adapter in host memory, laid out exactly as in the
// adapter GGUF file. The same type carries gradients (see Model.LossAndGradients).
type Adapter struct {
	AdapterConfig
	// Arch is the base model architecture, e.g. "llama".
	Arch string
	// Dim and Layers are the base model's width d and layer count L.
	Dim, Layers int
	// Shared holds the projections used by every layer when Share is ShareUpDown.
	Shared UpDown
	// Gen holds one generator per layer.
	Gen []Generator
	// Name is the optional general.name.
	Name string
	// Train is optional provenance; zero fields are not written.
	Train TrainInfo
}

// adapterParam is one tensor of an adapter: its GGUF name, its ggml shape and
// a pointer to its values.
type adapterParam struct {
	name  string
	shape []int
	data  *[]float32
}

// params lists the tensors of the adapter in a fixed order (the order of the
// trainable variables and of the file).
func (a *Adapter) params() []adapterParam {
	d, r, m := a.Dim, a.Bottleneck, a.SoftTokens
	upDown := func(prefix string, u *UpDown) []adapterParam {
		return []adapterParam{
			{prefix + "iapt_down.weight", []int{d, r}, &u.Down},
			{prefix + "iapt_down.bias", []int{r}, &u.DownBias},
			{prefix + "iapt_up.weight", []int{r, d}, &u.Up},
			{prefix + "iapt_up.bias", []int{d}, &u.UpBias},
		}
	}
	var ps []adapterParam
	if a.Share == ShareUpDown {
		ps = upDown("", &a.Shared)
	}
	for l := range a.Gen {
		g := &a.Gen[l]
		p := fmt.Sprintf("blk.%d.", l)
		if a.Share != ShareUpDown {
			ps = append(ps, upDown(p, &g.UpDown)...)
		}
		ps = append(ps,
			adapterParam{p + "iapt_pool.weight", []int{r, m}, &g.Pool},
			adapterParam{p + "iapt_rat_num", []int{RationalNumDegree + 1}, &g.RatNum},
			adapterParam{p + "iapt_rat_den", []int{RationalDenDegree}, &g.RatDen},
		)
	}
	return ps
}

// Validate checks the adapter's configuration and that every tensor has the
// right number of values, all finite.
func (a *Adapter) Validate() error {
	if err := a.AdapterConfig.Validate(); err != nil {
		return err
	}
	if a.Arch == "" {
		return fmt.Errorf("trainer: adapter: empty base architecture")
	}
	if a.Dim <= 0 || a.Layers <= 0 {
		return fmt.Errorf("trainer: adapter: base width %d and layer count %d must be positive", a.Dim, a.Layers)
	}
	if len(a.Gen) != a.Layers {
		return fmt.Errorf("trainer: adapter: %d generators for %d layers", len(a.Gen), a.Layers)
	}
	if u := a.Shared; a.Share == ShareNone && (u.Down != nil || u.DownBias != nil || u.Up != nil || u.UpBias != nil) {
		return fmt.Errorf("trainer: adapter: shared projections are set but share is %q", ShareNone)
	}
	if a.Share == ShareUpDown {
		for l := range a.Gen {
			if u := a.Gen[l].UpDown; u.Down != nil || u.DownBias != nil || u.Up != nil || u.UpBias != nil {
				return fmt.Errorf("trainer: adapter: layer %d has its own projections but share is %q", l, ShareUpDown)
			}
		}
	}
	for _, p := range a.params() {
		if len(*p.data) != product(p.shape) {
			return fmt.Errorf("trainer: adapter: tensor %s has %d values, want %d (shape %v)",
				p.name, len(*p.data), product(p.shape), p.shape)
		}
		if j := firstNonFinite(*p.data); j >= 0 {
			return fmt.Errorf("trainer: adapter: tensor %s: value %d is %g", p.name, j, (*p.data)[j])
		}
	}
	return nil
}

// CheckBase reports whether the adapter fits the llama base model cfg: same
// architecture, width and layer count.
func (a *Adapter) CheckBase(cfg Config) error {
	if a.Arch != "llama" {
		return fmt.Errorf("trainer: adapter is for architecture %q, base model is %q", a.Arch, "llama")
	}
	if a.Dim != cfg.Dim || a.Layers != cfg.Layers {
		return fmt.Errorf("trainer: adapter is for width %d and %d layers, base model has width %d and %d layers",
			a.Dim, a.Layers, cfg.Dim, cfg.Layers)
	}
	return nil
}

// Init selects how NewAdapter initialises the weights.
type Init int

const (
	// InitDefault is the training initialisation: down, pool and up weights
	// drawn from N(0, 0.02²), zero biases, every rational function set to
	// GoMLX's GELU approximation.
	InitDefault Init = iota
	// InitRandom draws every tensor, biases and rational coefficients included,
	// so that the soft tokens change the logits clearly; it is meant for
	// parity tests, not for training.
	InitRandom
)

// NewAdapter returns an adapter for the base model cfg with hyperparameters ac,
// initialised as init says from a generator seeded with seed.
func NewAdapter(cfg Config, ac AdapterConfig, init Init, seed uint64) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ac.Validate(); err != nil {
		return nil, err
	}
	if init != InitDefault && init != InitRandom {
		return nil, fmt.Errorf("trainer: unknown adapter initialisation %d", init)
	}
	a := &Adapter{AdapterConfig: ac, Arch: "llama", Dim: cfg.Dim, Layers: cfg.Layers, Gen: make([]Generator, cfg.Layers)}
	rng := rand.New(rand.NewPCG(seed, 0x1a9f))
	// Standard deviations of the random draws, by tensor kind; the rational
	// coefficients start at the GELU fit (perturbed by InitRandom).
	std := map[string]float64{
		"iapt_down.weight": 0.02, "iapt_pool.weight": 0.02, "iapt_up.weight": 0.02,
	}
	if init == InitRandom {
		d, r := float64(cfg.Dim), float64(ac.Bottleneck)
		std = map[string]float64{
			"iapt_down.weight": 1 / math.Sqrt(d), "iapt_down.bias": 0.3,
			"iapt_pool.weight": 2 / math.Sqrt(r),
			"iapt_up.weight":   1 / math.Sqrt(r), "iapt_up.bias": 0.5,
			"iapt_rat_num": 0.05, "iapt_rat_den": 0.05,
		}
	}
	for _, p := range a.params() {
		kind := baseName(p.name)
		v := make([]float32, product(p.shape))
		switch kind {
		case "iapt_rat_num":
			copy(v, geluNum[:])
		case "iapt_rat_den":
			copy(v, geluDen[:])
		}
		for i := range v {
			v[i] += float32(rng.NormFloat64() * std[kind])
		}
		*p.data = v
	}
	return a, nil
}

// baseName strips the "blk.N." prefix from an adapter tensor name.
func baseName(name string) string {
	if rest, ok := strings.CutPrefix(name, "blk."); ok {
		if _, kind, ok := strings.Cut(rest, "."); ok {
			return kind
		}
	}
	return name
}
