package bridge_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/iapt-go/iapt/adapterfile"
	"github.com/iapt-go/iapt/bridge"
)

func TestLoRA(t *testing.T) {
	m, _ := models(t)
	p := filepath.Join(t.TempDir(), "lora.gguf")
	if err := adapterfile.WriteRandomLoRA(p, adapterfile.LoRAConfig{Arch: "llama", Embd: 288, Layers: 6, Rank: 8, Targets: []string{"attn_q", "attn_v"}, Alpha: 8}, 1, 0.3); err != nil {
		t.Fatal(err)
	}
	l, err := m.LoadLoRA(p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := newCtx(t, m, bridge.ContextParams{NCtx: 64, TypeK: "f32", TypeV: "f32"})
	toks, _ := m.Tokenize("Once upon a time", true, false)
	base := prefillLogits(t, c, toks, nil)
	if err := c.SetLoRA(l, 1); err != nil {
		t.Fatal(err)
	}
	withLoRA := prefillLogits(t, c, toks, nil)
	if err := c.ClearLoRA(); err != nil {
		t.Fatal(err)
	}
	after := prefillLogits(t, c, toks, nil)
	if d := maxAbsDiff(base, withLoRA); d < 1e-3 {
		t.Fatalf("LoRA changed the logits by only %g", d)
	}
	if d := maxAbsDiff(base, after); d != 0 {
		t.Fatalf("logits after ClearLoRA differ from base by %g", d)
	}
	// An IAPT adapter is not a LoRA, and the other way round.
	iapt := writeAdapter(t, storiesAdapter(4, 8, "none"), 1)
	if _, err := m.LoadLoRA(iapt); err == nil {
		t.Fatal("an IAPT adapter loaded as LoRA")
	}
	if _, err := m.LoadAdapter(p); err == nil || !strings.Contains(err.Error(), "LoRA") {
		t.Fatalf("a LoRA loaded as IAPT: %v", err)
	}
}
