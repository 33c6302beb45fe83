package trainer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/gomlx/gomlx/backends"
	_ "github.com/gomlx/gomlx/backends/simplego" // registers the "go" backend
	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
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
	execLogits execKind = iota // logits of selected rows
	execLoss                   // mean cross-entropy
	execGrad                   // mean cross-entropy and its gradient
)

// rowBucket rounds the number of rows sent to the output head up to a
// multiple of this, so that batches of similar size share a compiled graph.
const rowBucket = 64

// Model is a llama base model with an optional IAPT adapter whose weights are
// trainable GoMLX variables. Its methods are safe for concurrent use.
type Model struct {
	base    *Base
	adapter *Adapter // configuration and metadata; the values live in vars
	backend backends.Backend
	ctx     *context.Context
	vars    []*context.Variable // in adapter.params() order

	mu    sync.Mutex
	execs map[execKind]*context.Exec
}

// NewModel returns a model running base with adapter a, or the bare base model
// if a is nil. The adapter's values are copied into the model's variables.
func NewModel(base *Base, a *Adapter, opts Options) (*Model, error) {
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
		return nil, err
	}
	if err := a.CheckBase(base.cfg); err != nil {
		return nil, err
	}
	m.adapter = a.emptyClone()
	scope := m.ctx.In("iapt")
	for _, p := range a.params() {
		t := tensors.FromFlatDataAndDimensions(slices.Clone(*p.data), reversed(p.shape)...)
		m.vars = append(m.vars, scope.VariableWithValue(p.name, t))
	}
	return m, nil
}

// emptyClone returns a copy of the adapter's configuration and metadata
// without tensor values.
func (a *Adapter) emptyClone() *Adapter {
	c := *a
	c.Shared = UpDown{}
	c.Gen = make([]Generator, len(a.Gen))
	return &c
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
func (m *Model) Adapter() (*Adapter, error) {
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

// adapterFrom builds an adapter with the model's metadata from tensors in
// params() order.
func (m *Model) adapterFrom(tens []*tensors.Tensor) (*Adapter, error) {
	a := m.adapter.emptyClone()
	for i, p := range a.params() {
		data, err := tensors.CopyFlatData[float32](tens[i])
		if err != nil {
			return nil, fmt.Errorf("trainer: reading %s: %w", p.name, err)
		}
		*p.data = data
	}
	return a, nil
}

// SetAdapter replaces the variable values with those of a, which must have
// the same configuration as the model's adapter.
func (m *Model) SetAdapter(a *Adapter) error {
	if m.adapter == nil {
		return errors.New("trainer: the model has no adapter")
	}
	if err := a.Validate(); err != nil {
		return err
	}
	if a.AdapterConfig != m.adapter.AdapterConfig || a.Dim != m.adapter.Dim || a.Layers != m.adapter.Layers {
		return fmt.Errorf("trainer: adapter %+v (d=%d, L=%d) does not match the model's %+v (d=%d, L=%d)",
			a.AdapterConfig, a.Dim, a.Layers, m.adapter.AdapterConfig, m.adapter.Dim, m.adapter.Layers)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, p := range a.params() {
		t := tensors.FromFlatDataAndDimensions(slices.Clone(*p.data), reversed(p.shape)...)
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
	var rows []int32
	for s, length := range b.Lengths {
		for t := soft; t < length; t++ {
			rows = append(rows, int32(s*b.T+t))
		}
	}
	k := len(rows)
	rows = padRows(rows, b.B*b.T)
	out, err := m.run(execLogits, b, tensors.FromFlatDataAndDimensions(rows, len(rows)))
	if err != nil {
		return nil, err
	}
	vocab := m.base.cfg.Vocab
	data, err := tensors.CopyFlatData[float32](out[0])
	if err != nil {
		return nil, fmt.Errorf("trainer: reading logits: %w", err)
	}
	l := &Logits{B: b.B, T: b.T, Vocab: vocab, Data: make([]float32, b.B*b.T*vocab)}
	for i, r := range rows[:k] {
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
// and its gradient with respect to every adapter tensor, in an Adapter laid
// out like the model's adapter. The base weights get no gradient.
func (m *Model) LossAndGradients(b *Batch) (float64, *Adapter, error) {
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
	var rows, targets []int32
	for i, loss := range b.Loss {
		if loss {
			rows = append(rows, int32(i-1)) // row t-1 predicts the token of row t
			targets = append(targets, b.Tokens[i])
		}
	}
	k := len(rows)
	rows = padRows(rows, b.B*b.T)
	targets = padRows(targets, b.B*b.T)
	weights := make([]float32, len(rows))
	for i := range k {
		weights[i] = 1
	}
	n := len(rows)
	return m.run(kind, b,
		tensors.FromFlatDataAndDimensions(rows, n),
		tensors.FromFlatDataAndDimensions(targets, n),
		tensors.FromFlatDataAndDimensions(weights, n))
}

// padRows pads a list of row indices (or targets) with zeros up to a multiple
// of rowBucket, at most limit entries.
func padRows(rows []int32, limit int) []int32 {
	n := min((len(rows)+rowBucket-1)/rowBucket*rowBucket, limit)
	return append(rows, make([]int32, n-len(rows))...)
}

// run executes computation kind on a batch; extra are the row inputs of that
// computation.
func (m *Model) run(kind execKind, b *Batch, extra ...*tensors.Tensor) ([]*tensors.Tensor, error) {
	instr := make([]float32, b.B*b.T)
	if m.adapter != nil {
		for i, v := range b.Instruction {
			if v {
				instr[i] = 1
			}
		}
	}
	args := []any{
		tensors.FromFlatDataAndDimensions(slices.Clone(b.Tokens), b.B, b.T),
		tensors.FromFlatDataAndDimensions(instr, b.B, b.T),
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
	m.execs[kind] = e
	return e, nil
}

// buildGraph builds computation kind. Its inputs are tokens [B, T] int32,
// the instruction mask [B, T] float32, the row inputs (rows [K] int32; for the
// loss also targets [K] int32 and weights [K] float32) and the frozen
// weights in baseSpecs order.
func (m *Model) buildGraph(kind execKind, in []*Node) []*Node {
	g := in[0].Graph()
	nRow := 1
	if kind != execLogits {
		nRow = 3
	}
	f := &forward{cfg: m.base.cfg, weights: in[2+nRow:], m: m.softTokens()}
	varNodes := make([]*Node, len(m.vars))
	for i, v := range m.vars {
		varNodes[i] = v.ValueGraph(g)
	}
	if m.adapter != nil {
		f.gens = m.generatorNodes(varNodes)
	}
	h := f.hidden(in[0], in[1])
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
	for i, p := range m.adapter.params() {
		byName[p.name] = varNodes[i]
	}
	gens := make([]generatorNodes, m.adapter.Layers)
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
