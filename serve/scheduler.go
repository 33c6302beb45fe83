// Package serve is the continuous-batching scheduler of the IAPT server: one
// model context, driven by one goroutine that owns it, serves a fixed number
// of parallel slots (one KV sequence each).
//
// A request waits in a bounded FIFO queue until a slot is free; then its
// prompt is prefilled into the slot's sequence with its IAPT adapter (the
// adapter's soft tokens land in the KV cache), and from then on the request
// joins the shared decode batch: every step decodes one token of every active
// sequence, whatever its adapter, in a single llama_decode, and samples each
// with its own sampler. Handlers talk to the scheduler only through Submit
// and the event channel it returns.
package serve

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/serve/metrics"
)

// Errors returned by Submit or carried by a final Event.
var (
	// ErrQueueFull: every slot is busy and the queue is at its bound.
	ErrQueueFull = errors.New("too many requests are queued")
	// ErrClosed: the scheduler is shutting down.
	ErrClosed = errors.New("the server is shutting down")
	// ErrInvalid: a request field out of range.
	ErrInvalid = errors.New("invalid request")
	// ErrTooLong: soft tokens + prompt leave no room in a slot's context.
	ErrTooLong = errors.New("prompt is too long")
	// ErrPrefill: llama.cpp (or the IAPT plugin) refused the prefill.
	ErrPrefill = errors.New("prefill failed")
)

// Config sizes the scheduler. Zero values take the defaults.
type Config struct {
	// Slots is the number of sequences generated in parallel (default 4).
	Slots int
	// SlotContext is the context of one slot in tokens: soft tokens +
	// prompt + completion (default: the model's training context).
	SlotContext int
	// Queue is how many requests may wait beyond those that fit the free
	// slots (default 64); Submit refuses more with ErrQueueFull.
	Queue int
	// Threads is the number of CPU threads (default: all cores but one,
	// which is left to HTTP and the Go runtime: llama.cpp's threads wait
	// for each other by spinning, and one that loses its core to a
	// handler stalls the whole decode).
	Threads int
}

// Request is one generation.
type Request struct {
	// Prompt is the tokenized prompt (BOS included when the model adds one).
	Prompt []bridge.Token
	// Adapter is switched on for the prefill; nil serves the base model. It
	// must stay loaded until the event channel is closed.
	Adapter *bridge.Adapter
	// Model labels the request's metrics (the served model id).
	Model string
	// Sampling configures the request's own sampler.
	Sampling bridge.SamplerParams
	// MaxTokens bounds the completion; 0 or more than the slot has room for
	// means up to the end of the slot's context.
	MaxTokens int
	// Stop strings end the generation; they are not part of the text.
	Stop []string
}

// Event is a piece of a generation. The first event comes after the
// prefill; the last one has Done set, and the channel is closed after it.
type Event struct {
	// Text is new completion text. Text that may still become a stop
	// string is held back until it is known not to.
	Text string
	// Done marks the last event.
	Done bool
	// FinishReason is "stop" (end of generation or a stop string) or
	// "length" (MaxTokens or the slot's context), when Err is nil.
	FinishReason string
	// PromptTokens and CompletionTokens count the request's tokens (soft
	// tokens not included); set on the last event.
	PromptTokens, CompletionTokens int
	// Err, on the last event, says why the generation ended early: the
	// request context's error (cancelled, deadline), ErrClosed, ErrPrefill,
	// or a decoding failure.
	Err error
}

// Stats is a snapshot of the scheduler's load.
type Stats struct {
	Slots, Active, Queued int
}

type job struct {
	ctx       context.Context
	req       Request
	budget    int // most tokens to generate
	events    chan Event
	submitted time.Time
	stopWatch func() bool // stops the context.AfterFunc that wakes the loop
}

// slot is an active sequence; owned by the loop goroutine.
type slot struct {
	seq       int
	job       *job
	smp       *bridge.Sampler
	tok       bridge.Token // last sampled token, decoded at pos next step
	pos       int
	index     int // tok's index in the current batch
	generated int
	utf       bridge.TextStream
	text      string // completion text so far
	sent      int    // bytes of text already sent
}

// Scheduler runs generations on one model context.
type Scheduler struct {
	model   *bridge.Model
	lc      *bridge.Context
	batch   *bridge.Batch
	cfg     Config
	m       *metrics.Metrics
	slots   []*slot // index = sequence id; nil = free
	nActive atomic.Int64
	wake    chan struct{}
	done    chan struct{}

	mu      sync.Mutex
	queue   []*job
	closing bool // Shutdown called: no new requests
	abort   bool // Shutdown's deadline passed: end everything now
}

// New creates the model context (NSeqMax = Slots, NCtx = Slots ×
// SlotContext, NBatch = NUbatch = SlotContext so that any prompt that fits a
// slot prefills in one ubatch, unified KV cache) and starts the loop. m may
// be nil (a private set of metrics).
func New(model *bridge.Model, cfg Config, m *metrics.Metrics) (*Scheduler, error) {
	if cfg.Slots < 0 || cfg.SlotContext < 0 || cfg.Queue < 0 || cfg.Threads < 0 {
		return nil, fmt.Errorf("scheduler: negative size in %+v", cfg)
	}
	if cfg.Slots == 0 {
		cfg.Slots = 4
	}
	if cfg.SlotContext == 0 {
		cfg.SlotContext = model.Info().CtxTrain
	}
	if cfg.SlotContext < 2 {
		return nil, fmt.Errorf("scheduler: slot context of %d tokens, want >= 2", cfg.SlotContext)
	}
	if cfg.Queue == 0 {
		cfg.Queue = 64
	}
	if cfg.Threads == 0 {
		cfg.Threads = max(1, runtime.NumCPU()-1)
	}
	if m == nil {
		m = metrics.New()
	}
	nb := max(cfg.SlotContext, cfg.Slots)
	lc, err := model.NewContext(bridge.ContextParams{
		NCtx: cfg.Slots * cfg.SlotContext, NBatch: nb, NUbatch: nb, NSeqMax: cfg.Slots, Threads: cfg.Threads,
	})
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	s := &Scheduler{
		model: model, lc: lc, batch: bridge.NewBatch(cfg.Slots, 1), cfg: cfg, m: m,
		slots: make([]*slot, cfg.Slots), wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
	go s.loop()
	return s, nil
}

// Config returns the effective configuration.
func (s *Scheduler) Config() Config { return s.cfg }

// Stats returns the current load.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Slots: s.cfg.Slots, Active: int(s.nActive.Load()), Queued: len(s.queue)}
}

// signal wakes the loop if it is idle.
func (s *Scheduler) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Submit queues a request. Cancelling ctx (a client that went away, a
// timeout) ends the generation within one decode step, or drops it from
// the queue. The channel delivers the events and is closed after the last.
func (s *Scheduler) Submit(ctx context.Context, r Request) (<-chan Event, error) {
	if len(r.Prompt) == 0 {
		return nil, fmt.Errorf("%w: the prompt has no tokens", ErrInvalid)
	}
	if r.MaxTokens < 0 {
		return nil, fmt.Errorf("%w: max tokens = %d, want >= 0", ErrInvalid, r.MaxTokens)
	}
	if err := r.Sampling.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	for i, st := range r.Stop {
		if st == "" {
			return nil, fmt.Errorf("%w: stop string %d is empty", ErrInvalid, i)
		}
	}
	soft := 0
	if r.Adapter != nil {
		soft = r.Adapter.SoftTokens
	}
	room := s.cfg.SlotContext - soft - len(r.Prompt)
	if room < 1 {
		return nil, fmt.Errorf("%w: %d prompt tokens + %d soft tokens leave no room for a completion in the per-slot context of %d tokens",
			ErrTooLong, len(r.Prompt), soft, s.cfg.SlotContext)
	}
	budget := room
	if r.MaxTokens > 0 {
		budget = min(budget, r.MaxTokens)
	}
	j := &job{ctx: ctx, req: r, budget: budget, events: make(chan Event, budget+2), submitted: time.Now()}
	j.stopWatch = context.AfterFunc(ctx, s.signal)
	s.mu.Lock()
	var err error
	switch {
	case s.closing:
		err = ErrClosed
	case len(s.queue) >= s.cfg.Queue+s.cfg.Slots-int(s.nActive.Load()):
		err = fmt.Errorf("%w: %d waiting, all %d slots busy", ErrQueueFull, len(s.queue), s.cfg.Slots)
	default:
		s.queue = append(s.queue, j)
		s.m.QueueLength.Set(float64(len(s.queue)))
	}
	s.mu.Unlock()
	if err != nil {
		j.stopWatch()
		return nil, err
	}
	s.signal()
	return j.events, nil
}

// Shutdown stops taking requests and lets the queued and active ones
// finish; if ctx ends first, it cancels them (their last event carries
// ErrClosed). It returns when the loop has stopped and the model context is
// freed: nil, or ctx's error when it had to cancel.
func (s *Scheduler) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.signal()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	s.abort = true
	s.mu.Unlock()
	s.signal()
	<-s.done
	return ctx.Err()
}

func (s *Scheduler) loop() {
	defer func() {
		s.batch.Close()
		s.lc.Close()
		close(s.done)
	}()
	for {
		s.mu.Lock()
		abort, closing := s.abort, s.closing
		s.mu.Unlock()
		if abort {
			s.endAll(ErrClosed)
			return
		}
		s.reap()
		s.admit()
		if s.nActive.Load() == 0 {
			s.mu.Lock()
			idle := len(s.queue) == 0
			s.mu.Unlock()
			if idle && closing {
				return
			}
			if idle {
				<-s.wake
			}
			continue
		}
		s.step()
	}
}

// pop takes the oldest queued request, or nil.
func (s *Scheduler) pop() *job {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return nil
	}
	j := s.queue[0]
	s.queue[0] = nil
	s.queue = s.queue[1:]
	s.m.QueueLength.Set(float64(len(s.queue)))
	return j
}

// reap ends the requests whose context is done: active ones (freeing their
// slots) and queued ones.
func (s *Scheduler) reap() {
	for _, sl := range s.slots {
		if sl != nil {
			if err := sl.job.ctx.Err(); err != nil {
				s.finish(sl, "", err)
			}
		}
	}
	s.mu.Lock()
	var gone []*job
	kept := s.queue[:0]
	for _, j := range s.queue {
		if j.ctx.Err() != nil {
			gone = append(gone, j)
		} else {
			kept = append(kept, j)
		}
	}
	clear(s.queue[len(kept):])
	s.queue = kept
	s.m.QueueLength.Set(float64(len(s.queue)))
	s.mu.Unlock()
	for _, j := range gone {
		s.end(j, Event{Done: true, PromptTokens: len(j.req.Prompt), Err: j.ctx.Err()})
	}
}

// endAll ends every active and queued request with err.
func (s *Scheduler) endAll(err error) {
	for _, sl := range s.slots {
		if sl != nil {
			s.finish(sl, "", err)
		}
	}
	for j := s.pop(); j != nil; j = s.pop() {
		s.end(j, Event{Done: true, PromptTokens: len(j.req.Prompt), Err: err})
	}
}

// admit starts queued requests in the free slots.
func (s *Scheduler) admit() {
	for i := range s.slots {
		if s.slots[i] != nil {
			continue
		}
		j := s.pop()
		if j == nil {
			return
		}
		s.start(i, j)
	}
}

// start prefills j into sequence seq and samples its first token.
func (s *Scheduler) start(seq int, j *job) {
	fail := func(err error) {
		s.end(j, Event{Done: true, PromptTokens: len(j.req.Prompt), Err: err})
	}
	if err := j.ctx.Err(); err != nil {
		fail(err)
		return
	}
	smp, err := bridge.NewSampler(j.req.Sampling)
	if err != nil {
		fail(err)
		return
	}
	for _, t := range j.req.Prompt {
		smp.Accept(t)
	}
	t0 := time.Now()
	pf, err := s.lc.Prefill(seq, j.req.Prompt, j.req.Adapter, false)
	if err != nil {
		smp.Close()
		// A failed decode may leave part of the batch cached.
		s.lc.RemoveTokens(seq, -1, -1)
		fail(fmt.Errorf("%w: %v", ErrPrefill, err))
		return
	}
	s.m.PrefillSeconds.WithLabelValues(j.req.Model).Observe(time.Since(t0).Seconds())
	s.m.PromptTokens.WithLabelValues(j.req.Model).Add(float64(len(j.req.Prompt)))
	sl := &slot{seq: seq, job: j, smp: smp, pos: pf.NextPos}
	s.slots[seq] = sl
	s.m.ActiveSequences.Set(float64(s.nActive.Add(1)))
	tok, err := smp.Sample(s.lc, pf.LastIndex)
	if err != nil {
		s.finish(sl, "", err)
		return
	}
	s.m.TimeToFirstToken.WithLabelValues(j.req.Model).Observe(time.Since(j.submitted).Seconds())
	s.accept(sl, tok, true)
}

// step decodes one token of every active sequence and samples the next.
func (s *Scheduler) step() {
	s.batch.Clear()
	var active []*slot
	for _, sl := range s.slots {
		if sl == nil {
			continue
		}
		idx, err := s.batch.Add(sl.tok, sl.pos, []int{sl.seq}, true)
		if err != nil {
			s.finish(sl, "", err)
			continue
		}
		sl.index = idx
		active = append(active, sl)
	}
	if len(active) == 0 {
		return
	}
	t0 := time.Now()
	err := s.lc.Decode(s.batch)
	s.m.DecodeStepSeconds.Observe(time.Since(t0).Seconds())
	s.m.BatchSize.Observe(float64(len(active)))
	for _, sl := range active {
		if err != nil {
			s.finish(sl, "", err)
			continue
		}
		sl.pos++
		tok, err := sl.smp.Sample(s.lc, sl.index)
		if err != nil {
			s.finish(sl, "", err)
			continue
		}
		s.accept(sl, tok, false)
	}
}

// accept adds a sampled token to a sequence: it ends the sequence on an
// end-of-generation token, a stop string or the budget, and otherwise sends
// the text that can no longer be part of a stop string. first forces an
// event, so that the first one always follows the prefill.
func (s *Scheduler) accept(sl *slot, tok bridge.Token, first bool) {
	if s.model.IsEOG(tok) {
		sl.text += sl.utf.Flush()
		s.finish(sl, "stop", nil)
		return
	}
	sl.generated++
	piece, err := s.model.TokenPiece(tok, false)
	if err != nil {
		s.finish(sl, "", err)
		return
	}
	sl.text += sl.utf.Push(piece)
	stops := sl.job.req.Stop
	if i := stopIndex(sl.text, stops); i >= 0 {
		sl.text = sl.text[:i]
		s.finish(sl, "stop", nil)
		return
	}
	if sl.generated >= sl.job.budget {
		sl.text += sl.utf.Flush()
		s.finish(sl, "length", nil)
		return
	}
	sl.tok = tok
	end := len(sl.text) - heldBack(sl.text, stops)
	if end > sl.sent || first {
		sl.job.events <- Event{Text: sl.text[sl.sent:end]}
		sl.sent = end
	}
}

// finish ends an active sequence and frees its slot and KV cells. A nil err
// sends the rest of the text with reason.
func (s *Scheduler) finish(sl *slot, reason string, err error) {
	ev := Event{Done: true, PromptTokens: len(sl.job.req.Prompt), CompletionTokens: sl.generated, Err: err}
	if err == nil {
		ev.Text, ev.FinishReason = sl.text[sl.sent:], reason
	}
	// Removing a whole sequence from the KV cache cannot fail (llama.cpp
	// refuses only partial removals in recurrent memory).
	s.lc.RemoveTokens(sl.seq, -1, -1)
	sl.smp.Close()
	s.slots[sl.seq] = nil
	s.m.ActiveSequences.Set(float64(s.nActive.Add(-1)))
	s.m.CompletionTokens.WithLabelValues(sl.job.req.Model).Add(float64(sl.generated))
	s.end(sl.job, ev)
}

// end delivers the last event of j and closes its channel.
func (s *Scheduler) end(j *job, ev Event) {
	j.stopWatch()
	j.events <- ev
	close(j.events)
	s.m.Finished.WithLabelValues(j.req.Model, outcome(ev)).Inc()
}

// outcome names how a generation ended, for the metrics.
func outcome(ev Event) string {
	switch {
	case ev.Err == nil:
		return ev.FinishReason
	case errors.Is(ev.Err, context.Canceled):
		return "cancelled"
	case errors.Is(ev.Err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(ev.Err, ErrClosed):
		return "shutdown"
	}
	return "error"
}
