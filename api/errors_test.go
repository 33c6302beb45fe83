package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/iapt-go/iapt/api"
)

// Bad requests get the right status and an OpenAI error naming the field,
// and the server keeps serving.
func TestBadInput(t *testing.T) {
	s := start(t, options{adapters: 1})
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	long := strings.Repeat("hello ", 300)
	for _, c := range []struct {
		name, path, body string
		status           int
		param, code      string
	}{
		{"malformed JSON", "/v1/chat/completions", `{"model":`, 400, "", ""},
		{"not an object", "/v1/chat/completions", `[1,2]`, 400, "", ""},
		{"max_tokens string", "/v1/chat/completions", `{"model":"` + base + `",` + msgs + `,"max_tokens":"ten"}`, 400, "max_tokens", ""},
		{"temperature string", "/v1/chat/completions", `{"model":"` + base + `",` + msgs + `,"temperature":"hot"}`, 400, "temperature", ""},
		{"messages string", "/v1/chat/completions", `{"model":"` + base + `","messages":"hi"}`, 400, "messages", ""},
		{"content number", "/v1/chat/completions", `{"model":"` + base + `","messages":[{"role":"user","content":5}]}`, 400, "messages[0].content", ""},
		{"unknown role", "/v1/chat/completions", `{"model":"` + base + `","messages":[{"role":"robot","content":"x"}]}`, 400, "messages[0].role", ""},
		{"image part", "/v1/chat/completions", `{"model":"` + base + `","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, 400, "messages[0].content[0]", ""},
		{"stop number", "/v1/chat/completions", `{"model":"` + base + `",` + msgs + `,"stop":5}`, 400, "stop", ""},
		{"five stops", "/v1/chat/completions", `{"model":"` + base + `",` + msgs + `,"stop":["a","b","c","d","e"]}`, 400, "stop", ""},
		{"missing model", "/v1/chat/completions", `{` + msgs + `}`, 400, "model", ""},
		{"unknown model", "/v1/chat/completions", `{"model":"gpt-4",` + msgs + `}`, 404, "model", "model_not_found"},
		{"unknown adapter", "/v1/chat/completions", `{"model":"` + base + `:zz",` + msgs + `}`, 404, "model", "model_not_found"},
		{"negative max_tokens", "/v1/chat/completions", `{"model":"` + base + `",` + msgs + `,"max_tokens":-5}`, 400, "max_tokens", ""},
		{"zero max_completion_tokens", "/v1/chat/completions", `{"model":"` + base + `",` + msgs + `,"max_completion_tokens":0}`, 400, "max_completion_tokens", ""},
		{"temperature 3", "/v1/chat/completions", `{"model":"` + base + `",` + msgs + `,"temperature":3}`, 400, "temperature", ""},
		{"top_p 2", "/v1/chat/completions", `{"model":"` + base + `",` + msgs + `,"top_p":2}`, 400, "top_p", ""},
		{"presence_penalty 5", "/v1/chat/completions", `{"model":"` + base + `",` + msgs + `,"presence_penalty":5}`, 400, "presence_penalty", ""},
		{"n=2", "/v1/chat/completions", `{"model":"` + base + `",` + msgs + `,"n":2}`, 400, "n", ""},
		{"tools", "/v1/chat/completions", `{"model":"` + base + `",` + msgs + `,"tools":[{"type":"function"}]}`, 400, "tools", ""},
		{"empty messages", "/v1/chat/completions", `{"model":"` + base + `","messages":[]}`, 400, "messages", ""},
		{"chat over the context", "/v1/chat/completions", `{"model":"` + base + `:a0","messages":[{"role":"user","content":"` + long + `"}]}`, 400, "messages", "context_length_exceeded"},
		{"prompt over the context", "/v1/completions", `{"model":"` + base + `","prompt":"` + long + `"}`, 400, "prompt", "context_length_exceeded"},
		{"missing prompt", "/v1/completions", `{"model":"` + base + `"}`, 400, "prompt", ""},
		{"prompt number", "/v1/completions", `{"model":"` + base + `","prompt":5}`, 400, "prompt", ""},
		{"two prompts", "/v1/completions", `{"model":"` + base + `","prompt":["a","b"]}`, 400, "prompt", ""},
		{"echo", "/v1/completions", `{"model":"` + base + `","prompt":"a","echo":true}`, 400, "echo", ""},
		{"wrong method", "/v1/completions", ``, 405, "", "method_not_allowed"},
	} {
		method := "POST"
		if c.status == 405 {
			method = "GET"
		}
		wantError(t, c.name, s.do(t, method, c.path, c.body, ""), c.status, c.param, c.code)
	}
	// Huge max_tokens is clamped to the context: the completion fills it.
	r := s.do(t, "POST", "/v1/completions", `{"model":"`+base+`","prompt":"Once upon a time","max_tokens":1000000000,"temperature":0}`, "")
	var resp struct {
		Choices []struct {
			FinishReason string `json:"finish_reason"`
		}
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	if err := json.Unmarshal(r.body, &resp); err != nil || r.status != 200 || len(resp.Choices) != 1 {
		t.Fatalf("huge max_tokens: %d %s", r.status, r.body)
	}
	// Greedy, this story does not end before the context does.
	if fr := resp.Choices[0].FinishReason; fr != "length" || resp.Usage.PromptTokens+resp.Usage.CompletionTokens != 256 {
		t.Errorf("huge max_tokens: %s after %+v, want length with the 256-token context filled", fr, resp.Usage)
	}
	if _, err := s.client.Chat.Completions.New(context.Background(), chatParams(base, 4)); err != nil {
		t.Errorf("the server stopped serving: %v", err)
	}
}

func TestAuth(t *testing.T) {
	s := start(t, options{cfg: api.Config{APIKeys: []string{"k1", "k2"}, AdminKey: "adm"}})
	list := func(key string) httpResult { return s.do(t, "GET", "/v1/models", "", key) }
	wantError(t, "no key", list(""), http.StatusUnauthorized, "", "invalid_api_key")
	wantError(t, "wrong key", list("k3"), http.StatusUnauthorized, "", "invalid_api_key")
	for _, key := range []string{"k1", "k2", "adm"} {
		if r := list(key); r.status != http.StatusOK {
			t.Errorf("key %s: %d %s", key, r.status, r.body)
		}
	}
	if r := s.do(t, "GET", "/health", "", ""); r.status != http.StatusOK {
		t.Errorf("/health needs no key: %d", r.status)
	}
	// The SDK client of start() sends k1.
	if _, err := s.client.Chat.Completions.New(context.Background(), chatParams(base, 2)); err != nil {
		t.Errorf("SDK with a key: %v", err)
	}
	load := `{"path":"` + writeAdapter(t, s, "x") + `"}`
	wantError(t, "load with an API key", s.do(t, "POST", "/v1/adapters", load, "k1"), http.StatusForbidden, "", "admin_key_required")
	if r := s.do(t, "POST", "/v1/adapters", load, "adm"); r.status != http.StatusCreated {
		t.Errorf("load with the admin key: %d %s", r.status, r.body)
	}
	wantError(t, "delete with an API key", s.do(t, "DELETE", "/v1/adapters/x", "", "k2"), http.StatusForbidden, "", "admin_key_required")
	if r := s.do(t, "DELETE", "/v1/adapters/x", "", "adm"); r.status != http.StatusOK {
		t.Errorf("delete with the admin key: %d %s", r.status, r.body)
	}
}
