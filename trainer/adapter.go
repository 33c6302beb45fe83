package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/iapt-go/iapt/adapterfile"
)

// Values of adapterfile.Config.Share.
const (
	// ShareNone gives every layer its own down and up projections.
	ShareNone = "none"
	// ShareUpDown makes all layers use one down projection and one up
	// projection; the pooler and the rational activation stay per layer.
	ShareUpDown = "updown"
)

// AdapterConfig returns the configuration of an adapter for this llama base
// model with m soft tokens, bottleneck r and the given share mode.
func (c Config) AdapterConfig(m, r int, share string) adapterfile.Config {
	return adapterfile.Config{Arch: "llama", Embd: c.Dim, Layers: c.Layers, SoftTokens: m, Bottleneck: r, Share: share}
}

// CheckAdapter reports whether an adapter of configuration ac fits this
// llama base model: same architecture, width and layer count.
func (c Config) CheckAdapter(ac adapterfile.Config) error {
	if ac.Arch != "llama" {
		return fmt.Errorf("trainer: adapter is for architecture %q, base model is %q", ac.Arch, "llama")
	}
	if ac.Embd != c.Dim || ac.Layers != c.Layers {
		return fmt.Errorf("trainer: adapter is for width %d and %d layers, base model has width %d and %d layers",
			ac.Embd, ac.Layers, c.Dim, c.Layers)
	}
	return nil
}

// upInitStd is the standard deviation of the initial up-projection weights.
const upInitStd = 0.02

// NewAdapter returns an adapter of configuration c with the training
// initialisation, drawn with a generator seeded with seed: down and pool
// weights from N(0, 1/fan-in) (1/d and 1/r), up weights from N(0, 0.02²),
// zero biases, every rational function GoMLX's GELU approximation.
//
// The fan-in scale of the down and pool weights matters: the pooling
// scores S = Z·Wpool are a product of both, so with small weights
// everywhere their gradients (each proportional to the other) start near
// zero, the attention pooling stays uniform and the adapter learns only an
// instruction-independent prefix through the up bias. A small up
// projection keeps the initial soft tokens small, as LoRA's zero-initialised
// B does. (adapterfile.Random makes adapters whose effect is visible, for
// tests.)
func NewAdapter(c adapterfile.Config, seed uint64) (*adapterfile.Adapter, error) {
	a, err := adapterfile.New(c)
	if err != nil {
		return nil, fmt.Errorf("trainer: %w", err)
	}
	rng := rand.New(rand.NewPCG(seed, 0x1a9f))
	for _, p := range params(a) {
		if !p.matrix {
			continue
		}
		std := upInitStd
		if !strings.HasSuffix(p.name, "iapt_up.weight") {
			std = 1 / math.Sqrt(float64(p.shape[0])) // ggml ne0 is the fan-in
		}
		for i := range p.data {
			p.data[i] = float32(rng.NormFloat64() * std)
		}
	}
	return a, nil
}

// param is one tensor of an adapter: its name in the adapter file, its ggml
// shape (ne0 first) and its values, which alias the adapter's.
type param struct {
	name  string
	shape []int
	data  []float32
	// matrix is true for the weight matrices (down, pool, up), the tensors
	// that weight decay applies to; biases and rational coefficients are
	// not decayed.
	matrix bool
}

// params lists the tensors of an adapter in a fixed order: the order of the
// model's trainable variables and of the optimizer's flat vectors.
func params(a *adapterfile.Adapter) []param {
	d, r, m := a.Embd, a.Bottleneck, a.SoftTokens
	upDown := func(prefix string, u *adapterfile.UpDown) []param {
		return []param{
			{prefix + "iapt_down.weight", []int{d, r}, u.DownW, true},
			{prefix + "iapt_down.bias", []int{r}, u.DownB, false},
			{prefix + "iapt_up.weight", []int{r, d}, u.UpW, true},
			{prefix + "iapt_up.bias", []int{d}, u.UpB, false},
		}
	}
	var ps []param
	if a.Share == ShareUpDown {
		ps = upDown("", &a.Shared)
	}
	for l := range a.Layers {
		ly := &a.Layers[l]
		p := fmt.Sprintf("blk.%d.", l)
		if a.Share != ShareUpDown {
			ps = append(ps, upDown(p, &ly.UpDown)...)
		}
		ps = append(ps,
			param{p + "iapt_pool.weight", []int{r, m}, ly.PoolW, true},
			param{p + "iapt_rat_num", []int{len(ly.RatNum)}, ly.RatNum[:], false},
			param{p + "iapt_rat_den", []int{len(ly.RatDen)}, ly.RatDen[:], false},
		)
	}
	return ps
}

// flatten returns every value of the adapter in params order, in one vector.
func flatten(a *adapterfile.Adapter) []float32 {
	v := make([]float32, 0, a.NumParams())
	for _, p := range params(a) {
		v = append(v, p.data...)
	}
	return v
}

// unflatten copies a vector made by flatten (of an adapter of the same
// configuration) into the adapter's tensors.
func unflatten(a *adapterfile.Adapter, v []float32) {
	for _, p := range params(a) {
		v = v[copy(p.data, v):]
	}
}

// initScaleBatches is the number of training batches whose generator inputs
// scaleDown's RMS is measured on.
const initScaleBatches = 4

// scaleDown completes the training initialisation with the data: it
// divides each layer's down-projection weights by the RMS of that layer's
// generator input (with share "updown", the shared weights by the RMS over
// all layers), so that Z = H·Wdown starts with values of about unit size
// whatever the scale of the base model's hidden states (stories15M's grow
// from 0.03 at the embedding to 0.4 at the last layer). Otherwise Z, the
// pooling scores and the generated soft tokens start near zero, and the
// instruction-dependent path learns far more slowly than the biases.
// rms holds one value per layer.
func scaleDown(a *adapterfile.Adapter, rms []float64) error {
	if len(rms) != len(a.Layers) {
		return fmt.Errorf("trainer: %d input RMS values for %d layers", len(rms), len(a.Layers))
	}
	scale := func(w []float32, r float64) error {
		if !(r > 0) || math.IsInf(r, 0) {
			return fmt.Errorf("trainer: generator input RMS %g", r)
		}
		for i := range w {
			w[i] = float32(float64(w[i]) / r)
		}
		return nil
	}
	if a.Share == ShareUpDown {
		ms := 0.0
		for _, r := range rms {
			ms += r * r
		}
		return scale(a.Shared.DownW, math.Sqrt(ms/float64(len(rms))))
	}
	for l := range a.Layers {
		if err := scale(a.Layers[l].DownW, rms[l]); err != nil {
			return err
		}
	}
	return nil
}
