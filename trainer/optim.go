package trainer

import (
	"fmt"
	"math"
)

// The optimizer runs in Go on the flat vector of adapter values (flatten),
// not as a GoMLX optimizer. Model.LossAndGradients already hands back the
// gradient as host values shaped like the adapter (it comes from the graph
// with the custom DotGeneral gradient of gomlxfix.go), so a host update
// needs no second graph and no GoMLX training loop. The moments are plain
// float32 slices that a checkpoint saves and restores bit for bit, which is
// what an exact resume needs, and the update order is fixed, so runs are
// reproducible. The cost is negligible: an adapter has a few hundred
// thousand values, updated in about a millisecond, against seconds for the
// forward and backward pass.

// Learning-rate schedules after the warm-up.
const (
	ScheduleCosine = "cosine"
	ScheduleLinear = "linear"
)

// OptimConfig holds the AdamW and schedule hyperparameters.
type OptimConfig struct {
	// LR is the peak learning rate, reached at the end of the warm-up.
	LR float64 `json:"lr"`
	// Warmup is the number of steps over which the rate rises linearly
	// from LR/Warmup to LR.
	Warmup int `json:"warmup"`
	// Schedule is ScheduleCosine or ScheduleLinear: how the rate decays
	// from LR to 0 between the warm-up and the last step.
	Schedule string `json:"schedule"`
	// WeightDecay is AdamW's decoupled weight decay, applied to the
	// weight matrices (down, pool, up) only, not to biases and rational
	// coefficients.
	WeightDecay float64 `json:"weight_decay"`
	// Beta1, Beta2 and Eps are Adam's moment decay rates and denominator
	// term.
	Beta1 float64 `json:"beta1"`
	Beta2 float64 `json:"beta2"`
	Eps   float64 `json:"eps"`
	// ClipNorm clips the gradient to this global L2 norm; 0 turns
	// clipping off.
	ClipNorm float64 `json:"clip_norm"`
	// RationalLR multiplies the learning rate of the rational activations'
	// coefficients (0 freezes them at their GELU initialisation). Each
	// coefficient acts on all m·r pooled values of its layer, the high
	// powers on their fifth power, so at the rate of the other values they
	// dominate the gradient norm and their noisy steps shake every soft
	// token at once (measured on the IMDB task: loss spikes, and their
	// gradient 7-10x that of any other group of values).
	RationalLR float64 `json:"rational_lr"`
}

// Validate reports the first hyperparameter out of range.
func (o OptimConfig) Validate() error {
	switch {
	case !(o.LR > 0) || math.IsInf(o.LR, 0):
		return fmt.Errorf("learning rate %g must be positive", o.LR)
	case o.Warmup < 0:
		return fmt.Errorf("warm-up %d must not be negative", o.Warmup)
	case o.Schedule != ScheduleCosine && o.Schedule != ScheduleLinear:
		return fmt.Errorf("schedule %q: want %q or %q", o.Schedule, ScheduleCosine, ScheduleLinear)
	case !(o.WeightDecay >= 0) || math.IsInf(o.WeightDecay, 0):
		return fmt.Errorf("weight decay %g must not be negative", o.WeightDecay)
	case !(o.Beta1 >= 0 && o.Beta1 < 1) || !(o.Beta2 >= 0 && o.Beta2 < 1):
		return fmt.Errorf("Adam betas %g and %g must be in [0, 1)", o.Beta1, o.Beta2)
	case !(o.Eps > 0):
		return fmt.Errorf("Adam epsilon %g must be positive", o.Eps)
	case !(o.ClipNorm >= 0) || math.IsInf(o.ClipNorm, 0):
		return fmt.Errorf("gradient clip norm %g must not be negative", o.ClipNorm)
	case !(o.RationalLR >= 0) || math.IsInf(o.RationalLR, 0):
		return fmt.Errorf("rational learning-rate factor %g must not be negative", o.RationalLR)
	}
	return nil
}

// rate returns the learning rate of optimizer step s (0-based) of a run of
// total steps.
func (o OptimConfig) rate(s, total int) float64 {
	if s < o.Warmup {
		return o.LR * float64(s+1) / float64(o.Warmup)
	}
	progress := float64(s-o.Warmup) / float64(max(1, total-o.Warmup))
	progress = min(progress, 1)
	if o.Schedule == ScheduleLinear {
		return o.LR * (1 - progress)
	}
	return o.LR * 0.5 * (1 + math.Cos(math.Pi*progress))
}

// adamW holds the optimizer state: the first and second moments of every
// adapter value (in flatten order) and the number of updates made.
type adamW struct {
	m, v  []float32
	steps int
}

// newAdamW returns a fresh state for n values.
func newAdamW(n int) *adamW {
	return &adamW{m: make([]float32, n), v: make([]float32, n)}
}

// clip scales g down to the global L2 norm maxNorm if it is longer (maxNorm
// 0: no clipping) and returns its norm before clipping.
func clip(g []float32, maxNorm float64) float64 {
	sum := 0.0
	for _, x := range g {
		sum += float64(x) * float64(x)
	}
	norm := math.Sqrt(sum)
	if maxNorm > 0 && norm > maxNorm {
		s := maxNorm / norm
		for i := range g {
			g[i] = float32(float64(g[i]) * s)
		}
	}
	return norm
}

// update makes one AdamW step on the values p with gradient g at learning
// rate lr; decay marks the values weight decay applies to, scale holds each
// value's learning-rate factor (lrScales). The step is Adam's on the values
// divided by their factor: the gradient, already multiplied by the factor
// (see loop.step), feeds the moments, the Adam step is multiplied by the
// factor, and weight decay shrinks every value by the same share.
func (a *adamW) update(o OptimConfig, p, g []float32, decay []bool, scale []float32, lr float64) {
	a.steps++
	bc1 := 1 - math.Pow(o.Beta1, float64(a.steps))
	bc2 := 1 - math.Pow(o.Beta2, float64(a.steps))
	for i := range p {
		gi := float64(g[i])
		m := o.Beta1*float64(a.m[i]) + (1-o.Beta1)*gi
		v := o.Beta2*float64(a.v[i]) + (1-o.Beta2)*gi*gi
		a.m[i], a.v[i] = float32(m), float32(v)
		step := float64(scale[i]) * (m / bc1) / (math.Sqrt(v/bc2) + o.Eps)
		if decay[i] {
			step += o.WeightDecay * float64(p[i])
		}
		p[i] = float32(float64(p[i]) - lr*step)
	}
}

// decayMask marks, in flatten order, the values of the adapter's weight
// matrices.
func decayMask(ps []param) []bool {
	var mask []bool
	for _, p := range ps {
		for range p.data {
			mask = append(mask, p.matrix)
		}
	}
	return mask
}
