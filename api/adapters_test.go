package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iapt-go/iapt/serve/servetest"
)

// writeAdapter writes a random adapter <name>.iapt.gguf into the server's
// adapters folder (not loaded) and returns its file name.
func writeAdapter(t *testing.T, s *testServer, name string) string {
	t.Helper()
	return filepath.Base(servetest.WriteAdapter(t, s.model, s.dir, name, 42, nil))
}

type adapterList struct {
	Data []struct {
		ID         string `json:"id"`
		Name       string `json:"name"`
		SoftTokens int    `json:"soft_tokens"`
		InFlight   int    `json:"in_flight"`
	} `json:"data"`
}

func (s *testServer) adapters(t *testing.T) adapterList {
	t.Helper()
	r := s.do(t, "GET", "/v1/adapters", "", "")
	var l adapterList
	if err := json.Unmarshal(r.body, &l); err != nil || r.status != http.StatusOK {
		t.Fatalf("GET /v1/adapters: %d %s", r.status, r.body)
	}
	return l
}

func TestAdapterManagement(t *testing.T) {
	s := start(t, options{})
	ctx := context.Background()
	file := writeAdapter(t, s, "x")
	r := s.do(t, "POST", "/v1/adapters", `{"path":"`+file+`"}`, "")
	if r.status != http.StatusCreated || !strings.Contains(string(r.body), `"id":"`+base+`:x"`) {
		t.Fatalf("load: %d %s", r.status, r.body)
	}
	wantError(t, "load twice", s.do(t, "POST", "/v1/adapters", `{"path":"`+file+`"}`, ""), http.StatusConflict, "name", "adapter_exists")
	wantError(t, "bad name", s.do(t, "POST", "/v1/adapters", `{"name":"a/b","path":"`+file+`"}`, ""), http.StatusBadRequest, "name", "")
	wantError(t, "missing file", s.do(t, "POST", "/v1/adapters", `{"path":"nope.gguf"}`, ""), http.StatusBadRequest, "path", "")
	wantError(t, "no path", s.do(t, "POST", "/v1/adapters", `{"name":"y"}`, ""), http.StatusBadRequest, "path", "")
	wantError(t, "path number", s.do(t, "POST", "/v1/adapters", `{"path":1}`, ""), http.StatusBadRequest, "path", "")
	// The same file under a second name, by absolute path.
	abs := filepath.Join(s.dir, file)
	if r := s.do(t, "POST", "/v1/adapters", `{"name":"y","path":"`+abs+`"}`, ""); r.status != http.StatusCreated {
		t.Fatalf("load by absolute path: %d %s", r.status, r.body)
	}
	if l := s.adapters(t); len(l.Data) != 2 || l.Data[0].Name != "x" || l.Data[0].SoftTokens != 4 || l.Data[1].ID != base+":y" {
		t.Errorf("adapters %+v", l)
	}
	alone, _, _, _ := s.streamChat(t, ctx, chatParams(base+":x", 64))
	base0, _, _, _ := s.streamChat(t, ctx, chatParams(base, 64))
	if alone == base0 {
		t.Fatalf("the adapter does not change the text %q", alone)
	}

	// Removing an adapter in use: the request keeps it until it ends.
	stream := s.client.Chat.Completions.NewStreaming(ctx, chatParams(base+":x", 64))
	defer stream.Close()
	var got strings.Builder
	if !stream.Next() {
		t.Fatalf("stream: %v", stream.Err())
	}
	if l := s.adapters(t); l.Data[0].InFlight != 1 {
		t.Errorf("in-flight count %+v, want 1", l.Data[0])
	}
	if r := s.do(t, "DELETE", "/v1/adapters/x", "", ""); r.status != http.StatusOK {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	for ok := true; ok; ok = stream.Next() {
		for _, ch := range stream.Current().Choices {
			got.WriteString(ch.Delta.Content)
		}
	}
	if err := stream.Err(); err != nil || got.String() != alone {
		t.Errorf("request whose adapter was removed: %q (%v), want %q", got.String(), err, alone)
	}
	if _, err := s.client.Chat.Completions.New(ctx, chatParams(base+":x", 2)); statusOf(err) != http.StatusNotFound {
		t.Errorf("removed adapter: %v, want 404", err)
	}
	wantError(t, "delete twice", s.do(t, "DELETE", "/v1/adapters/x", "", ""), http.StatusNotFound, "", "adapter_not_found")
	if l := s.adapters(t); len(l.Data) != 1 || l.Data[0].Name != "y" {
		t.Errorf("adapters after delete %+v", l)
	}
	// The other name of the same file still serves the same text.
	if text, _, _, _ := s.streamChat(t, ctx, chatParams(base+":y", 64)); text != alone {
		t.Errorf("adapter y: %q, want %q", text, alone)
	}
}
