package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/iapt-go/iapt/api"
	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/internal/testmodels"
	"github.com/iapt-go/iapt/serve"
	"github.com/iapt-go/iapt/serve/metrics"
	"github.com/iapt-go/iapt/serve/registry"
	"github.com/iapt-go/iapt/serve/servetest"
)

// base is the base model's id in the tests.
const base = "stories15M-q8_0"

// options configure a test server.
type options struct {
	slots, queue, slotCtx int
	// adapters are written as a0.. (seeds 1..) and loaded at start; meta
	// goes into every one of them.
	adapters int
	meta     map[string]string
	cfg      api.Config
}

// testServer is a real server on a loopback port.
type testServer struct {
	url    string // http://127.0.0.1:port
	model  *bridge.Model
	dir    string // adapters folder
	sched  *serve.Scheduler
	client openai.Client
}

func start(t *testing.T, o options) *testServer {
	t.Helper()
	m := testmodels.Load(t, testmodels.StoriesQ8)
	dir := t.TempDir()
	for i := range o.adapters {
		servetest.WriteAdapter(t, m, dir, fmt.Sprintf("a%d", i), int64(i+1), o.meta)
	}
	met := metrics.New()
	sched, err := serve.New(m, serve.Config{Slots: o.slots, Queue: o.queue, SlotContext: o.slotCtx, Threads: 1}, met)
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(m, dir, func(n int) { met.AdaptersLoaded.Set(float64(n)) })
	if _, err := reg.LoadDir(); err != nil {
		t.Fatal(err)
	}
	cfg := o.cfg
	cfg.ModelID = base
	srv := api.New(cfg, met)
	srv.Ready(&api.Backend{Model: m, Scheduler: sched, Adapters: reg})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := hs.Shutdown(ctx); err != nil {
			t.Errorf("http shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
		if err := sched.Shutdown(ctx); err != nil {
			t.Errorf("scheduler shutdown: %v", err)
		}
		reg.Close()
	})
	url := "http://" + ln.Addr().String()
	key := "none"
	if len(cfg.APIKeys) > 0 {
		key = cfg.APIKeys[0]
	}
	client := openai.NewClient(option.WithBaseURL(url+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0))
	return &testServer{url: url, model: m, dir: dir, sched: sched, client: client}
}

// httpResult is a raw HTTP response.
type httpResult struct {
	status int
	header http.Header
	body   []byte
}

// do sends a raw request; key "" sends no Authorization header.
func (s *testServer) do(t *testing.T, method, path, body, key string) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return httpResult{resp.StatusCode, resp.Header, data}
}

// errorShape is OpenAI's error body.
type errorShape struct {
	Error *struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// wantError checks an error response's status, param and code ("" for
// JSON null) and that it has a message and a type.
func wantError(t *testing.T, what string, r httpResult, status int, param, code string) {
	t.Helper()
	var e errorShape
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == nil {
		t.Errorf("%s: body %s is not an OpenAI error (%v)", what, r.body, err)
		return
	}
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	if r.status != status || str(e.Error.Param) != param || str(e.Error.Code) != code || e.Error.Message == "" || e.Error.Type == "" {
		t.Errorf("%s: status %d, param %q, code %q, error %+v; want status %d, param %q, code %q",
			what, r.status, str(e.Error.Param), str(e.Error.Code), *e.Error, status, param, code)
	}
}

// metric reads an unlabelled sample, or a labelled one given as
// `name{label="value",...}`, from /metrics.
func (s *testServer) metric(t *testing.T, sample string) float64 {
	t.Helper()
	r := s.do(t, "GET", "/metrics", "", "")
	sc := bufio.NewScanner(strings.NewReader(string(r.body)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", sample, err)
			}
			return f
		}
	}
	return 0
}

// eventually polls cond every 10 ms for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// statusOf returns the HTTP status of an SDK error, or 0.
func statusOf(err error) int {
	var e *openai.Error
	if errors.As(err, &e) {
		return e.StatusCode
	}
	return 0
}

func TestNotReady(t *testing.T) {
	srv := api.New(api.Config{ModelID: base}, metrics.New())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	defer hs.Close()
	s := &testServer{url: "http://" + ln.Addr().String()}
	if r := s.do(t, "GET", "/health", "", ""); r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "loading") {
		t.Errorf("/health while loading: %d %s", r.status, r.body)
	}
	wantError(t, "models while loading", s.do(t, "GET", "/v1/models", "", ""), http.StatusServiceUnavailable, "", "loading")
}

func TestModelsAndHealth(t *testing.T) {
	s := start(t, options{adapters: 2})
	ctx := context.Background()
	page, err := s.client.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
	}
	if want := []string{base, base + ":a0", base + ":a1"}; fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Errorf("models %v, want %v", ids, want)
	}
	if m, err := s.client.Models.Get(ctx, base+":a1"); err != nil || m.ID != base+":a1" || m.OwnedBy != "iapt" {
		t.Errorf("get model: %+v, %v", m, err)
	}
	if _, err := s.client.Models.Get(ctx, base+":nope"); statusOf(err) != http.StatusNotFound {
		t.Errorf("get unknown model: %v, want 404", err)
	}
	r := s.do(t, "GET", "/health", "", "")
	var h struct {
		Status string
		Slots  int
	}
	if err := json.Unmarshal(r.body, &h); err != nil || r.status != http.StatusOK || h.Status != "ok" || h.Slots != 4 {
		t.Errorf("/health: %d %s", r.status, r.body)
	}
	if got := s.metric(t, "iapt_adapters_loaded"); got != 2 {
		t.Errorf("iapt_adapters_loaded = %v, want 2", got)
	}
	wantError(t, "unknown route", s.do(t, "GET", "/v1/nothing", "", ""), http.StatusNotFound, "", "not_found")
}
