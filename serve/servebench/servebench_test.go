package servebench

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iapt-go/iapt/adapterfile"
	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/internal/testmodels"
	"github.com/iapt-go/iapt/serve/servetest"
)

func TestResult(t *testing.T) {
	var r Result
	if r.TTFTPercentile(50) != 0 || r.TokensPerSecond() != 0 {
		t.Errorf("empty result: %v, %v", r.TTFTPercentile(50), r.TokensPerSecond())
	}
	for i := 1; i <= 10; i++ {
		r.Add(Result{Requests: 1, Tokens: 10, Wall: 100 * time.Millisecond, TTFT: []time.Duration{time.Duration(11-i) * time.Millisecond}})
	}
	if r.Requests != 10 || r.Tokens != 100 || r.TokensPerSecond() != 100 {
		t.Errorf("sum %+v: %v tok/s, want 10 requests, 100 tokens, 100 tok/s", r, r.TokensPerSecond())
	}
	for p, want := range map[float64]time.Duration{50: 5 * time.Millisecond, 95: 10 * time.Millisecond, 10: time.Millisecond, 100: 10 * time.Millisecond} {
		if got := r.TTFTPercentile(p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
}

// fakeServer streams three text chunks and a usage chunk per request,
// after a delay before the first.
func fakeServer(t *testing.T, delay time.Duration) (*httptest.Server, *atomic.Int32) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/completions" || r.Header.Get("Authorization") != "Bearer k" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		requests.Add(1)
		time.Sleep(delay)
		for _, data := range []string{`{"choices":[{"text":""}]}`, `{"choices":[{"text":"a"}]}`, `{"choices":[{"text":"b"}]}`,
			`{"choices":[],"usage":{"completion_tokens":7}}`, `[DONE]`} {
			fmt.Fprintf(w, "data: %s\n\n", data)
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &requests
}

func TestLoad(t *testing.T) {
	srv, requests := fakeServer(t, 20*time.Millisecond)
	res, err := Load(context.Background(), LoadConfig{URL: srv.URL + "/", APIKey: "k", Models: []string{"m", "m", "m"}, Rounds: 2, Prompt: "x", MaxTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 6 || res.Tokens != 42 || requests.Load() != 6 || len(res.TTFT) != 6 {
		t.Errorf("result %+v after %d requests, want 6 requests of 7 tokens", res, requests.Load())
	}
	if p := res.TTFTPercentile(50); p < 20*time.Millisecond {
		t.Errorf("TTFT p50 %v, shorter than the server's delay", p)
	}
	if _, err := Load(context.Background(), LoadConfig{URL: srv.URL, Models: []string{"m"}, Rounds: 1, Prompt: "x", MaxTokens: 8}); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("without the key: %v, want a 400 error", err)
	}
}

func TestDirect(t *testing.T) {
	m := testmodels.Load(t, testmodels.StoriesQ8)
	prompt, err := m.Tokenize("Once upon a time", true, false)
	if err != nil {
		t.Fatal(err)
	}
	c := DirectConfig{Prompt: prompt, Tokens: 8, Rounds: 2, Threads: 1}
	adapters := append([]*bridge.Adapter{nil}, servetest.LoadAdapters(t, m, 2)...)
	res, err := Raw(m, adapters, c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 6 || res.Tokens != 48 || len(res.TTFT) != 6 || res.Wall <= 0 {
		t.Errorf("raw: %+v, want 6 requests of 8 tokens", res)
	}
	info := m.Info()
	var loras []*bridge.LoRA
	for i := range 2 {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("l%d.gguf", i))
		cfg := adapterfile.LoRAConfig{Arch: info.Architecture, Embd: info.Embd, Layers: info.Layers, Rank: 4, Targets: []string{"attn_q", "attn_v"}, Alpha: 4}
		if err := adapterfile.WriteRandomLoRA(path, cfg, int64(i), 0.05); err != nil {
			t.Fatal(err)
		}
		l, err := m.LoadLoRA(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Close)
		loras = append(loras, l)
	}
	res, err = LoRASerial(m, loras, c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 4 || res.Tokens != 32 || len(res.TTFT) != 4 {
		t.Errorf("LoRA: %+v, want 4 requests of 8 tokens", res)
	}
	// The second client waits for the first one's request.
	if res.TTFT[1] <= res.TTFT[0] {
		t.Errorf("LoRA TTFTs %v: the second request did not wait for the first", res.TTFT)
	}
	if _, err := Raw(m, nil, c); err == nil {
		t.Errorf("Raw without sequences: no error")
	}
}
