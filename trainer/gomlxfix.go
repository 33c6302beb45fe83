package trainer

// This file holds every workaround for GoMLX v0.26.0 and its pure-Go
// ("simplego") backend that this package needs, for these problems:
//
//  1. The gradient GoMLX registers for DotGeneral multiplies the adjoint by the
//     other operand with broadcasting and then reduces, materialising an
//     [M, N, K] tensor (measured: 2 s instead of 76 ms for a 1024x288x768
//     product; tens of GB for an LM head). Fixed here: matrix products are built with
//     dot, which records the contraction axes of the node it creates, and the
//     DotGeneral gradient is replaced by dotGeneralVJP, which computes both
//     operand gradients as DotGeneral products (as JAX does). GoMLX offers no
//     public per-node gradient hook for an op with two inputs (its
//     IdentityWithCustomGradient takes one), and a DotGeneral node does not
//     expose its axes, hence the side table; DotGeneral nodes not made by dot
//     keep GoMLX's own gradient.
//  2. simplego does not implement Pad, which the gradient of Slice uses, nor
//     Reverse. Avoided rather than fixed: no differentiated value is sliced.
//     RoPE takes the two halves of each pair with masked sums, soft rows are
//     written with Where, and output rows are picked with Gather.
//  3. Rsqrt has no gradient. Avoided: RMSNorm divides by Sqrt, as ggml does
//     (it multiplies by 1/sqrtf).
//  4. Converting to Float16 crashes simplego. Avoided: everything is float32.
//  5. simplego's parallel op scheduler deadlocks: it runs ready ops on a
//     bounded worker pool (2 workers per CPU), and an op running there (a
//     DotGeneral) blocks waiting for a free worker for its own sub-tasks, so
//     a few concurrent matmuls fill the pool and wait on each other forever
//     (seen on 2 CPUs with the gradient graph). Fixed by running the ops of a
//     graph one after another ("ops_sequential"); each op still uses all CPUs.
//     withSimpleGoFix adds that option to a "go" backend configuration that
//     does not choose an execution mode itself.
//  6. An Exec compiles one graph per distinct input shape and fails once it
//     holds 32 (DefaultExecMaxCacheSize). Avoided in model.go: batches are
//     padded to a few bucketed shapes, and the limit is raised (maxGraphs).

import (
	"runtime"
	"slices"
	"strings"
	"sync"
	"weak"

	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
)

// dotAxes are the (non-negative) contracting and batch axes of a DotGeneral node.
type dotAxes struct {
	lhsContract, lhsBatch, rhsContract, rhsBatch []int
}

var (
	// dotTable maps DotGeneral nodes made by dot to their axes. Keys are weak
	// so the table does not keep graphs alive; entries are deleted when their
	// node is collected.
	dotTable sync.Map // weak.Pointer[Node] -> dotAxes

	fixOnce sync.Once
	// gomlxDotGeneralVJP is GoMLX's own DotGeneral gradient, used for nodes
	// that were not made by dot.
	gomlxDotGeneralVJP VJP
)

// installGradientFixes replaces GoMLX's DotGeneral gradient, once per
// process, through the VJPRegistration table GoMLX provides for that purpose.
// It must run before any graph of this package is differentiated.
func installGradientFixes() {
	fixOnce.Do(func() {
		gomlxDotGeneralVJP = VJPRegistration[NodeTypeDotGeneral]
		VJPRegistration[NodeTypeDotGeneral] = dotGeneralVJP
	})
}

// dot is DotGeneral (the output axes are the batch axes, then the free axes
// of lhs, then those of rhs) with a gradient made of DotGeneral products.
func dot(lhs *Node, lhsContract, lhsBatch []int, rhs *Node, rhsContract, rhsBatch []int) *Node {
	ax := dotAxes{
		lhsContract: absAxes(lhs.Rank(), lhsContract),
		lhsBatch:    absAxes(lhs.Rank(), lhsBatch),
		rhsContract: absAxes(rhs.Rank(), rhsContract),
		rhsBatch:    absAxes(rhs.Rank(), rhsBatch),
	}
	y := DotGeneral(lhs, slices.Clone(ax.lhsContract), slices.Clone(ax.lhsBatch),
		rhs, slices.Clone(ax.rhsContract), slices.Clone(ax.rhsBatch))
	key := weak.Make(y)
	dotTable.Store(key, ax)
	runtime.AddCleanup(y, func(k weak.Pointer[Node]) { dotTable.Delete(k) }, key)
	return y
}

// absAxes turns negative axes (counted from the end) into non-negative ones.
func absAxes(rank int, axes []int) []int {
	out := make([]int, len(axes))
	for i, a := range axes {
		if a < 0 {
			a += rank
		}
		out[i] = a
	}
	return out
}

// freeAxes returns, in increasing order, the axes of a rank-r operand that are
// neither contracted nor batch axes.
func freeAxes(rank int, contract, batch []int) []int {
	var free []int
	for a := range rank {
		if !slices.Contains(contract, a) && !slices.Contains(batch, a) {
			free = append(free, a)
		}
	}
	return free
}

// dotGeneralVJP is the gradient of y = DotGeneral(lhs, rhs) for nodes made by
// dot. With v the adjoint of y (axes: batch, lhs free, rhs free):
//
//	dlhs = DotGeneral(v, rhs) contracting the rhs free axes, batched over the
//	       batch axes, then transposed back to lhs's axis order;
//	drhs = DotGeneral(lhs, v) contracting the lhs free axes, likewise.
func dotGeneralVJP(node *Node, vjpOutputs []*Node, outputShape shapes.Shape) []*Node {
	value, found := dotTable.Load(weak.Make(node))
	if !found {
		return gomlxDotGeneralVJP(node, vjpOutputs, outputShape)
	}
	ax := value.(dotAxes)
	v := vjpOutputs[0]
	lhs, rhs := node.Inputs()[0], node.Inputs()[1]
	nb := len(ax.lhsBatch)
	lhsFree := freeAxes(lhs.Rank(), ax.lhsContract, ax.lhsBatch)
	rhsFree := freeAxes(rhs.Rank(), ax.rhsContract, ax.rhsBatch)
	vBatch := axisRange(0, nb)
	vLhsFree := axisRange(nb, len(lhsFree))
	vRhsFree := axisRange(nb+len(lhsFree), len(rhsFree))

	// dlhs has axes [batch, lhs free, contracted (in increasing rhs axis order)].
	dl := DotGeneral(v, vRhsFree, vBatch, rhs, slices.Clone(rhsFree), slices.Clone(ax.rhsBatch))
	dl = TransposeAllAxes(dl, backPermutation(lhs.Rank(), ax.lhsBatch, lhsFree, ax.lhsContract, ax.rhsContract, true)...)
	// drhs has axes [batch, contracted (in increasing lhs axis order), rhs free].
	dr := DotGeneral(lhs, slices.Clone(lhsFree), slices.Clone(ax.lhsBatch), v, vLhsFree, vBatch)
	dr = TransposeAllAxes(dr, backPermutation(rhs.Rank(), ax.rhsBatch, rhsFree, ax.rhsContract, ax.lhsContract, false)...)
	return []*Node{dl, dr}
}

// backPermutation returns the TransposeAllAxes permutation that brings an
// operand's gradient back to the operand's axis order. The gradient's axes
// are the batch axes, then the free axes and the contracted axes (free first
// if freeFirst), the contracted ones ordered by the axis they were paired
// with in the other operand (otherContract).
func backPermutation(rank int, batch, free, contract, otherContract []int, freeFirst bool) []int {
	freeAt, contractAt := len(batch), len(batch)+len(free)
	if !freeFirst {
		freeAt, contractAt = len(batch)+len(contract), len(batch)
	}
	perm := make([]int, rank)
	for i, a := range batch {
		perm[a] = i
	}
	for i, a := range free {
		perm[a] = freeAt + i
	}
	sortedOther := slices.Sorted(slices.Values(otherContract))
	for i, a := range contract {
		perm[a] = contractAt + slices.Index(sortedOther, otherContract[i])
	}
	return perm
}

// axisRange returns [from, from+1, ..., from+n-1].
func axisRange(from, n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = from + i
	}
	return s
}

// withSimpleGoFix returns the backend configuration with "ops_sequential"
// added for the "go" backend, unless the configuration already sets
// "ops_sequential" or "ops_parallel" (see problem 5 above).
func withSimpleGoFix(config string) string {
	name, options, _ := strings.Cut(config, ":")
	if name != "go" {
		return config
	}
	for _, o := range strings.Split(options, ",") {
		if o == "ops_sequential" || o == "ops_parallel" {
			return config
		}
	}
	if options == "" {
		return "go:ops_sequential"
	}
	return config + ",ops_sequential"
}
