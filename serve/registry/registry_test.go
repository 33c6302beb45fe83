package registry

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/iapt-go/iapt/adapterfile"
	"github.com/iapt-go/iapt/internal/testmodels"
	"github.com/iapt-go/iapt/serve/servetest"
)

func TestNames(t *testing.T) {
	for path, want := range map[string]string{
		"/a/b/tiny.iapt.gguf": "tiny",
		"tiny.gguf":           "tiny",
		"x.iapt":              "x.iapt",
		".gguf":               ".gguf",
	} {
		if got := NameFromPath(path); got != want {
			t.Errorf("NameFromPath(%q) = %q, want %q", path, got, want)
		}
	}
	for _, bad := range []string{"", "a/b", "a:b", "a b"} {
		if err := CheckName(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckName(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if err := CheckName("story-v1.2_x"); err != nil {
		t.Error(err)
	}
}

func TestLeases(t *testing.T) {
	m := testmodels.Load(t, testmodels.StoriesQ8)
	dir := t.TempDir()
	servetest.WriteAdapter(t, m, dir, "a", 1, map[string]string{adapterfile.PromptTemplateKey: "chatml"})
	servetest.WriteAdapter(t, m, dir, "b", 2, nil)
	var count int
	r := New(m, dir, func(n int) { count = n })
	defer r.Close()
	names, err := r.LoadDir()
	if err != nil || len(names) != 2 || names[0] != "a" || names[1] != "b" || count != 2 {
		t.Fatalf("LoadDir: %v, %v (count %d)", names, err, count)
	}
	if _, err := r.Load("", "a.iapt.gguf"); !errors.Is(err, ErrExists) {
		t.Errorf("loading a twice: %v, want ErrExists", err)
	}
	if _, err := r.Load("c", "missing.gguf"); !errors.Is(err, ErrInvalid) {
		t.Errorf("missing file: %v, want ErrInvalid", err)
	}
	if _, err := New(m, "", nil).Load("", "a.iapt.gguf"); !errors.Is(err, ErrInvalid) {
		t.Errorf("relative path without a folder: %v, want ErrInvalid", err)
	}
	lease, err := r.Acquire("a")
	if err != nil {
		t.Fatal(err)
	}
	if info := lease.Info(); info.Template != "chatml" || info.SoftTokens != 4 || info.Path != filepath.Join(dir, "a.iapt.gguf") {
		t.Errorf("info %+v", info)
	}
	if l := r.List(); len(l) != 2 || l[0].InFlight != 1 || l[1].InFlight != 0 {
		t.Errorf("list %+v, want a with one lease", l)
	}
	if err := r.Remove("a"); err != nil || count != 1 {
		t.Fatalf("remove: %v (count %d)", err, count)
	}
	if _, err := r.Acquire("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("acquire removed: %v, want ErrNotFound", err)
	}
	// The leased adapter stays usable until released, then is freed.
	if _, ok := lease.Adapter().Meta("general.name"); !ok {
		t.Errorf("leased adapter was freed on removal")
	}
	lease.Release()
	lease.Release()
	if _, ok := lease.Adapter().Meta("general.name"); ok {
		t.Errorf("removed adapter not freed after its last lease")
	}
	// The name can be reused at once.
	if _, err := r.Load("a", "b.iapt.gguf"); err != nil {
		t.Errorf("reload under a removed name: %v", err)
	}
	if err := r.Remove("zz"); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove unknown: %v, want ErrNotFound", err)
	}
	if _, err := New(m, filepath.Join(dir, "nope"), nil).LoadDir(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing folder: %v, want not exist", err)
	}
}
