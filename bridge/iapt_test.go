package bridge_test

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iapt-go/iapt/adapterfile"
	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/gguf"
	"github.com/iapt-go/iapt/internal/testmodels"
)

// storiesAdapter is an adapter config that fits stories15M.
func storiesAdapter(m, r int, share string) adapterfile.Config {
	return adapterfile.Config{Arch: "llama", Embd: 288, Layers: 6, SoftTokens: m, Bottleneck: r, Share: share}
}

// writeAdapter writes a random adapter and returns its path.
func writeAdapter(t testing.TB, c adapterfile.Config, seed int64) string {
	t.Helper()
	a, err := adapterfile.Random(c, seed, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "adapter.gguf")
	if err := a.Write(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func loadAdapter(t testing.TB, m *bridge.Model, path string) *bridge.Adapter {
	t.Helper()
	a, err := m.LoadAdapter(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

// prefillLogits prefills seq 0 of c (emptied first) and returns the logits
// of every prompt token.
func prefillLogits(t *testing.T, c *bridge.Context, toks []bridge.Token, a *bridge.Adapter) [][]float32 {
	t.Helper()
	if err := c.RemoveTokens(0, -1, -1); err != nil {
		t.Fatal(err)
	}
	pf, err := c.Prefill(0, toks, a, true)
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]float32, len(toks))
	for i := range toks {
		if out[i], err = c.Logits(pf.Offset + i); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func maxAbsDiff(a, b [][]float32) float64 {
	var d float64
	for i := range a {
		for j := range a[i] {
			d = math.Max(d, math.Abs(float64(a[i][j]-b[i][j])))
		}
	}
	return d
}

func TestAdapterGraphAndToggle(t *testing.T) {
	m, _ := models(t)
	a := loadAdapter(t, m, writeAdapter(t, storiesAdapter(4, 16, "none"), 1))
	if a.SoftTokens != 4 || a.Bottleneck != 16 || a.ShareUpDown || a.Params != 6*(2*288*16+16+288+16*4+10) {
		t.Fatalf("adapter shape %+v", a)
	}
	c := newCtx(t, m, bridge.ContextParams{NCtx: 64, CountNodes: true, TypeK: "f32", TypeV: "f32"})
	toks, _ := m.Tokenize("Write a story about Tom and a ball.", true, false)

	base := prefillLogits(t, c, toks, nil)
	baseNodes, baseIAPT, _ := c.GraphStats()
	on1 := prefillLogits(t, c, toks, a)
	onNodes, onIAPT, _ := c.GraphStats()
	off := prefillLogits(t, c, toks, nil)
	offNodes, offIAPT, _ := c.GraphStats()
	on2 := prefillLogits(t, c, toks, a)

	if baseIAPT != 0 || offIAPT != 0 || offNodes != baseNodes {
		t.Fatalf("adapter off: %d nodes (%d iapt) after use, %d before: the base graph must be unchanged", offNodes, offIAPT, baseNodes)
	}
	if onIAPT == 0 || onNodes <= baseNodes {
		t.Fatalf("adapter on: %d nodes (%d iapt) vs base %d", onNodes, onIAPT, baseNodes)
	}
	if d := maxAbsDiff(base, off); d != 0 {
		t.Fatalf("base logits changed after the adapter was used: %g", d)
	}
	if d := maxAbsDiff(on1, on2); d != 0 {
		t.Fatalf("adapter on/off/on: logits differ by %g (stale graph?)", d)
	}
	if d := maxAbsDiff(base, on1); d < 1e-2 {
		t.Fatalf("the adapter changed the logits by only %g", d)
	}
	// A fresh context gives the same base logits: no adapter state leaks.
	fresh := newCtx(t, m, bridge.ContextParams{NCtx: 64, TypeK: "f32", TypeV: "f32"})
	if d := maxAbsDiff(base, prefillLogits(t, fresh, toks, nil)); d != 0 {
		t.Fatalf("fresh context base logits differ by %g", d)
	}
	// Re-prefilling after removal recomputes the soft tokens for the new adapter.
	b := loadAdapter(t, m, writeAdapter(t, storiesAdapter(4, 16, "none"), 2))
	_ = prefillLogits(t, fresh, toks, a)
	afterA := prefillLogits(t, fresh, toks, b)
	if d := maxAbsDiff(afterA, prefillLogits(t, c, toks, b)); d != 0 {
		t.Fatalf("adapter B after A differs from B alone by %g", d)
	}
}

func TestMultiTenantBatchEqualsAlone(t *testing.T) {
	m, _ := models(t)
	adapters := []*bridge.Adapter{
		loadAdapter(t, m, writeAdapter(t, storiesAdapter(4, 16, "none"), 11)),
		loadAdapter(t, m, writeAdapter(t, storiesAdapter(4, 32, "updown"), 12)),
		loadAdapter(t, m, writeAdapter(t, storiesAdapter(8, 16, "none"), 13)),
		loadAdapter(t, m, writeAdapter(t, storiesAdapter(2, 8, "updown"), 14)),
		nil, // one request without an adapter
	}
	prompts := []string{"Write a story about Tom and a ball.", "Once upon a time", "The dog was sad because", "Lily found a shiny key.", "Once upon a time"}
	const n = 20
	alone := make([][]bridge.Token, len(prompts))
	for i, p := range prompts {
		c := newCtx(t, m, bridge.ContextParams{NCtx: 256})
		toks, _ := m.Tokenize(p, true, false)
		res, err := c.Predict(toks, bridge.PredictOptions{MaxTokens: n, IgnoreEOG: true, Adapter: adapters[i]})
		if err != nil {
			t.Fatal(err)
		}
		alone[i] = res.Tokens
	}
	if equalTokens(alone[1], alone[4]) {
		t.Fatal("the adapter did not change the greedy continuation; the test would prove nothing")
	}
	c := newCtx(t, m, bridge.ContextParams{NCtx: 5 * 256, NSeqMax: 5})
	pos := make([]int, len(prompts))
	out := make([][]bridge.Token, len(prompts))
	smp, _ := bridge.NewSampler(bridge.SamplerParams{})
	defer smp.Close()
	for i, p := range prompts {
		toks, _ := m.Tokenize(p, true, false)
		pf, err := c.Prefill(i, toks, adapters[i], false)
		if err != nil {
			t.Fatal(err)
		}
		tok, _ := smp.Sample(c, pf.LastIndex)
		out[i], pos[i] = []bridge.Token{tok}, pf.NextPos
	}
	b := bridge.NewBatch(len(prompts), 1)
	defer b.Close()
	for step := 1; step < n; step++ {
		b.Clear()
		for i := range prompts {
			b.Add(out[i][len(out[i])-1], pos[i], []int{i}, true)
			pos[i]++
		}
		if err := c.Decode(b); err != nil {
			t.Fatal(err)
		}
		for i := range prompts {
			tok, _ := smp.Sample(c, i)
			out[i] = append(out[i], tok)
		}
	}
	for i := range prompts {
		if !equalTokens(alone[i], out[i]) {
			t.Fatalf("sequence %d: batched %v, alone %v", i, out[i], alone[i])
		}
	}
}

func TestPrefillRefusals(t *testing.T) {
	mf, mq := models(t)
	a := loadAdapter(t, mf, writeAdapter(t, storiesAdapter(4, 16, "none"), 3))
	c := newCtx(t, mf, bridge.ContextParams{NCtx: 256, NBatch: 256, NUbatch: 32})
	long, _ := mf.Tokenize(strings.Repeat("The cat sat on the mat. ", 5), true, false)
	if _, err := c.Prefill(0, long, a, false); err == nil || !strings.Contains(err.Error(), "ubatch") {
		t.Fatalf("prompt of %d tokens + 4 soft tokens in a ubatch of 32: %v", len(long), err)
	}
	// Without an adapter, llama.cpp may split the prompt over ubatches.
	if _, err := c.Prefill(0, long, nil, false); err != nil {
		t.Fatal(err)
	}
	short, _ := mf.Tokenize("Hello", true, false)
	if _, err := c.Prefill(0, short, a, false); err == nil || !strings.Contains(err.Error(), "already holds tokens") {
		t.Fatalf("prefill into a used sequence: %v", err)
	}
	if _, err := c.Prefill(1, nil, a, false); err == nil {
		t.Fatal("empty prompt accepted")
	}
	cq := newCtx(t, mq, bridge.ContextParams{NCtx: 64})
	if _, err := cq.Prefill(0, short, a, false); err == nil || !strings.Contains(err.Error(), "another model") {
		t.Fatalf("adapter of another model: %v", err)
	}
}

// rewrite copies the adapter GGUF at src, letting edit change or drop
// tensors and metadata, and returns the new file.
func rewrite(t *testing.T, src string, editKV func(k string, v any) any, editTensor func(name string, shape []uint64, data []float32) ([]uint64, []float32)) string {
	t.Helper()
	f, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	w := gguf.NewWriter()
	for _, kv := range f.KV {
		if v := editKV(kv.Key, kv.Value); v != nil {
			w.Set(kv.Key, v)
		}
	}
	for _, ti := range f.Tensors {
		data, err := f.ReadF32(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		if shape, d := editTensor(ti.Name, ti.Shape, data); shape != nil {
			if err := w.AddTensorF32(ti.Name, shape, d); err != nil {
				t.Fatal(err)
			}
		}
	}
	p := filepath.Join(t.TempDir(), "edited.gguf")
	if err := w.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func keepKV(_ string, v any) any { return v }
func keepTensor(_ string, s []uint64, d []float32) ([]uint64, []float32) {
	return s, d
}

// badAdapters returns files that the loader must refuse, with a word the
// error must contain.
func badAdapters(t *testing.T) map[string][2]string {
	good := writeAdapter(t, storiesAdapter(4, 16, "none"), 5)
	dir := t.TempDir()
	notGGUF := filepath.Join(dir, "notes.txt")
	os.WriteFile(notGGUF, []byte("GGUF? no: just some text that starts with the magic"), 0o644)
	lora := rewrite(t, good, func(k string, v any) any {
		if k == "adapter.type" {
			return "lora"
		}
		return v
	}, keepTensor)
	withExtra := func() string {
		p := rewrite(t, good, keepKV, keepTensor)
		f, _ := gguf.Open(p)
		w := gguf.NewWriter()
		for _, kv := range f.KV {
			w.Set(kv.Key, kv.Value)
		}
		for _, ti := range f.Tensors {
			d, _ := f.ReadF32(ti.Name)
			w.AddTensorF32(ti.Name, ti.Shape, d)
		}
		w.AddTensorF32("blk.0.iapt_extra", []uint64{4}, make([]float32, 4))
		w.WriteFile(p)
		return p
	}
	info, _ := os.Stat(good)
	return map[string][2]string{
		"wrong architecture": {writeAdapter(t, adapterfile.Config{Arch: "gpt2", Embd: 288, Layers: 6, SoftTokens: 4, Bottleneck: 16, Share: "none"}, 1), "gpt2"},
		"wrong width":        {writeAdapter(t, adapterfile.Config{Arch: "llama", Embd: 256, Layers: 6, SoftTokens: 4, Bottleneck: 16, Share: "none"}, 1), "embedding_length is 256"},
		"wrong layer count":  {writeAdapter(t, adapterfile.Config{Arch: "llama", Embd: 288, Layers: 5, SoftTokens: 4, Bottleneck: 16, Share: "none"}, 1), "layer_count is 5"},
		"missing tensor": {rewrite(t, good, keepKV, func(n string, s []uint64, d []float32) ([]uint64, []float32) {
			if n == "blk.2.iapt_pool.weight" {
				return nil, nil
			}
			return s, d
		}), "blk.2.iapt_pool.weight is missing"},
		"unknown tensor": {withExtra(), "unknown tensor blk.0.iapt_extra"},
		"wrong shape": {rewrite(t, good, keepKV, func(n string, s []uint64, d []float32) ([]uint64, []float32) {
			if n == "blk.1.iapt_down.weight" {
				return []uint64{16, 288}, d
			}
			return s, d
		}), "blk.1.iapt_down.weight has shape [16, 288], want [288, 16]"},
		"NaN value": {rewrite(t, good, keepKV, func(n string, s []uint64, d []float32) ([]uint64, []float32) {
			if n == "blk.4.iapt_up.bias" {
				d[7] = float32(math.NaN())
			}
			return s, d
		}), "non-finite"},
		"Inf value": {rewrite(t, good, keepKV, func(n string, s []uint64, d []float32) ([]uint64, []float32) {
			if n == "blk.0.iapt_rat_den" {
				d[1] = float32(math.Inf(1))
			}
			return s, d
		}), "non-finite"},
		"truncated":   {copyPrefix(t, good, info.Size()-100), "truncated"},
		"not a GGUF":  {notGGUF, "not a readable GGUF"},
		"LoRA file":   {lora, "LoRA"},
		"missing key": {rewrite(t, good, func(k string, v any) any { return map[bool]any{true: nil, false: v}[k == "adapter.iapt.bottleneck"] }, keepTensor), "adapter.iapt.bottleneck is missing"},
	}
}

func TestBadAdapters(t *testing.T) {
	m, _ := models(t)
	for name, c := range badAdapters(t) {
		t.Run(name, func(t *testing.T) {
			a, err := m.LoadAdapter(c[0])
			if err == nil {
				a.Close()
				t.Fatalf("loaded %s", c[0])
			}
			if !strings.Contains(err.Error(), c[1]) || !strings.Contains(err.Error(), c[0]) {
				t.Fatalf("error %q must name the file and contain %q", err, c[1])
			}
		})
	}
}

func FuzzLoadAdapter(f *testing.F) {
	m, _ := models(f)
	good, err := os.ReadFile(writeAdapter(f, storiesAdapter(4, 16, "updown"), 9))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(good[:300])
	f.Add([]byte("GGUF"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "fuzz.gguf")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		a, err := m.LoadAdapter(p)
		if err == nil {
			if a.SoftTokens < 1 || a.Bottleneck < 1 {
				t.Fatalf("loaded an adapter of shape m=%d r=%d", a.SoftTokens, a.Bottleneck)
			}
			a.Close()
		} else if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not name the file", err)
		}
	})
}

// TestOtherArchitectureRefused: the IAPT hook exists only in the llama
// builder, so an adapter on a base model of another architecture (here
// stories15M relabelled as the llama-like smollm3) is refused clearly.
func TestOtherArchitectureRefused(t *testing.T) {
	src, err := gguf.Open(testmodels.Path(t, testmodels.StoriesF32))
	if err != nil {
		t.Fatal(err)
	}
	w := gguf.NewWriter()
	for _, kv := range src.KV {
		k, v := kv.Key, kv.Value
		if k == "general.architecture" {
			v = "smollm3"
		}
		w.Set(strings.Replace(k, "llama.", "smollm3.", 1), v)
	}
	for _, ti := range src.Tensors {
		d, err := src.ReadF32(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		w.AddTensorF32(ti.Name, ti.Shape, d)
	}
	p := filepath.Join(t.TempDir(), "smollm3.gguf")
	if err := w.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	m, err := bridge.LoadModel(p, bridge.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ad := writeAdapter(t, adapterfile.Config{Arch: "smollm3", Embd: 288, Layers: 6, SoftTokens: 4, Bottleneck: 8, Share: "none"}, 1)
	if _, err := m.LoadAdapter(ad); err == nil || !strings.Contains(err.Error(), "architecture llama only; this model is smollm3") {
		t.Fatalf("adapter on a smollm3 model: %v", err)
	}
}
