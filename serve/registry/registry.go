// Package registry keeps the named IAPT adapters that a server serves on one
// base model. Requests take a Lease on an adapter; removing an adapter takes
// it out of the registry at once, but the adapter is freed only when the
// last lease is released, so in-flight requests keep it until they end.
//
// Adapter names: the file name without ".iapt.gguf" or ".gguf" unless given,
// made of letters, digits, '.', '_' and '-'.
package registry

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/iapt-go/iapt/adapterfile"
	"github.com/iapt-go/iapt/bridge"
)

// Errors that callers tell apart with errors.Is.
var (
	// ErrNotFound: no adapter of that name.
	ErrNotFound = errors.New("adapter not found")
	// ErrExists: an adapter of that name is already loaded.
	ErrExists = errors.New("adapter already loaded")
	// ErrInvalid: a bad name or path, or a file that does not load.
	ErrInvalid = errors.New("invalid adapter")
)

// Info describes a loaded adapter.
type Info struct {
	Name       string
	Path       string
	SoftTokens int
	Bottleneck int
	Params     uint64
	// Template is the adapter's prompt template ("" when it has none).
	Template string
	// InFlight is the number of leases held.
	InFlight int
	Loaded   time.Time
}

type entry struct {
	info    Info
	adapter *bridge.Adapter
	refs    int
	removed bool
}

// Registry is a set of named adapters on one model. It is safe for
// concurrent use.
type Registry struct {
	model *bridge.Model
	dir   string
	// onChange, when set, is called with the number of adapters after
	// every load or removal (for a gauge).
	onChange func(n int)

	mu      sync.Mutex
	entries map[string]*entry
}

// New returns an empty registry for adapters of model; relative paths are
// resolved against dir. onChange may be nil.
func New(model *bridge.Model, dir string, onChange func(n int)) *Registry {
	return &Registry{model: model, dir: dir, onChange: onChange, entries: map[string]*entry{}}
}

var validName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// CheckName reports whether name can name an adapter.
func CheckName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("%w: name %q must be 1..128 letters, digits, '.', '_' or '-'", ErrInvalid, name)
	}
	return nil
}

// NameFromPath is the default adapter name of a file: its base name without
// ".iapt.gguf" or ".gguf".
func NameFromPath(path string) string {
	base := filepath.Base(path)
	for _, ext := range []string{".iapt.gguf", ".gguf"} {
		if strings.HasSuffix(base, ext) && len(base) > len(ext) {
			return strings.TrimSuffix(base, ext)
		}
	}
	return base
}

// resolve makes path absolute against the registry's folder.
func (r *Registry) resolve(path string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("%w: path is empty", ErrInvalid)
	}
	if !filepath.IsAbs(path) {
		if r.dir == "" {
			return "", fmt.Errorf("%w: path %q is relative and the server has no adapters folder", ErrInvalid, path)
		}
		path = filepath.Join(r.dir, path)
	}
	return filepath.Clean(path), nil
}

// Load loads the adapter file at path under name (NameFromPath(path) when
// name is empty).
func (r *Registry) Load(name, path string) (Info, error) {
	full, err := r.resolve(path)
	if err != nil {
		return Info{}, err
	}
	if name == "" {
		name = NameFromPath(full)
	}
	if err := CheckName(name); err != nil {
		return Info{}, err
	}
	r.mu.Lock()
	_, taken := r.entries[name]
	r.mu.Unlock()
	if taken {
		return Info{}, fmt.Errorf("%w: %q", ErrExists, name)
	}
	a, err := r.model.LoadAdapter(full)
	if err != nil {
		return Info{}, fmt.Errorf("%w %q: %v", ErrInvalid, name, err)
	}
	tmpl, _ := a.Meta(adapterfile.PromptTemplateKey)
	e := &entry{adapter: a, info: Info{
		Name: name, Path: full, SoftTokens: a.SoftTokens, Bottleneck: a.Bottleneck,
		Params: a.Params, Template: tmpl, Loaded: time.Now(),
	}}
	r.mu.Lock()
	if _, taken := r.entries[name]; taken {
		r.mu.Unlock()
		a.Close()
		return Info{}, fmt.Errorf("%w: %q", ErrExists, name)
	}
	r.entries[name] = e
	n := len(r.entries)
	r.mu.Unlock()
	r.changed(n)
	return e.info, nil
}

// LoadDir loads every *.gguf file of the registry's folder, named by
// NameFromPath, and returns their names. It stops at the first failure.
func (r *Registry) LoadDir() ([]string, error) {
	if _, err := os.Stat(r.dir); err != nil {
		return nil, fmt.Errorf("adapters folder: %w", err)
	}
	files, err := filepath.Glob(filepath.Join(r.dir, "*.gguf"))
	if err != nil {
		return nil, fmt.Errorf("adapters folder %s: %w", r.dir, err)
	}
	slices.Sort(files)
	var names []string
	for _, f := range files {
		info, err := r.Load("", f)
		if err != nil {
			return names, err
		}
		names = append(names, info.Name)
	}
	return names, nil
}

func (r *Registry) changed(n int) {
	if r.onChange != nil {
		r.onChange(n)
	}
}

// Remove takes the adapter out of the registry; it is freed when its last
// lease is released (at once when none is held).
func (r *Registry) Remove(name string) error {
	r.mu.Lock()
	e, ok := r.entries[name]
	if !ok {
		r.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	delete(r.entries, name)
	e.removed = true
	free := e.refs == 0
	n := len(r.entries)
	r.mu.Unlock()
	if free {
		e.adapter.Close()
	}
	r.changed(n)
	return nil
}

// List describes the loaded adapters, sorted by name.
func (r *Registry) List() []Info {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Info, 0, len(r.entries))
	for _, e := range r.entries {
		info := e.info
		info.InFlight = e.refs
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Lease is a hold on an adapter; Release it exactly when its user is done
// (Release after Release is a no-op).
type Lease struct {
	r    *Registry
	e    *entry
	once sync.Once
}

// Acquire leases the adapter of that name.
func (r *Registry) Acquire(name string) (*Lease, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	e.refs++
	return &Lease{r: r, e: e}, nil
}

// Adapter is the leased adapter.
func (l *Lease) Adapter() *bridge.Adapter { return l.e.adapter }

// Info describes the leased adapter as it was loaded.
func (l *Lease) Info() Info { return l.e.info }

// Release gives the lease back, freeing a removed adapter whose last lease
// this was.
func (l *Lease) Release() {
	l.once.Do(func() {
		l.r.mu.Lock()
		l.e.refs--
		free := l.e.removed && l.e.refs == 0
		l.r.mu.Unlock()
		if free {
			l.e.adapter.Close()
		}
	})
}

// Close frees every adapter; no lease may be in use any more.
func (r *Registry) Close() {
	r.mu.Lock()
	entries := r.entries
	r.entries = map[string]*entry{}
	r.mu.Unlock()
	for _, e := range entries {
		e.adapter.Close()
	}
	r.changed(0)
}
