package adapterfile

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/iapt-go/iapt/gguf"
)

// tensor is one weight of the file with its name and ggml shape.
type tensor struct {
	name  string
	shape []uint64
	data  []float32
}

// tensors lists every weight of the adapter with its file name and shape.
// The slices alias the adapter's own, so Read can fill them in place.
func (a *Adapter) tensors() []tensor {
	d, r, m := uint64(a.Embd), uint64(a.Bottleneck), uint64(a.SoftTokens)
	var ts []tensor
	addUD := func(prefix string, u *UpDown) {
		ts = append(ts,
			tensor{prefix + "iapt_down.weight", []uint64{d, r}, u.DownW},
			tensor{prefix + "iapt_down.bias", []uint64{r}, u.DownB},
			tensor{prefix + "iapt_up.weight", []uint64{r, d}, u.UpW},
			tensor{prefix + "iapt_up.bias", []uint64{d}, u.UpB})
	}
	if a.Share == "updown" {
		addUD("", &a.Shared)
	}
	for l := range a.Layers {
		ly := &a.Layers[l]
		p := fmt.Sprintf("blk.%d.", l)
		if a.Share == "none" {
			addUD(p, &ly.UpDown)
		}
		ts = append(ts,
			tensor{p + "iapt_pool.weight", []uint64{r, m}, ly.PoolW},
			tensor{p + "iapt_rat_num", []uint64{6}, ly.RatNum[:]},
			tensor{p + "iapt_rat_den", []uint64{4}, ly.RatDen[:]})
	}
	return ts
}

func elements(shape []uint64) int {
	n := 1
	for _, s := range shape {
		n *= int(s)
	}
	return n
}

// Validate checks the config, every tensor's size and that all values are
// finite.
func (a *Adapter) Validate() error {
	if err := a.Config.Validate(); err != nil {
		return err
	}
	if len(a.Layers) != a.Config.Layers {
		return fmt.Errorf("adapter: %d layer generators for Layers = %d", len(a.Layers), a.Config.Layers)
	}
	for _, t := range a.tensors() {
		if len(t.data) != elements(t.shape) {
			return fmt.Errorf("adapter: tensor %s has %d values, shape %v needs %d", t.name, len(t.data), t.shape, elements(t.shape))
		}
		for i, v := range t.data {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("adapter: tensor %s holds a non-finite value (%v) at element %d", t.name, v, i)
			}
		}
	}
	return nil
}

// Write validates the adapter and writes it as an adapter GGUF, atomically
// (a temp file renamed into place).
func (a *Adapter) Write(path string) error {
	if err := a.Validate(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	w := gguf.NewWriter()
	keys := make([]string, 0, len(a.Meta))
	for k := range a.Meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	set := []struct {
		k string
		v any
	}{
		{"general.type", "adapter"},
		{"general.architecture", a.Arch},
		{"adapter.type", "iapt"},
		{"adapter.iapt.soft_tokens", uint32(a.SoftTokens)},
		{"adapter.iapt.bottleneck", uint32(a.Bottleneck)},
		{"adapter.iapt.embedding_length", uint32(a.Embd)},
		{"adapter.iapt.layer_count", uint32(a.Config.Layers)},
		{"adapter.iapt.share", a.Share},
		{"adapter.iapt.rational.version", "B"},
		{"adapter.iapt.rational.degrees", []uint32{5, 4}},
	}
	for _, k := range keys {
		if reservedKey(k) {
			return fmt.Errorf("%s: metadata key %q is set by the format, not by Meta", path, k)
		}
		set = append(set, struct {
			k string
			v any
		}{k, a.Meta[k]})
	}
	for _, kv := range set {
		if err := w.Set(kv.k, kv.v); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	for _, t := range a.tensors() {
		if err := w.AddTensorF32(t.name, t.shape, t.data); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return w.WriteFile(path)
}

func reservedKey(k string) bool {
	switch k {
	case "general.type", "general.architecture", "adapter.type":
		return true
	}
	return strings.HasPrefix(k, "adapter.iapt.") && !strings.HasPrefix(k, "adapter.iapt.train.") && k != PromptTemplateKey
}

// Read loads and validates an adapter GGUF: metadata, every tensor's
// presence, type and shape, no unknown tensors, finite values.
func Read(path string) (*Adapter, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	str := func(k string) (string, error) { return f.String(k) }
	u32 := func(k string) (int, error) { v, err := f.Uint32(k); return int(v), err }
	if t, err := str("adapter.type"); err != nil {
		return nil, err
	} else if t != "iapt" {
		return nil, fmt.Errorf("%s: adapter.type is %q, not \"iapt\"", path, t)
	}
	var c Config
	if c.Arch, err = str("general.architecture"); err != nil {
		return nil, err
	}
	if c.Share, err = str("adapter.iapt.share"); err != nil {
		return nil, err
	}
	for _, p := range []struct {
		k string
		v *int
	}{{"adapter.iapt.soft_tokens", &c.SoftTokens}, {"adapter.iapt.bottleneck", &c.Bottleneck},
		{"adapter.iapt.embedding_length", &c.Embd}, {"adapter.iapt.layer_count", &c.Layers}} {
		if *p.v, err = u32(p.k); err != nil {
			return nil, err
		}
	}
	if v, err := str("adapter.iapt.rational.version"); err != nil {
		return nil, err
	} else if v != "B" {
		return nil, fmt.Errorf("%s: adapter.iapt.rational.version is %q, only \"B\" is supported", path, v)
	}
	if deg, ok := f.Value("adapter.iapt.rational.degrees"); !ok || fmt.Sprint(deg) != "[5 4]" {
		return nil, fmt.Errorf("%s: adapter.iapt.rational.degrees is %v, want [5 4]", path, deg)
	}
	a, err := New(c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, kv := range f.KV {
		if s, ok := kv.Value.(string); ok && !reservedKey(kv.Key) {
			a.Meta[kv.Key] = s
		}
	}
	want := map[string]bool{}
	for _, t := range a.tensors() {
		want[t.name] = true
		info, ok := f.Tensor(t.name)
		if !ok {
			return nil, fmt.Errorf("%s: tensor %s is missing", path, t.name)
		}
		if info.Type != gguf.TypeF32 || fmt.Sprint(info.Shape) != fmt.Sprint(t.shape) {
			return nil, fmt.Errorf("%s: tensor %s is %s %v, want f32 %v", path, t.name, info.Type, info.Shape, t.shape)
		}
		data, err := f.ReadF32(t.name)
		if err != nil {
			return nil, err
		}
		copy(t.data, data)
	}
	for _, t := range f.Tensors {
		if !want[t.Name] {
			return nil, fmt.Errorf("%s: unknown tensor %s", path, t.Name)
		}
	}
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}
