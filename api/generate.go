package api

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/iapt-go/iapt/prompt"
	"github.com/iapt-go/iapt/serve"
)

// usage is the token accounting of a response.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// message is a chat message or a streamed delta of one.
type message struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

// choice is a choice of a response or a chunk: Message (chat), Delta (chat
// chunk) or Text (completions).
type choice struct {
	Index        int       `json:"index"`
	Message      *message  `json:"message,omitempty"`
	Delta        *message  `json:"delta,omitempty"`
	Text         *string   `json:"text,omitempty"`
	FinishReason *string   `json:"finish_reason"`
	Logprobs     *struct{} `json:"logprobs"` // always null
}

// response is a (chat) completion or one chunk of its stream.
type response struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []choice `json:"choices"`
	Usage   *usage   `json:"usage,omitempty"`
}

// reply builds the responses of one request.
type reply struct {
	chat bool
	base response
}

func newReply(chat bool, model string) *reply {
	prefix, object := "cmpl-", "text_completion"
	if chat {
		prefix, object = "chatcmpl-", "chat.completion"
	}
	id := fmt.Sprintf("%s%016x%08x", prefix, rand.Uint64(), rand.Uint32())
	return &reply{chat: chat, base: response{ID: id, Object: object, Created: time.Now().Unix(), Model: model}}
}

// choice is the only choice, holding text (nil: none) and a finish reason
// ("" while streaming).
func (r *reply) choice(text *string, finish string, stream bool) response {
	out := r.base
	ch := choice{}
	if finish != "" {
		ch.FinishReason = &finish
	}
	switch {
	case !r.chat:
		if text == nil {
			text = new(string)
		}
		ch.Text = text
	case stream:
		ch.Delta = &message{Content: text}
	default:
		ch.Message = &message{Role: "assistant", Content: text}
	}
	if stream && r.chat {
		out.Object = "chat.completion.chunk"
	}
	out.Choices = []choice{ch}
	return out
}

func (s *Server) chatCompletions(c *gin.Context) {
	r, e := readRequest(c)
	if e == nil {
		var g generation
		if g, e = r.chat(); e == nil {
			s.generate(c, g, true)
			return
		}
	}
	abort(c, e)
}

func (s *Server) completions(c *gin.Context) {
	r, e := readRequest(c)
	if e == nil {
		var g generation
		if g, e = r.completion(); e == nil {
			s.generate(c, g, false)
			return
		}
	}
	abort(c, e)
}

// generate renders and tokenizes the prompt, submits it, and answers with
// one JSON response or a stream of server-sent events.
func (s *Server) generate(c *gin.Context, g generation, chat bool) {
	b := s.backend.Load()
	lease, e := s.resolve(b, g.model)
	if e != nil {
		abort(c, e)
		return
	}
	c.Set(modelKey, g.model)
	req := serve.Request{Model: g.model, Sampling: g.sampling, MaxTokens: g.maxTokens, Stop: g.stop}
	template := ""
	if lease != nil {
		// Released when the scheduler is done: the handler waits for the
		// event channel to close in every case.
		defer lease.Release()
		req.Adapter = lease.Adapter()
		template = lease.Info().Template
	}
	// Penalties look back over the whole slot, as OpenAI's do over the text.
	req.Sampling.PenaltyLastN = b.Scheduler.Config().SlotContext
	param, text, special := "prompt", g.prompt, false
	if chat {
		param = "messages"
		tmpl := prompt.Choose(template, b.Model.Info().ChatTemplate)
		// Special-token text of a chat template (e.g. "<|im_start|>") is
		// tokenized as special tokens; a simple template has none.
		special = !prompt.IsSimple(tmpl)
		var err error
		if text, err = prompt.Render(tmpl, g.messages); err != nil {
			abort(c, invalid(param, "rendering the messages: %v", err))
			return
		}
	}
	toks, err := b.Model.Tokenize(text, true, special)
	if err != nil {
		abort(c, invalid(param, "%v", err))
		return
	}
	req.Prompt = toks
	ctx := c.Request.Context()
	if s.cfg.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
	}
	events, err := b.Scheduler.Submit(ctx, req)
	if err != nil {
		abort(c, fromError(err, param))
		return
	}
	// The first event follows the prefill: errors until then get a status.
	first := <-events
	if first.Err != nil {
		abort(c, fromError(first.Err, param))
		return
	}
	rep := newReply(chat, g.model)
	if g.stream {
		s.stream(c, rep, first, events, param, g.includeUsage)
		return
	}
	var out strings.Builder
	ev := first
	for ; !ev.Done; ev = <-events {
		out.WriteString(ev.Text)
	}
	out.WriteString(ev.Text)
	if ev.Err != nil {
		abort(c, fromError(ev.Err, param))
		return
	}
	text = out.String()
	resp := rep.choice(&text, ev.FinishReason, false)
	resp.Usage = &usage{ev.PromptTokens, ev.CompletionTokens, ev.PromptTokens + ev.CompletionTokens}
	c.JSON(http.StatusOK, resp)
}

// sse writes server-sent events; after a failed write (the client is
// gone) it writes nothing more.
type sse struct {
	w      gin.ResponseWriter
	failed bool
}

func (w *sse) data(payload []byte) {
	if w.failed {
		return
	}
	if _, err := fmt.Fprintf(w.w, "data: %s\n\n", payload); err != nil {
		w.failed = true
		return
	}
	w.w.Flush()
}

func (w *sse) json(v any) {
	payload, err := json.Marshal(v)
	if err != nil {
		w.failed = true
		return
	}
	w.data(payload)
}

// stream sends the generation as chunks, then the finish chunk, the usage
// chunk if asked and "data: [DONE]"; a generation that ends in an error
// sends an error event instead. It reads events until the channel closes
// even when the client is gone (the scheduler stops within a step).
func (s *Server) stream(c *gin.Context, rep *reply, first serve.Event, events <-chan serve.Event, param string, includeUsage bool) {
	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	c.Status(http.StatusOK)
	w := &sse{w: c.Writer}
	if rep.chat {
		empty := ""
		head := rep.choice(&empty, "", true)
		head.Choices[0].Delta.Role = "assistant"
		w.json(head)
	}
	ev := first
	for {
		if ev.Text != "" {
			text := ev.Text
			w.json(rep.choice(&text, "", true))
		}
		if ev.Done {
			break
		}
		ev = <-events
	}
	if ev.Err != nil {
		w.json(errorBody(fromError(ev.Err, param)))
		return
	}
	w.json(rep.choice(nil, ev.FinishReason, true))
	if includeUsage {
		tail := rep.choice(nil, "", true)
		tail.Choices = []choice{}
		tail.Usage = &usage{ev.PromptTokens, ev.CompletionTokens, ev.PromptTokens + ev.CompletionTokens}
		w.json(tail)
	}
	w.data([]byte("[DONE]"))
}
