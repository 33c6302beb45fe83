package serve

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/internal/testmodels"
	"github.com/iapt-go/iapt/serve/servetest"
)

// newScheduler starts a scheduler on one thread (the test machines are
// small and shared) and shuts it down when the test ends.
func newScheduler(t *testing.T, m *bridge.Model, cfg Config) *Scheduler {
	t.Helper()
	cfg.Threads = 1
	s, err := New(m, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s
}

func tokens(t *testing.T, m *bridge.Model, text string) []bridge.Token {
	t.Helper()
	toks, err := m.Tokenize(text, true, false)
	if err != nil {
		t.Fatal(err)
	}
	return toks
}

// drain reads the events of a request: the text and the last event.
func drain(ch <-chan Event) (string, Event) {
	var b strings.Builder
	for ev := range ch {
		b.WriteString(ev.Text)
		if ev.Done {
			return b.String(), ev
		}
	}
	return b.String(), Event{Err: errors.New("channel closed without a last event")}
}

func run(t *testing.T, s *Scheduler, r Request) (string, Event) {
	t.Helper()
	ch, err := s.Submit(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	text, last := drain(ch)
	if last.Err != nil {
		t.Fatalf("generation failed: %v", last.Err)
	}
	return text, last
}

// predict is the reference: the bridge's own single-sequence generation
// loop, greedy.
func predict(t *testing.T, m *bridge.Model, prompt []bridge.Token, a *bridge.Adapter, maxTokens int) bridge.PredictResult {
	t.Helper()
	c, err := m.NewContext(bridge.ContextParams{NCtx: m.Info().CtxTrain, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Predict(prompt, bridge.PredictOptions{MaxTokens: maxTokens, Adapter: a})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

const story = "Once upon a time"

// The scheduler serves each request exactly as the bridge's own generation
// loop does, alone and with four adapters decoding in one batch.
func TestMatchesPredict(t *testing.T) {
	m := testmodels.Load(t, testmodels.StoriesQ8)
	adapters := append([]*bridge.Adapter{nil}, servetest.LoadAdapters(t, m, 3)...)
	prompt := tokens(t, m, story)
	const n = 40
	want := make([]bridge.PredictResult, len(adapters))
	for i, a := range adapters {
		want[i] = predict(t, m, prompt, a, n)
		for j := range i {
			if want[i].Text == want[j].Text {
				t.Fatalf("adapters %d and %d give the same text %q: the test would prove nothing", j, i, want[i].Text)
			}
		}
	}
	s := newScheduler(t, m, Config{Slots: 4})
	for i, a := range adapters {
		text, last := run(t, s, Request{Prompt: prompt, Adapter: a, MaxTokens: n})
		if text != want[i].Text || last.CompletionTokens != len(want[i].Tokens) || last.PromptTokens != len(prompt) {
			t.Errorf("adapter %d alone: %q (%d+%d tokens), want %q (%d+%d)", i, text, last.PromptTokens, last.CompletionTokens,
				want[i].Text, len(prompt), len(want[i].Tokens))
		}
		if last.FinishReason != want[i].FinishReason {
			t.Errorf("adapter %d: finish reason %q, want %q", i, last.FinishReason, want[i].FinishReason)
		}
	}
	var wg sync.WaitGroup
	got := make([]string, len(adapters))
	chans := make([]<-chan Event, len(adapters))
	for i, a := range adapters {
		ch, err := s.Submit(context.Background(), Request{Prompt: prompt, Adapter: a, MaxTokens: n})
		if err != nil {
			t.Fatal(err)
		}
		chans[i] = ch
	}
	for i, ch := range chans {
		wg.Go(func() { got[i], _ = drain(ch) })
	}
	wg.Wait()
	for i := range adapters {
		if got[i] != want[i].Text {
			t.Errorf("adapter %d batched: %q, want %q", i, got[i], want[i].Text)
		}
	}
}

// A stop string ends the generation before it; text that might begin a stop
// string is held back, and released when it turns out not to.
func TestStopStrings(t *testing.T) {
	m := testmodels.Load(t, testmodels.StoriesQ8)
	prompt := tokens(t, m, story)
	s := newScheduler(t, m, Config{Slots: 2})
	full, _ := run(t, s, Request{Prompt: prompt, MaxTokens: 40})
	// Several tokens: " named", " L", "ily".
	const stop = " named Lily"
	cut := strings.Index(full, stop)
	if cut < 1 {
		t.Fatalf("greedy text %q lacks %q", full, stop)
	}
	ch, err := s.Submit(context.Background(), Request{Prompt: prompt, MaxTokens: 40, Stop: []string{"zzz", stop}})
	if err != nil {
		t.Fatal(err)
	}
	var sent strings.Builder
	for ev := range ch {
		sent.WriteString(ev.Text)
		if strings.Contains(sent.String(), " named") {
			t.Errorf("sent %q before knowing it is not the stop string", sent.String())
		}
		if ev.Done && (ev.FinishReason != "stop" || ev.Err != nil) {
			t.Errorf("finish %q, err %v; want stop", ev.FinishReason, ev.Err)
		}
	}
	if sent.String() != full[:cut] {
		t.Errorf("text with stop: %q, want %q", sent.String(), full[:cut])
	}
	// A stop string that never completes: everything is sent in the end.
	text, last := run(t, s, Request{Prompt: prompt, MaxTokens: 40, Stop: []string{" named LilyXYZ"}})
	if text != full || last.FinishReason != "length" {
		t.Errorf("with an incomplete stop string: %q (%s), want %q (length)", text, last.FinishReason, full)
	}
}

// A cancelled request ends within a step and frees its slot and KV cells.
func TestCancelFreesSlot(t *testing.T) {
	m := testmodels.Load(t, testmodels.StoriesQ8)
	prompt := tokens(t, m, story)
	s := newScheduler(t, m, Config{Slots: 1})
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := s.Submit(ctx, Request{Prompt: prompt})
	if err != nil {
		t.Fatal(err)
	}
	<-ch // prefilled, generating
	if st := s.Stats(); st.Active != 1 {
		t.Fatalf("stats %+v, want 1 active", st)
	}
	cancel()
	_, last := drain(ch)
	if !errors.Is(last.Err, context.Canceled) {
		t.Fatalf("last event error %v, want context.Canceled", last.Err)
	}
	if st := s.Stats(); st.Active != 0 {
		t.Errorf("stats %+v after cancel, want 0 active", st)
	}
	if pos, err := s.lc.SeqPosMax(0); err != nil || pos != -1 {
		t.Errorf("sequence 0 holds positions up to %d (err %v), want empty", pos, err)
	}
	want := predict(t, m, prompt, nil, 20)
	if text, _ := run(t, s, Request{Prompt: prompt, MaxTokens: 20}); text != want.Text {
		t.Errorf("after a cancel: %q, want %q", text, want.Text)
	}
}

// The queue is bounded; a cancelled queued request leaves the queue.
func TestQueue(t *testing.T) {
	m := testmodels.Load(t, testmodels.StoriesQ8)
	prompt := tokens(t, m, story)
	s := newScheduler(t, m, Config{Slots: 1, Queue: 1})
	ctxA, cancelA := context.WithCancel(context.Background())
	defer cancelA()
	a, err := s.Submit(ctxA, Request{Prompt: prompt})
	if err != nil {
		t.Fatal(err)
	}
	<-a
	ctxB, cancelB := context.WithCancel(context.Background())
	b, err := s.Submit(ctxB, Request{Prompt: prompt})
	if err != nil {
		t.Fatalf("second request, to wait in the queue: %v", err)
	}
	if _, err := s.Submit(context.Background(), Request{Prompt: prompt}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third request: error %v, want ErrQueueFull", err)
	}
	if st := s.Stats(); st.Active != 1 || st.Queued != 1 {
		t.Errorf("stats %+v, want 1 active and 1 queued", st)
	}
	cancelB()
	if _, last := drain(b); !errors.Is(last.Err, context.Canceled) || last.CompletionTokens != 0 {
		t.Errorf("queued request after cancel: %+v, want context.Canceled and no tokens", last)
	}
	if st := s.Stats(); st.Queued != 0 {
		t.Errorf("stats %+v, want an empty queue", st)
	}
	cancelA()
	drain(a)
}

func TestRefusals(t *testing.T) {
	m := testmodels.Load(t, testmodels.StoriesQ8)
	adapter := servetest.LoadAdapters(t, m, 1)[0]
	const slotCtx = 32
	s := newScheduler(t, m, Config{Slots: 1, SlotContext: slotCtx})
	long := make([]bridge.Token, slotCtx)
	for i := range long {
		long[i] = 100 + bridge.Token(i)
	}
	ok := tokens(t, m, story)
	for _, c := range []struct {
		name string
		r    Request
		want error
	}{
		{"empty prompt", Request{}, ErrInvalid},
		{"negative max tokens", Request{Prompt: ok, MaxTokens: -1}, ErrInvalid},
		{"bad temperature", Request{Prompt: ok, Sampling: bridge.SamplerParams{Temperature: -1}}, ErrInvalid},
		{"empty stop string", Request{Prompt: ok, Stop: []string{"a", ""}}, ErrInvalid},
		{"prompt fills the slot", Request{Prompt: long}, ErrTooLong},
		{"soft tokens count", Request{Prompt: long[:slotCtx-4], Adapter: adapter}, ErrTooLong},
	} {
		if _, err := s.Submit(context.Background(), c.r); !errors.Is(err, c.want) {
			t.Errorf("%s: error %v, want %v", c.name, err, c.want)
		}
	}
	// Room for exactly one token.
	if _, last := run(t, s, Request{Prompt: long[:slotCtx-5], Adapter: adapter}); last.CompletionTokens != 1 || last.FinishReason != "length" {
		t.Errorf("prompt leaving one token: %+v, want 1 token, length", last)
	}
}

// max tokens beyond the slot's room are clamped to it.
func TestMaxTokensClamped(t *testing.T) {
	m := testmodels.Load(t, testmodels.StoriesQ8)
	prompt := tokens(t, m, story)
	const slotCtx = 32
	s := newScheduler(t, m, Config{Slots: 1, SlotContext: slotCtx})
	_, last := run(t, s, Request{Prompt: prompt, MaxTokens: 100000})
	if last.FinishReason != "length" || last.CompletionTokens != slotCtx-len(prompt) {
		t.Errorf("finish %q after %d tokens, want length after %d", last.FinishReason, last.CompletionTokens, slotCtx-len(prompt))
	}
}

func TestShutdown(t *testing.T) {
	m := testmodels.Load(t, testmodels.StoriesQ8)
	prompt := tokens(t, m, story)

	// Graceful: the in-flight request finishes normally.
	s, err := New(m, Config{Slots: 1, Threads: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := s.Submit(context.Background(), Request{Prompt: prompt, MaxTokens: 30})
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, last := drain(ch); last.Err != nil || last.CompletionTokens != 30 {
		t.Errorf("in-flight request during a graceful shutdown: %+v", last)
	}
	if _, err := s.Submit(context.Background(), Request{Prompt: prompt}); !errors.Is(err, ErrClosed) {
		t.Errorf("submit after shutdown: %v, want ErrClosed", err)
	}

	// Past the deadline: the generation is cancelled.
	s, err = New(m, Config{Slots: 1, Threads: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch, err = s.Submit(context.Background(), Request{Prompt: prompt})
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("forced shutdown: %v, want context.DeadlineExceeded", err)
	}
	if _, last := drain(ch); !errors.Is(last.Err, ErrClosed) {
		t.Errorf("request cancelled by shutdown: %+v, want ErrClosed", last)
	}
}
