// Package servetest gives the server's tests the real model (found by
// internal/testmodels: a missing model fails the test) and random IAPT
// adapter files.
package servetest

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/iapt-go/iapt/adapterfile"
	"github.com/iapt-go/iapt/bridge"
)

// WriteAdapter writes a random adapter for the model (4 soft tokens,
// bottleneck 16, scale 0.5: it visibly changes the output) to
// dir/<name>.iapt.gguf with the given metadata, and returns its path.
func WriteAdapter(t testing.TB, m *bridge.Model, dir, name string, seed int64, meta map[string]string) string {
	t.Helper()
	info := m.Info()
	a, err := adapterfile.Random(adapterfile.Config{
		Arch: info.Architecture, Embd: info.Embd, Layers: info.Layers, SoftTokens: 4, Bottleneck: 16, Share: "none",
	}, seed, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	a.Meta["general.name"] = name
	for k, v := range meta {
		a.Meta[k] = v
	}
	path := filepath.Join(dir, name+".iapt.gguf")
	if err := a.Write(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// LoadAdapters writes n random adapters named a0..a(n-1) (seeds 1..n) to a
// temporary folder, loads them and closes them when the test ends.
func LoadAdapters(t testing.TB, m *bridge.Model, n int) []*bridge.Adapter {
	t.Helper()
	dir := t.TempDir()
	out := make([]*bridge.Adapter, n)
	for i := range out {
		a, err := m.LoadAdapter(WriteAdapter(t, m, dir, fmt.Sprintf("a%d", i), int64(i+1), nil))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.Close)
		out[i] = a
	}
	return out
}
