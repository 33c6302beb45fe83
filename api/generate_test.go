package api_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iapt-go/iapt/api"
	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/prompt"
	"github.com/openai/openai-go/v3"
)

const (
	system = "You tell short stories."
	user   = "Once upon a time"
)

func chatParams(model string, maxTokens int64) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:       model,
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.SystemMessage(system), openai.UserMessage(user)},
		MaxTokens:   openai.Int(maxTokens),
		Temperature: openai.Float(0),
	}
}

// streamChat runs a streaming chat completion and returns the text, the
// finish reason and the usage chunk's counts (-1 when absent).
func (s *testServer) streamChat(t *testing.T, ctx context.Context, p openai.ChatCompletionNewParams) (string, string, int64, int64) {
	t.Helper()
	stream := s.client.Chat.Completions.NewStreaming(ctx, p)
	defer stream.Close()
	var text strings.Builder
	finish, prompt, completion := "", int64(-1), int64(-1)
	for stream.Next() {
		c := stream.Current()
		for _, ch := range c.Choices {
			text.WriteString(ch.Delta.Content)
			if ch.FinishReason != "" {
				finish = ch.FinishReason
			}
		}
		if c.JSON.Usage.Valid() && len(c.Choices) == 0 {
			prompt, completion = c.Usage.PromptTokens, c.Usage.CompletionTokens
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	return text.String(), finish, prompt, completion
}

func countTokens(t *testing.T, m *bridge.Model, text string, special bool) int64 {
	t.Helper()
	toks, err := m.Tokenize(text, true, special)
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(toks))
}

func TestChat(t *testing.T) {
	s := start(t, options{})
	ctx := context.Background()
	resp, err := s.client.Chat.Completions.New(ctx, chatParams(base, 24))
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := prompt.Render(prompt.DefaultTemplate, []bridge.ChatMessage{{Role: "system", Content: system}, {Role: "user", Content: user}})
	if err != nil {
		t.Fatal(err)
	}
	wantPrompt := countTokens(t, s.model, rendered, false)
	if len(resp.Choices) != 1 || resp.Choices[0].Message.Content == "" || resp.Choices[0].FinishReason != "length" ||
		resp.Choices[0].Message.Role != "assistant" || resp.Object != "chat.completion" || resp.Model != base {
		t.Fatalf("response %+v", resp)
	}
	if u := resp.Usage; u.PromptTokens != wantPrompt || u.CompletionTokens != 24 || u.TotalTokens != wantPrompt+24 {
		t.Errorf("usage %+v, want %d prompt + 24 completion tokens", u, wantPrompt)
	}
	p := chatParams(base, 24)
	p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	text, finish, prompt, completion := s.streamChat(t, ctx, p)
	if text != resp.Choices[0].Message.Content || finish != "length" || prompt != wantPrompt || completion != 24 {
		t.Errorf("streamed %q (%s, %d+%d tokens), want %q (length, %d+24)", text, finish, prompt, completion,
			resp.Choices[0].Message.Content, wantPrompt)
	}
	// Without include_usage there is no usage chunk.
	if _, _, prompt, _ := s.streamChat(t, ctx, chatParams(base, 4)); prompt != -1 {
		t.Errorf("usage chunk sent without include_usage")
	}
}

func TestCompletions(t *testing.T) {
	s := start(t, options{})
	ctx := context.Background()
	p := openai.CompletionNewParams{
		Model:       base,
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String(user)},
		MaxTokens:   openai.Int(20),
		Temperature: openai.Float(0),
	}
	resp, err := s.client.Completions.New(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	want := countTokens(t, s.model, user, false)
	if len(resp.Choices) != 1 || !strings.HasPrefix(resp.Choices[0].Text, ",") || resp.Choices[0].FinishReason != "length" ||
		resp.Usage.PromptTokens != want || resp.Usage.CompletionTokens != 20 {
		t.Fatalf("completion %+v, want a story after %q, 20 tokens", resp, user)
	}
	p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := s.client.Completions.NewStreaming(ctx, p)
	var text strings.Builder
	finish, usage := "", int64(-1)
	for stream.Next() {
		c := stream.Current()
		for _, ch := range c.Choices {
			text.WriteString(ch.Text)
			finish += string(ch.FinishReason)
		}
		if len(c.Choices) == 0 {
			usage = c.Usage.CompletionTokens
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != resp.Choices[0].Text || finish != "length" || usage != 20 {
		t.Errorf("streamed %q (%q, %d tokens), want %q (length, 20)", text.String(), finish, usage, resp.Choices[0].Text)
	}
}

func TestStop(t *testing.T) {
	s := start(t, options{})
	ctx := context.Background()
	full, err := s.client.Chat.Completions.New(ctx, chatParams(base, 40))
	if err != nil {
		t.Fatal(err)
	}
	text := full.Choices[0].Message.Content
	// A stop string of several tokens, in the middle of the text.
	words := strings.Fields(text)
	if len(words) < 8 {
		t.Fatalf("greedy text %q is too short", text)
	}
	stop := " " + words[4] + " " + words[5]
	cut := strings.Index(text, stop)
	p := chatParams(base, 40)
	p.Stop = openai.ChatCompletionNewParamsStopUnion{OfStringArray: []string{"@@@", stop}}
	resp, err := s.client.Chat.Completions.New(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Choices[0]; got.Message.Content != text[:cut] || got.FinishReason != "stop" {
		t.Errorf("with stop %q: %q (%s), want %q (stop)", stop, got.Message.Content, got.FinishReason, text[:cut])
	}
	p.Stop = openai.ChatCompletionNewParamsStopUnion{OfString: openai.String(stop)}
	if streamed, finish, _, _ := s.streamChat(t, ctx, p); streamed != text[:cut] || finish != "stop" {
		t.Errorf("streamed with stop %q: %q (%s), want %q (stop)", stop, streamed, finish, text[:cut])
	}
}

func TestSeed(t *testing.T) {
	s := start(t, options{})
	ctx := context.Background()
	gen := func(seed int64) string {
		p := chatParams(base, 40)
		p.Temperature = openai.Float(0.8)
		p.Seed = openai.Int(seed)
		resp, err := s.client.Chat.Completions.New(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Choices[0].Message.Content
	}
	a, b, c := gen(7), gen(7), gen(8)
	if a != b {
		t.Errorf("seed 7 twice: %q and %q", a, b)
	}
	if a == c {
		t.Errorf("seeds 7 and 8 give the same text %q: is the seed used?", a)
	}
}

// Four streams on four adapters, decoded together, give exactly what each
// gives alone.
func TestMultiTenant(t *testing.T) {
	s := start(t, options{adapters: 4})
	ctx := context.Background()
	models := []string{base + ":a0", base + ":a1", base + ":a2", base + ":a3"}
	alone := make([]string, len(models))
	for i, m := range models {
		alone[i], _, _, _ = s.streamChat(t, ctx, chatParams(m, 48))
		for j := range i {
			if alone[i] == alone[j] {
				t.Fatalf("%s and %s give the same text %q: the test would prove nothing", models[j], models[i], alone[i])
			}
		}
	}
	together := make([]string, len(models))
	var wg sync.WaitGroup
	for i, m := range models {
		wg.Go(func() { together[i], _, _, _ = s.streamChat(t, ctx, chatParams(m, 48)) })
	}
	wg.Wait()
	for i := range models {
		if together[i] != alone[i] {
			t.Errorf("%s batched: %q, alone: %q", models[i], together[i], alone[i])
		}
	}
	if got := s.metric(t, "iapt_decode_batch_size_count"); got == 0 {
		t.Errorf("no decode step recorded")
	}
}

// The adapter's stored template renders the conversation; without one the
// default instruction template applies.
func TestPromptTemplate(t *testing.T) {
	s := start(t, options{adapters: 1, meta: map[string]string{"adapter.iapt.prompt_template": "chatml"}})
	msgs := []bridge.ChatMessage{{Role: "system", Content: system}, {Role: "user", Content: user}}
	rendered, err := bridge.RenderChatTemplate("chatml", msgs, true)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.client.Chat.Completions.New(context.Background(), chatParams(base+":a0", 2))
	if err != nil {
		t.Fatal(err)
	}
	if want := countTokens(t, s.model, rendered, true); resp.Usage.PromptTokens != want {
		t.Errorf("prompt tokens %d, want %d (chatml: %q)", resp.Usage.PromptTokens, want, rendered)
	}
}

// openStream starts a raw streaming completion and returns its reader once
// the first text arrived; cancel drops the connection.
func (s *testServer) openStream(t *testing.T, model string) (*bufio.Reader, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	body := fmt.Sprintf(`{"model":%q,"prompt":%q,"temperature":0,"stream":true}`, model, user)
	req, err := http.NewRequestWithContext(ctx, "POST", s.url+"/v1/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream status %d", resp.StatusCode)
	}
	r := bufio.NewReader(resp.Body)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: {") {
		t.Fatalf("first line %q, %v", line, err)
	}
	return r, func() { cancel(); resp.Body.Close() }
}

// A client that disconnects mid-stream frees its slot.
func TestCancellation(t *testing.T) {
	s := start(t, options{slots: 1})
	_, cancel := s.openStream(t, base)
	if got := s.metric(t, "iapt_active_sequences"); got != 1 {
		t.Fatalf("iapt_active_sequences = %v during the stream, want 1", got)
	}
	cancel()
	eventually(t, "the slot to be freed", func() bool {
		return s.metric(t, "iapt_active_sequences") == 0 &&
			s.metric(t, `iapt_generations_total{model="`+base+`",outcome="cancelled"}`) == 1
	})
	if st := s.sched.Stats(); st.Active != 0 {
		t.Errorf("scheduler stats %+v", st)
	}
	if _, err := s.client.Chat.Completions.New(context.Background(), chatParams(base, 4)); err != nil {
		t.Errorf("request after a cancel: %v", err)
	}
}

// Beyond the queue's bound: 429 with Retry-After.
func TestQueueFull(t *testing.T) {
	s := start(t, options{slots: 1, queue: 1})
	_, cancelA := s.openStream(t, base)
	defer cancelA()
	ctxB, cancelB := context.WithCancel(context.Background())
	defer cancelB()
	queued := make(chan error, 1)
	go func() {
		_, err := s.client.Chat.Completions.New(ctxB, chatParams(base, 4))
		queued <- err
	}()
	eventually(t, "a queued request", func() bool { return s.sched.Stats().Queued == 1 })
	r := s.do(t, "POST", "/v1/chat/completions", `{"model":"`+base+`","messages":[{"role":"user","content":"hi"}]}`, "")
	wantError(t, "third request", r, http.StatusTooManyRequests, "", "queue_full")
	if r.header.Get("Retry-After") == "" {
		t.Errorf("429 without Retry-After")
	}
	cancelB()
	if err := <-queued; err == nil {
		t.Errorf("cancelled queued request succeeded")
	}
	eventually(t, "an empty queue", func() bool { return s.sched.Stats().Queued == 0 })
}

func TestTimeout(t *testing.T) {
	s := start(t, options{cfg: api.Config{RequestTimeout: 30 * time.Millisecond}})
	r := s.do(t, "POST", "/v1/completions", `{"model":"`+base+`","prompt":"Once","max_tokens":250}`, "")
	wantError(t, "timed out request", r, http.StatusGatewayTimeout, "", "timeout")
	eventually(t, "the slot to be freed", func() bool { return s.sched.Stats().Active == 0 })
	// Streaming: the stream has begun, so the error comes as an event.
	p := chatParams(base, 250)
	stream := s.client.Chat.Completions.NewStreaming(context.Background(), p)
	defer stream.Close()
	chunks := 0
	for stream.Next() {
		chunks++
	}
	if err := stream.Err(); err == nil || !strings.Contains(err.Error(), "timed out") || chunks == 0 {
		t.Errorf("stream after %d chunks: error %v, want one about the timeout", chunks, err)
	}
	eventually(t, "the slot to be freed", func() bool { return s.sched.Stats().Active == 0 })
}
