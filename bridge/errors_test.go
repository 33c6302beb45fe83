package bridge_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/internal/testmodels"
)

// copyPrefix writes the first n bytes of src to a temp file.
func copyPrefix(t *testing.T, src string, n int64) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	p := filepath.Join(t.TempDir(), "truncated.gguf")
	out, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.CopyN(out, in, n); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadModelBadFiles(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.gguf")
	os.WriteFile(empty, nil, 0o644)
	notGGUF := filepath.Join(dir, "model.bin")
	os.WriteFile(notGGUF, []byte("this is a llama2.c checkpoint, not a GGUF file"), 0o644)
	src := testmodels.Path(t, testmodels.StoriesF32)
	cases := []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope.gguf"), "no such file"},
		{"directory", dir, "directory"},
		{"empty", empty, "empty"},
		{"not GGUF", notGGUF, "not a GGUF"},
		{"truncated header", copyPrefix(t, src, 200), "truncated.gguf"},
		{"truncated data", copyPrefix(t, src, 1<<20), "truncated.gguf"},
		{"unknown architecture", writeVocabModel(t, map[string]any{"general.architecture": "llama-from-mars"}), "llama-from-mars"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := bridge.LoadModel(c.path, bridge.ModelParams{})
			if err == nil {
				m.Close()
				t.Fatalf("loaded %s without error", c.path)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

func TestPromptLongerThanContext(t *testing.T) {
	m, _ := models(t)
	c := newCtx(t, m, bridge.ContextParams{NCtx: 64})
	long, _ := m.Tokenize(strings.Repeat("The cat sat on the mat. ", 20), true, false)
	_, err := c.Prefill(0, long, nil, false)
	if err == nil || !strings.Contains(err.Error(), "exceeds the context") {
		t.Fatalf("prompt of %d tokens in a context of 64 gave %v", len(long), err)
	}
	// The context still works afterwards.
	short, _ := m.Tokenize("Once upon a time", true, false)
	if _, err := c.Prefill(0, short, nil, false); err != nil {
		t.Fatal(err)
	}
}

func TestBadBatches(t *testing.T) {
	m, _ := models(t)
	c := newCtx(t, m, bridge.ContextParams{NCtx: 64, NSeqMax: 2})
	b := bridge.NewBatch(4, 1)
	defer b.Close()
	nctx := c.Params().NCtx
	for _, bad := range []struct {
		tok       bridge.Token
		pos, seq  int
		wantInErr string
	}{
		{-1, 0, 0, "vocabulary"}, {32000, 0, 0, "vocabulary"}, {1, nctx, 0, "position"}, {1, -1, 0, "position"}, {1, 0, 2, "sequence id"},
	} {
		b.Clear()
		b.Add(bad.tok, bad.pos, []int{bad.seq}, true)
		if err := c.Decode(b); err == nil || !strings.Contains(err.Error(), bad.wantInErr) {
			t.Fatalf("token %d pos %d seq %d: %v, want an error about %s", bad.tok, bad.pos, bad.seq, err, bad.wantInErr)
		}
	}
	b.Clear()
	if err := c.Decode(b); err == nil {
		t.Fatal("empty batch decoded")
	}
	if _, err := c.Logits(7); err == nil {
		t.Fatal("logits of a row that asked for none")
	}
}

func TestUseAfterClose(t *testing.T) {
	m, err := bridge.LoadModel(testmodels.Path(t, testmodels.StoriesQ8), bridge.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.NewContext(bridge.ContextParams{NCtx: 32})
	if err != nil {
		t.Fatal(err)
	}
	toks, _ := m.Tokenize("Hello", true, false)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c.Close() // twice is fine
	b := bridge.NewBatch(1, 1)
	defer b.Close()
	b.Add(toks[0], 0, []int{0}, true)
	if err := c.Decode(b); !errors.Is(err, bridge.ErrClosed) {
		t.Fatalf("decode after Close: %v", err)
	}
	if _, err := c.Logits(0); !errors.Is(err, bridge.ErrClosed) {
		t.Fatalf("logits after Close: %v", err)
	}
	if _, err := c.Prefill(0, toks, nil, false); !errors.Is(err, bridge.ErrClosed) {
		t.Fatalf("prefill after Close: %v", err)
	}
	m.Close()
	if _, err := m.Tokenize("Hello", true, false); !errors.Is(err, bridge.ErrClosed) {
		t.Fatalf("tokenize after Close: %v", err)
	}
	if _, err := m.NewContext(bridge.ContextParams{}); !errors.Is(err, bridge.ErrClosed) {
		t.Fatalf("new context after Close: %v", err)
	}
	if _, err := m.LoadAdapter("x.gguf"); !errors.Is(err, bridge.ErrClosed) {
		t.Fatalf("load adapter after Close: %v", err)
	}
}

func TestContextParamErrors(t *testing.T) {
	m, _ := models(t)
	for _, p := range []bridge.ContextParams{{TypeK: "q2_weird"}, {FlashAttn: "maybe"}, {NCtx: -5}} {
		if c, err := m.NewContext(p); err == nil {
			c.Close()
			t.Fatalf("params %+v accepted", p)
		}
	}
}

// rssBytes reads the resident set size of this process.
func rssBytes(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	var size, rss int64
	fmt.Sscan(string(b), &size, &rss)
	return rss * int64(os.Getpagesize())
}

// TestFailuresDoNotLeak repeats failing loads and checks that the process
// does not grow: every error path frees what it allocated.
func TestFailuresDoNotLeak(t *testing.T) {
	m, _ := models(t)
	truncated := copyPrefix(t, testmodels.Path(t, testmodels.StoriesF32), 1<<20)
	bad := badAdapters(t)
	round := func() {
		if _, err := bridge.LoadModel(truncated, bridge.ModelParams{}); err == nil {
			t.Fatal("truncated model loaded")
		}
		for _, c := range bad {
			if a, err := m.LoadAdapter(c[0]); err == nil {
				a.Close()
				t.Fatal("bad adapter loaded")
			}
		}
	}
	for i := 0; i < 20; i++ { // warm up allocator pools
		round()
	}
	before := rssBytes(t)
	for i := 0; i < 200; i++ {
		round()
	}
	grown := rssBytes(t) - before
	t.Logf("RSS grew by %d KiB over 200 rounds", grown/1024)
	if grown > 16<<20 {
		t.Fatalf("RSS grew by %d MiB over 200 rounds of failing loads: a leak", grown>>20)
	}
}
