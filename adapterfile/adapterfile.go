// Package adapterfile is the IAPT adapter file format of shared/IAPT-SPEC.md
// in pure Go: the weights of every layer's generator, their validation, and
// reading/writing the adapter GGUF. The trainer exports through it, tests
// and tools build adapters with it; the runtime's C++ loader reads the same
// files.
//
// Weight layout (ggml order, ne0 first, as in the file): a matrix with ggml
// shape [a, b] is b rows of a floats. So DownW ([d, r]) holds r rows of d
// (row j produces Z[:, j]); PoolW ([r, m]) m rows of r (row j is soft token
// j's query); UpW ([r, d]) d rows of r (row k produces U[:, k]).
package adapterfile

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// Config is the shape of an adapter and the base model it fits.
type Config struct {
	Arch       string // base model architecture, e.g. "llama"
	Embd       int    // d, the base model's width
	Layers     int    // L, the base model's layer count
	SoftTokens int    // m
	Bottleneck int    // r
	Share      string // "none" or "updown"
}

// Validate reports the first field out of range.
func (c Config) Validate() error {
	switch {
	case c.Arch == "":
		return errors.New("adapter config: Arch is empty")
	case c.Embd < 1:
		return fmt.Errorf("adapter config: Embd = %d, want >= 1", c.Embd)
	case c.Layers < 1:
		return fmt.Errorf("adapter config: Layers = %d, want >= 1", c.Layers)
	case c.SoftTokens < 1 || c.SoftTokens > 256:
		return fmt.Errorf("adapter config: SoftTokens = %d, want 1..256", c.SoftTokens)
	case c.Bottleneck < 1 || c.Bottleneck > 65536:
		return fmt.Errorf("adapter config: Bottleneck = %d, want 1..65536", c.Bottleneck)
	case c.Share != "none" && c.Share != "updown":
		return fmt.Errorf("adapter config: Share = %q, want \"none\" or \"updown\"", c.Share)
	}
	return nil
}

// UpDown are the down- and up-projections of a generator.
type UpDown struct {
	DownW []float32 // [d, r]: r rows of d
	DownB []float32 // [r]
	UpW   []float32 // [r, d]: d rows of r
	UpB   []float32 // [d]
}

// Layer is one layer's generator. With share "none" its UpDown is its own;
// with "updown" it is unused and Adapter.Shared applies.
type Layer struct {
	UpDown
	PoolW  []float32  // [r, m]: m rows of r
	RatNum [6]float32 // a0..a5
	RatDen [4]float32 // b1..b4
}

// Adapter is a complete IAPT adapter.
type Adapter struct {
	Config
	Shared UpDown // share "updown" only
	Layers []Layer
	// Meta holds extra string metadata: general.name, the prompt template
	// (PromptTemplateKey), training provenance (adapter.iapt.train.*).
	Meta map[string]string
}

// PromptTemplateKey is the metadata key of the prompt template that the
// adapter was trained with, so that servers render requests the same way.
const PromptTemplateKey = "adapter.iapt.prompt_template"

// GELUNum and GELUDen are the rational (version B, 5/4) coefficients that
// approximate GELU, as GoMLX's layers/rational initialises them.
var (
	GELUNum = [6]float32{-0.0004221071456647063, 0.49999955516606254, 0.40270535451115536, 0.07366976895222031, -0.012954788054484537, -0.0037414002583076983}
	GELUDen = [4]float32{4.9585381197087913e-05, 0.1472977407631199, 1.1645825701440633e-05, -0.007483871514842074}
)

func newUpDown(d, r int) UpDown {
	return UpDown{DownW: make([]float32, d*r), DownB: make([]float32, r), UpW: make([]float32, r*d), UpB: make([]float32, d)}
}

// New returns an adapter of the given shape with zero weights and rational
// units initialised to GELU.
func New(c Config) (*Adapter, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	a := &Adapter{Config: c, Layers: make([]Layer, c.Layers), Meta: map[string]string{}}
	if c.Share == "updown" {
		a.Shared = newUpDown(c.Embd, c.Bottleneck)
	}
	for l := range a.Layers {
		if c.Share == "none" {
			a.Layers[l].UpDown = newUpDown(c.Embd, c.Bottleneck)
		}
		a.Layers[l].PoolW = make([]float32, c.Bottleneck*c.SoftTokens)
		a.Layers[l].RatNum, a.Layers[l].RatDen = GELUNum, GELUDen
	}
	return a, nil
}

// UpDownOf returns the projections layer l uses.
func (a *Adapter) UpDownOf(l int) *UpDown {
	if a.Share == "updown" {
		return &a.Shared
	}
	return &a.Layers[l].UpDown
}

// Random returns an adapter with non-trivial random weights: projections
// uniform in ±scale/sqrt(fan-in), biases and pool queries uniform in ±scale,
// rational coefficients GELU plus noise of 0.1*scale. Deterministic in seed.
// Tests use it to build adapters whose effect on the logits is visible.
func Random(c Config, seed int64, scale float32) (*Adapter, error) {
	a, err := New(c)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x1a9b7))
	fill := func(xs []float32, s float32) {
		for i := range xs {
			xs[i] = (2*rng.Float32() - 1) * s
		}
	}
	fillUD := func(u *UpDown) {
		fill(u.DownW, scale/float32(math.Sqrt(float64(c.Embd))))
		fill(u.DownB, scale)
		fill(u.UpW, scale/float32(math.Sqrt(float64(c.Bottleneck))))
		fill(u.UpB, scale)
	}
	if c.Share == "updown" {
		fillUD(&a.Shared)
	}
	for l := range a.Layers {
		ly := &a.Layers[l]
		if c.Share == "none" {
			fillUD(&ly.UpDown)
		}
		fill(ly.PoolW, scale)
		for i := range ly.RatNum {
			ly.RatNum[i] += (2*rng.Float32() - 1) * 0.1 * scale
		}
		for i := range ly.RatDen {
			ly.RatDen[i] += (2*rng.Float32() - 1) * 0.1 * scale
		}
	}
	return a, nil
}

// NumParams is the number of trainable parameters.
func (a *Adapter) NumParams() int {
	d, r, m := a.Embd, a.Bottleneck, a.SoftTokens
	ud := 2*d*r + r + d
	perLayer := r*m + 6 + 4
	if a.Share == "updown" {
		return ud + len(a.Layers)*perLayer
	}
	return len(a.Layers) * (ud + perLayer)
}
