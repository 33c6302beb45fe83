package adapterfile

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, share := range []string{"none", "updown"} {
		c := Config{Arch: "llama", Embd: 24, Layers: 3, SoftTokens: 4, Bottleneck: 5, Share: share}
		a, err := Random(c, 3, 0.5)
		if err != nil {
			t.Fatal(err)
		}
		a.Meta["general.name"] = "demo"
		a.Meta[PromptTemplateKey] = "### Instruction:\n{instruction}\n### Response:\n"
		a.Meta["adapter.iapt.train.steps"] = "100"
		p := filepath.Join(t.TempDir(), "a.gguf")
		if err := a.Write(p); err != nil {
			t.Fatal(err)
		}
		b, err := Read(p)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: read back differs", share)
		}
		want := 3 * (5*4 + 10)
		if share == "none" {
			want += 3 * (2*24*5 + 5 + 24)
		} else {
			want += 2*24*5 + 5 + 24
		}
		if a.NumParams() != want {
			t.Fatalf("%s: NumParams %d, want %d", share, a.NumParams(), want)
		}
	}
}

func TestRandomIsDeterministic(t *testing.T) {
	c := Config{Arch: "llama", Embd: 8, Layers: 2, SoftTokens: 2, Bottleneck: 3, Share: "none"}
	a, _ := Random(c, 1, 1)
	b, _ := Random(c, 1, 1)
	d, _ := Random(c, 2, 1)
	if !reflect.DeepEqual(a, b) || reflect.DeepEqual(a, d) {
		t.Fatal("Random must depend on the seed and only on it")
	}
}

func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []Config{
		{Arch: "", Embd: 8, Layers: 1, SoftTokens: 1, Bottleneck: 1, Share: "none"},
		{Arch: "llama", Embd: 8, Layers: 1, SoftTokens: 0, Bottleneck: 1, Share: "none"},
		{Arch: "llama", Embd: 8, Layers: 1, SoftTokens: 1, Bottleneck: 1, Share: "both"},
	} {
		if _, err := New(c); err == nil {
			t.Fatalf("config %+v accepted", c)
		}
	}
	a, _ := Random(Config{Arch: "llama", Embd: 8, Layers: 2, SoftTokens: 2, Bottleneck: 3, Share: "none"}, 1, 1)
	a.Layers[1].RatDen[2] = float32(math.NaN())
	p := filepath.Join(dir, "nan.gguf")
	if err := a.Write(p); err == nil || !strings.Contains(err.Error(), "blk.1.iapt_rat_den") {
		t.Fatalf("NaN adapter: %v", err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatal("a refused adapter left a file behind")
	}
	a.Layers[1].RatDen[2] = 0
	a.Meta["adapter.iapt.bottleneck"] = "7"
	if err := a.Write(p); err == nil || !strings.Contains(err.Error(), "adapter.iapt.bottleneck") {
		t.Fatalf("reserved key in Meta: %v", err)
	}
}
