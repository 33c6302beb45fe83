package dataset

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
)

// Rand is a seeded random number generator for building data sets: PCG
// with a fixed stream and unbiased bounded draws (Lemire's method), so that
// a seed gives the same data on every platform and Go version.
type Rand struct{ src *rand.PCG }

// NewRand returns a generator seeded with seed.
func NewRand(seed uint64) *Rand { return &Rand{rand.NewPCG(seed, 0x1a9f_3c5e_77d2_b041)} }

// IntN returns a uniform integer in [0, n); n <= 0 gives 0.
func (r *Rand) IntN(n int) int {
	if n <= 0 {
		return 0
	}
	u := uint64(n)
	hi, lo := bits.Mul64(r.src.Uint64(), u)
	if lo < u {
		thresh := -u % u
		for lo < thresh {
			hi, lo = bits.Mul64(r.src.Uint64(), u)
		}
	}
	return int(hi)
}

// Shuffle permutes xs in place, the same way for the same seed and length
// (Fisher–Yates over a PCG generator; the result does not depend on the Go
// version).
func Shuffle[T any](xs []T, seed uint64) {
	r := NewRand(seed)
	for i := len(xs) - 1; i > 0; i-- {
		j := r.IntN(i + 1)
		xs[i], xs[j] = xs[j], xs[i]
	}
}

// Split shuffles a copy of xs with seed and cuts it into a training and an
// evaluation part; the evaluation part holds round(evalFrac·len(xs))
// elements, at least one when evalFrac > 0 and at most len(xs)-1, so that
// training keeps one. evalFrac must be in [0, 1).
func Split[T any](xs []T, evalFrac float64, seed uint64) (train, eval []T, err error) {
	if !(evalFrac >= 0 && evalFrac < 1) {
		return nil, nil, fmt.Errorf("dataset: eval fraction %v is outside [0, 1)", evalFrac)
	}
	s := append([]T(nil), xs...)
	Shuffle(s, seed)
	n := int(math.Round(evalFrac * float64(len(s))))
	if evalFrac > 0 && n == 0 {
		n = 1
	}
	n = min(n, max(len(s)-1, 0))
	return s[n:], s[:n], nil
}
