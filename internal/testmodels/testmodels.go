// Package testmodels finds the models that `make model` builds, for tests.
// A missing model fails the test (it never skips): the Makefile's test
// target builds them first.
package testmodels

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/iapt-go/iapt/bridge"
)

// Names of the models `make model` produces.
const (
	StoriesF32 = "stories15M-f32.gguf"
	StoriesQ8  = "stories15M-q8_0.gguf"
)

// Dir is the models folder: $IAPT_MODELS, or models/ at the repository root.
func Dir() string {
	if d := os.Getenv("IAPT_MODELS"); d != "" {
		return d
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "models")
}

// Path returns the path of a model, failing the test when it is missing.
func Path(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(Dir(), name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("model %s missing (%v): run `make model` first", name, err)
	}
	return p
}

// Load loads a model through the bridge and closes it when the test ends.
func Load(t testing.TB, name string) *bridge.Model {
	t.Helper()
	m, err := bridge.LoadModel(Path(t, name), bridge.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}
