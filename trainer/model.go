package trainer

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/gomlx/gomlx/backends"
	_ "github.com/gomlx/gomlx/backends/simplego" // registers the "go" backend
	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/iapt-go/iapt/adapterfile"
)

// DefaultBackend is the GoMLX backend used when Options.Backend is empty: the
// pure-Go backend, which needs no native library.
const DefaultBackend = "go"

// Options configures a Model.
type Options struct {
	// Backend is a GoMLX backend configuration, "<name>" or
	// "<name>:<config>"; empty means DefaultBackend. Only backends linked into
	// the binary are available ("go" always is).
	Backend string
}

var (
	backendsMu sync.Mutex
	backendsBy = map[string]backends.Backend{}
)

// backendFor returns the process-wide backend for a configuration, creating
// it on first use. Sharing one backend per configuration lets models share a
// Base: a tensor, once used, is bound to one backend.
func backendFor(config string) (backends.Backend, error) {
	if config == "" {
		config = DefaultBackend
	}
	backendsMu.Lock()
	defer backendsMu.Unlock()
	if b, ok := backendsBy[config]; ok {
		return b, nil
	}
	name, _, _ := strings.Cut(config, ":")
	if !slices.Contains(backends.List(), name) {
		return nil, fmt.Errorf("trainer: GoMLX backend %q is not available (linked in: %v)", name, backends.List())
	}
	b, err := backends.NewWithConfig(withSimpleGoFix(config))
	if err != nil {
		return nil, fmt.Errorf("trainer: creating GoMLX backend %q: %w", config, err)
	}
	backendsBy[config] = b
	return b, nil
}

// execKind selects one of the computations a Model compiles.
type execKind int

const (
	execLogits     execKind = iota // logits of selected rows
	execLoss                       // mean cross-entropy
	execGrad                       // mean cross-entropy and its gradient
	execInputStats                 // RMS and mean row of every generator's input
)

// Every distinct input shape costs GoMLX a graph compilation and a cache
// entry, so shapes are rounded up: the rows per sequence to a multiple of
// lengthBucket (at most the context length), the rows sent to the output head
// to a multiple of rowBucket. Padding rows never change the valid rows'
// results (right padding, causal attention, zero loss weight).
const (
	lengthBucket = 16
	rowBucket    = 64
	// maxGraphs bounds the compiled graphs kept per computation; the
	// buckets keep the count far below it for any context length up to
	// a few thousand rows.
	maxGraphs = 512
)

// paddedLength returns the number of rows per sequence a batch of t rows
// is run with: t rounded up to a multiple of lengthBucket, at most the
// context length (and never less than t).
func (m *Model) paddedLength(t int) int {
	return max(t, min((t+lengthBucket-1)/lengthBucket*lengthBucket, m.base.cfg.ContextLength))
}

// Model is a llama base model with an optional IAPT adapter whose weights are
// trainable GoMLX variables. Its methods are safe for concurrent use.
type Model struct {
	base *Base
	// adapter holds the adapter's configuration and metadata (nil for the
	// bare base model); its tensor values are not used: they live in vars.
	adapter *adapterfile.Adapter
	backend backends.Backend
	ctx     *context.Context
	vars    []*context.Variable // in params() order

	mu    sync.Mutex
	execs map[execKind]*context.Exec
}

// NewModel returns a model running base with adapter a, or the bare base model
// if a is nil. The adapter's values are copied into the model's variables.
func NewModel(base *Base, a *adapterfile.Adapter, opts Options) (*Model, error) {
	if base == nil {
		return nil, errors.New("trainer: nil base model")
	}
	installGradientFixes()
	backend, err := backendFor(opts.Backend)
	if err != nil {
		return nil, err
	}
	m := &Model{base: base, backend: backend, ctx: context.New(), execs: map[execKind]*context.Exec{}}
	if a == nil {
		return m, nil
	}
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("trainer: %w", err)
	}
	if err := base.cfg.CheckAdapter(a.Config); err != nil {
		return nil, err
	}
	if m.adapter, err = emptyLike(a); err != nil {
		return nil, err
	}
	scope := m.ctx.In("iapt")
	for _, p := range params(a) {
		t := tensors.FromFlatDataAndDimensions(slices.Clone(p.data), reversed(p.shape)...)
		m.vars = append(m.vars, scope.VariableWithValue(p.name, t))
	}
	return m, nil
}

// emptyLike returns a new adapter with a's configuration and a copy of its
// metadata, its tensors zero.
func emptyLike(a *adapterfile.Adapter) (*adapterfile.Adapter, error) {
	c, err := adapterfile.New(a.Config)
	if err != nil {
		return nil, fmt.Errorf("trainer: %w", err)
	}
	maps.Copy(c.Meta, a.Meta)
	return c, nil
}

// softTokens returns m, or 0 for the bare base model.
func (m *Model) softTokens() int {
	if m.adapter == nil {
		return 0
	}
	return m.adapter.SoftTokens
}

// Adapter returns a copy of the adapter with the current variable values,
// or nil for the bare base model.
func (m *Model) Adapter() (*adapterfile.Adapter, error) {
	if m.adapter == nil {
		return nil, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	tens := make([]*tensors.Tensor, len(m.vars))
	for i, v := range m.vars {
		t, err := v.Value()
		if err != nil {
			return nil, fmt.Errorf("trainer: reading variable %s: %w", v.Name(), err)
		}
		tens[i] = t
	}
	return m.adapterFrom(tens)
}

// adapterFrom builds an adapter with the model's configuration and metadata
// from tensors in params() order.
func (m *Model) adapterFrom(tens []*tensors.Tensor) (*adapterfile.Adapter, error) {
	a, err := emptyLike(m.adapter)
	if err != nil {
		return nil, err
	}
	for i, p := range params(a) {
		data, err := tensors.CopyFlatData[float32](tens[i])
		if err != nil {
			return nil, fmt.Errorf("trainer: reading %s: %w", p.name, err)
		}
		if len(data) != len(p.data) {
			return nil, fmt.Errorf("trainer: %s has %d values, want %d", p.name, len(data), len(p.data))
		}
		copy(p.data, data)
	}
	return a, nil
}

// SetAdapter replaces the variable values with those of a, which must have
// the same configuration as the model's adapter. The model's metadata is
// left as it is.
func (m *Model) SetAdapter(a *adapterfile.Adapter) error {
	if m.adapter == nil {
		return errors.New("trainer: the model has no adapter")
	}
	if err := a.Validate(); err != nil {
		return fmt.Errorf("trainer: %w", err)
	}
	if a.Config != m.adapter.Config {
		return fmt.Errorf("trainer: adapter %+v does not match the model's %+v", a.Config, m.adapter.Config)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, p := range params(a) {
		t := tensors.FromFlatDataAndDimensions(slices.Clone(p.data), reversed(p.shape)...)
		if err := m.vars[i].SetValue(t); err != nil {
			return fmt.Errorf("trainer: setting %s: %w", p.name, err)
		}
	}
	return nil
}

// Logits holds vocabulary logits for the rows of a batch.
type Logits struct {
	// B, T and Vocab are the batch dimensions and the vocabulary size.
	B, T, Vocab int
	// Data is row-major [B][T][Vocab]. Only the rows t in [m, Lengths[b]) are
	// computed (every valid row after the soft tokens); the others are zero.
	Data []float32
}

// Row returns the logits of row t of sequence b.
func (l *Logits) Row(b, t int) []float32 {
	i := (b*l.T + t) * l.Vocab
	return l.Data[i : i+l.Vocab]
}

// Logits computes the logits of every valid row after the soft tokens.
func (m *Model) Logits(b *Batch) (*Logits, error) {
	soft := m.softTokens()
	if err := b.check(m.base.cfg.Vocab, m.base.cfg.ContextLength, soft, false); err != nil {
		return nil, err
	}
	tp := m.paddedLength(b.T)
	var rows, at []int32 // rows in the padded layout; the same rows in b's
	for s, length := range b.Lengths {
		for t := soft; t < length; t++ {
			rows = append(rows, int32(s*tp+t))
			at = append(at, int32(s*b.T+t))
		}
	}
	rows = padRows(rows, b.B*tp)
	out, err := m.run(execLogits, b, tp, tensors.FromFlatDataAndDimensions(rows, len(rows)))
	if err != nil {
		return nil, err
	}
	vocab := m.base.cfg.Vocab
	data, err := tensors.CopyFlatData[float32](out[0])
	if err != nil {
		return nil, fmt.Errorf("trainer: reading logits: %w", err)
	}
	l := &Logits{B: b.B, T: b.T, Vocab: vocab, Data: make([]float32, b.B*b.T*vocab)}
	for i, r := range at {
		copy(l.Data[int(r)*vocab:int(r+1)*vocab], data[i*vocab:(i+1)*vocab])
	}
	return l, nil
}

// Loss returns the mean cross-entropy over the batch's loss rows.
func (m *Model) Loss(b *Batch) (float64, error) {
	out, err := m.runLoss(execLoss, b)
	if err != nil {
		return 0, err
	}
	return float64(tensors.ToScalar[float32](out[0])), nil
}

// LossAndGradients returns the mean cross-entropy over the batch's loss rows
// and its gradient with respect to every adapter tensor, in an adapter of the
// model's configuration. The base weights get no gradient.
func (m *Model) LossAndGradients(b *Batch) (float64, *adapterfile.Adapter, error) {
	if m.adapter == nil {
		return 0, nil, errors.New("trainer: the model has no adapter to differentiate")
	}
	out, err := m.runLoss(execGrad, b)
	if err != nil {
		return 0, nil, err
	}
	grad, err := m.adapterFrom(out[1:])
	if err != nil {
		return 0, nil, err
	}
	return float64(tensors.ToScalar[float32](out[0])), grad, nil
}

// runLoss runs the loss (or loss and gradient) computation on a batch.
func (m *Model) runLoss(kind execKind, b *Batch) ([]*tensors.Tensor, error) {
	if err := b.check(m.base.cfg.Vocab, m.base.cfg.ContextLength, m.softTokens(), true); err != nil {
		return nil, err
	}
	tp := m.paddedLength(b.T)
	var rows, targets []int32
	for i, loss := range b.Loss {
		if loss {
			// Row t-1 predicts the token of row t.
			rows = append(rows, int32(i/b.T*tp+i%b.T-1))
			targets = append(targets, b.Tokens[i])
		}
	}
	k := len(rows)
	rows = padRows(rows, b.B*tp)
	targets = padRows(targets, b.B*tp)
	weights := make([]float32, len(rows))
	for i := range k {
		weights[i] = 1
	}
	n := len(rows)
	return m.run(kind, b, tp,
		tensors.FromFlatDataAndDimensions(rows, n),
		tensors.FromFlatDataAndDimensions(targets, n),
		tensors.FromFlatDataAndDimensions(weights, n))
}

// inputStats returns, for each layer, the root mean square of the values of
// its generator's input H (the instruction rows of the layer's input) over
// the batch, and the mean of those rows.
func (m *Model) inputStats(b *Batch) (rms []float64, mean [][]float32, err error) {
	if m.adapter == nil {
		return nil, nil, errors.New("trainer: the model has no adapter")
	}
	if err := b.check(m.base.cfg.Vocab, m.base.cfg.ContextLength, m.softTokens(), false); err != nil {
		return nil, nil, err
	}
	out, err := m.run(execInputStats, b, m.paddedLength(b.T))
	if err != nil {
		return nil, nil, err
	}
	v, err := tensors.CopyFlatData[float32](out[0])
	if err != nil {
		return nil, nil, fmt.Errorf("trainer: reading input RMS: %w", err)
	}
	mv, err := tensors.CopyFlatData[float32](out[1])
	if err != nil {
		return nil, nil, fmt.Errorf("trainer: reading input means: %w", err)
	}
	d := m.base.cfg.Dim
	for l, x := range v {
		rms = append(rms, float64(x))
		mean = append(mean, mv[l*d:(l+1)*d])
	}
	return rms, mean, nil
}

// padRows pads a list of row indices (or targets) with zeros up to a multiple
// of rowBucket, at most limit entries.
func padRows(rows []int32, limit int) []int32 {
	n := min((len(rows)+rowBucket-1)/rowBucket*rowBucket, limit)
	return append(rows, make([]int32, n-len(rows))...)
}

// run executes computation kind on a batch padded to tp rows per sequence;
// extra are the row inputs of that computation, indexing the padded rows.
func (m *Model) run(kind execKind, b *Batch, tp int, extra ...*tensors.Tensor) ([]*tensors.Tensor, error) {
	tokens := make([]int32, b.B*tp) // padding rows hold token 0
	instr := make([]float32, b.B*tp)
	for s := range b.B {
		copy(tokens[s*tp:], b.Tokens[s*b.T:(s+1)*b.T])
		if m.adapter == nil {
			continue
		}
		for t, v := range b.Instruction[s*b.T : (s+1)*b.T] {
			if v {
				instr[s*tp+t] = 1
			}
		}
	}
	args := []any{
		tensors.FromFlatDataAndDimensions(tokens, b.B, tp),
		tensors.FromFlatDataAndDimensions(instr, b.B, tp),
	}
	for _, t := range extra {
		args = append(args, t)
	}
	for _, t := range m.base.tensors {
		args = append(args, t)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.exec(kind)
	if err != nil {
		return nil, err
	}
	out, err := e.Exec(args...)
	if err != nil {
		return nil, fmt.Errorf("trainer: running the model: %w", err)
	}
	return out, nil
}

// exec returns the compiled computation of the given kind, creating it on
// first use. The caller holds m.mu.
func (m *Model) exec(kind execKind) (*context.Exec, error) {
	if e, ok := m.execs[kind]; ok {
		return e, nil
	}
	e, err := context.NewExec(m.backend, m.ctx, func(ctx *context.Context, in []*Node) []*Node {
		return m.buildGraph(kind, in)
	})
	if err != nil {
		return nil, fmt.Errorf("trainer: creating the computation: %w", err)
	}
	e.SetMaxCache(maxGraphs)
	m.execs[kind] = e
	return e, nil
}

// buildGraph builds computation kind. Its inputs are tokens [B, T] int32,
// the instruction mask [B, T] float32, the row inputs (rows [K] int32; for the
// loss also targets [K] int32 and weights [K] float32) and the frozen
// weights in baseSpecs order.
func (m *Model) buildGraph(kind execKind, in []*Node) []*Node {
	g := in[0].Graph()
	nRow := map[execKind]int{execLogits: 1, execLoss: 3, execGrad: 3, execInputStats: 0}[kind]
	f := &forward{cfg: m.base.cfg, weights: in[2+nRow:], m: m.softTokens()}
	varNodes := make([]*Node, len(m.vars))
	for i, v := range m.vars {
		varNodes[i] = v.ValueGraph(g)
	}
	if m.adapter != nil {
		f.gens = m.generatorNodes(varNodes)
	}
	if kind == execInputStats {
		// Over the instruction rows, per layer: the RMS of the values and
		// the mean row.
		var rms, mean []*Node
		mask := InsertAxes(in[1], -1)
		rows := ReduceAllSum(in[1])
		f.hidden(in[0], in[1], func(_ int, x *Node) {
			masked := Mul(x, mask)
			rms = append(rms, Sqrt(Div(ReduceAllSum(Mul(masked, x)), MulScalar(rows, float64(m.base.cfg.Dim)))))
			mean = append(mean, Div(ReduceSum(masked, 0, 1), rows))
		})
		return []*Node{Stack(rms, 0), Stack(mean, 0)}
	}
	h := f.hidden(in[0], in[1], nil)
	logits := f.headRows(h, in[2])
	if kind == execLogits {
		return []*Node{logits}
	}
	loss := meanNLL(logits, in[3], in[4])
	if kind == execLoss {
		return []*Node{loss}
	}
	return append([]*Node{loss}, Gradient(loss, varNodes...)...)
}

// generatorNodes arranges the adapter variables' nodes (in params() order)
// per layer.
func (m *Model) generatorNodes(varNodes []*Node) []generatorNodes {
	byName := map[string]*Node{}
	for i, p := range params(m.adapter) {
		byName[p.name] = varNodes[i]
	}
	gens := make([]generatorNodes, len(m.adapter.Layers))
	for l := range gens {
		p := fmt.Sprintf("blk.%d.", l)
		proj := p
		if m.adapter.Share == ShareUpDown {
			proj = ""
		}
		gens[l] = generatorNodes{
			down: byName[proj+"iapt_down.weight"], downBias: byName[proj+"iapt_down.bias"],
			up: byName[proj+"iapt_up.weight"], upBias: byName[proj+"iapt_up.bias"],
			pool: byName[p+"iapt_pool.weight"], ratNum: byName[p+"iapt_rat_num"], ratDen: byName[p+"iapt_rat_den"],
		}
	}
	return gens
}
