package trainer

import (
	"errors"
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

// upInitStd is the standard deviation of the up-projection weights drawn by
// NewAdapter, relative to the layer's hidden-state RMS once fitToData has
// scaled them.
const upInitStd = 0.02

// NewAdapter returns an adapter of configuration c with the first part of
// the training initialisation, drawn with a generator seeded with seed: down
// and pool weights from N(0, 1/fan-in) (1/d and 1/r), up weights from
// N(0, 0.02²), zero biases, every rational function GoMLX's GELU
// approximation. Training completes it with fitToData, which sets the
// scales of the down and up projections from the data.
//
// The fan-in scale of the down and pool weights matters: the pooling
// scores S = Z·Wpool are a product of both, so with small weights
// everywhere their gradients (each proportional to the other) start near
// zero, the attention pooling stays uniform and the adapter learns only an
// instruction-independent prefix through the up bias. (adapterfile.Random
// makes adapters whose effect is visible, for tests.)
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
	// layer is the tensor's layer, or -1 for the shared projections of
	// share "updown".
	layer int
}

// params lists the tensors of an adapter in a fixed order: the order of the
// model's trainable variables and of the optimizer's flat vectors.
func params(a *adapterfile.Adapter) []param {
	d, r, m := a.Embd, a.Bottleneck, a.SoftTokens
	upDown := func(prefix string, u *adapterfile.UpDown, layer int) []param {
		return []param{
			{prefix + "iapt_down.weight", []int{d, r}, u.DownW, true, layer},
			{prefix + "iapt_down.bias", []int{r}, u.DownB, false, layer},
			{prefix + "iapt_up.weight", []int{r, d}, u.UpW, true, layer},
			{prefix + "iapt_up.bias", []int{d}, u.UpB, false, layer},
		}
	}
	var ps []param
	if a.Share == ShareUpDown {
		ps = upDown("", &a.Shared, -1)
	}
	for l := range a.Layers {
		ly := &a.Layers[l]
		p := fmt.Sprintf("blk.%d.", l)
		if a.Share != ShareUpDown {
			ps = append(ps, upDown(p, &ly.UpDown, l)...)
		}
		ps = append(ps,
			param{p + "iapt_pool.weight", []int{r, m}, ly.PoolW, true, l},
			param{p + "iapt_rat_num", []int{len(ly.RatNum)}, ly.RatNum[:], false, l},
			param{p + "iapt_rat_den", []int{len(ly.RatDen)}, ly.RatDen[:], false, l},
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

// initScaleBatches is the number of training batches on which fitToData
// measures the generator inputs.
const initScaleBatches = 4

// inputStats are statistics of the generator inputs H (instruction rows of
// each layer's input) measured on training data, one entry per layer.
type inputStats struct {
	// RMS is the root mean square of the values; Std the same after the
	// mean row is subtracted (the spread around the mean row).
	RMS []float64 `json:"rms"`
	Std []float64 `json:"std"`
	// Mean is the mean instruction row; it is used once, at the start, so
	// checkpoints do not keep it.
	Mean [][]float32 `json:"-"`
}

// validate checks that the statistics cover layers layers of width d and
// are usable scales.
func (st inputStats) validate(layers, d int) error {
	if len(st.RMS) != layers || len(st.Std) != layers {
		return fmt.Errorf("trainer: input statistics for %d/%d layers, the adapter has %d", len(st.RMS), len(st.Std), layers)
	}
	for l := range layers {
		for _, v := range []float64{st.RMS[l], st.Std[l]} {
			if !(v > 0) || math.IsInf(v, 0) {
				return fmt.Errorf("trainer: generator input scale %g in layer %d", v, l)
			}
		}
		if st.Mean != nil && len(st.Mean[l]) != d {
			return fmt.Errorf("trainer: mean input row of %d values in layer %d, want %d", len(st.Mean[l]), l, d)
		}
	}
	return nil
}

// fitToData completes the training initialisation with statistics of each
// layer's generator input H measured on training data. The scale of the
// hidden states differs by layer (stories15M's grow from 0.03 at the
// embedding to 0.4 at the last layer), and most of it is one mean row that
// every instruction token shares, so:
//
//   - the down projection is centred and scaled: Wdown is divided by the
//     spread of H around its mean row and bdown = -mean·Wdown, so that
//     Z = H·Wdown + bdown starts with values of about unit size that
//     describe how each instruction differs from the average one. Otherwise
//     Z, and the pooled P, would be dominated by what all instructions have
//     in common: the gradient of the up weights would be too, and the
//     instruction-dependent path would learn far more slowly than the
//     biases;
//   - the up bias starts at the mean instruction row and the up weights at
//     the layer's RMS times their N(0, 0.02²) draw: each soft token starts
//     as an average instruction token plus a small instruction-dependent
//     part. The frozen attention norm rescales every row to unit RMS, so a
//     soft token made only of a small random projection (a zero bias) would
//     enter attention at full size in an input-dependent random direction:
//     noise in every layer's keys and values from the first step on.
//
// With share "updown" the shared tensors use the statistics over all
// layers (the RMS of the per-layer values, the mean of the mean rows).
func fitToData(a *adapterfile.Adapter, st inputStats) error {
	if err := st.validate(len(a.Layers), a.Embd); err != nil {
		return err
	}
	if st.Mean == nil {
		return errors.New("trainer: input statistics without the mean rows")
	}
	d := a.Embd
	fit := func(u *adapterfile.UpDown, rms, std float64, mean []float32) {
		for i := range u.DownW {
			u.DownW[i] = float32(float64(u.DownW[i]) / std)
		}
		for k := range u.DownB { // row k of Wdown holds the weights of output k
			dot := 0.0
			for j, x := range mean {
				dot += float64(x) * float64(u.DownW[k*d+j])
			}
			u.DownB[k] = float32(-dot)
		}
		for i := range u.UpW {
			u.UpW[i] = float32(float64(u.UpW[i]) * rms)
		}
		copy(u.UpB, mean)
	}
	if a.Share == ShareUpDown {
		avg := make([]float32, d)
		for _, m := range st.Mean {
			for i, x := range m {
				avg[i] += x / float32(len(st.Mean))
			}
		}
		fit(&a.Shared, sharedScale(st.RMS), sharedScale(st.Std), avg)
		return nil
	}
	for l := range a.Layers {
		fit(&a.Layers[l].UpDown, st.RMS[l], st.Std[l], st.Mean[l])
	}
	return nil
}

// sharedScale is the scale of the shared projections of an adapter with
// share "updown": the root mean square of the per-layer scales.
func sharedScale(scale []float64) float64 {
	ms := 0.0
	for _, r := range scale {
		ms += r * r
	}
	return math.Sqrt(ms / float64(len(scale)))
}

// lrScales returns, in flatten order, the factor of the learning rate of
// every value of adapter a, given the input statistics fitToData
// initialised it with: 1/Std for the down weights, RMS for the up weights
// and bias, rational for the rational coefficients, 1 for the rest. This is
// Adam on the adapter re-expressed in the units of that initialisation
// (Wdown = W'/Std, Wup = RMS·W', bup = RMS·b'), so that one learning rate
// moves every layer's generator by the same relative amount, whatever the
// scale of its hidden states; see OptimConfig.RationalLR for the rational
// factor.
func lrScales(a *adapterfile.Adapter, st inputStats, rational float64) ([]float32, error) {
	if err := st.validate(len(a.Layers), a.Embd); err != nil {
		return nil, err
	}
	var out []float32
	sharedRMS, sharedStd := sharedScale(st.RMS), sharedScale(st.Std)
	for _, p := range params(a) {
		rms, std := sharedRMS, sharedStd
		if p.layer >= 0 {
			rms, std = st.RMS[p.layer], st.Std[p.layer]
		}
		f := 1.0
		switch {
		case strings.HasSuffix(p.name, "iapt_down.weight"):
			f = 1 / std
		case strings.HasSuffix(p.name, "iapt_up.weight"), strings.HasSuffix(p.name, "iapt_up.bias"):
			f = rms
		case strings.HasSuffix(p.name, "iapt_rat_num"), strings.HasSuffix(p.name, "iapt_rat_den"):
			f = rational
		}
		for range p.data {
			out = append(out, float32(f))
		}
	}
	return out, nil
}
