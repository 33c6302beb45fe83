package trainer

import (
	"fmt"
	"slices"

	"github.com/iapt-go/iapt/gguf"
)

// Metadata keys of an IAPT adapter file (see the spec's "Adapter file" section).
const (
	keyGeneralType   = "general.type"
	keyArchitecture  = "general.architecture"
	keyName          = "general.name"
	keyAdapterType   = "adapter.type"
	keySoftTokens    = "adapter.iapt.soft_tokens"
	keyBottleneck    = "adapter.iapt.bottleneck"
	keyEmbedding     = "adapter.iapt.embedding_length"
	keyLayerCount    = "adapter.iapt.layer_count"
	keyShare         = "adapter.iapt.share"
	keyRatVersion    = "adapter.iapt.rational.version"
	keyRatDegrees    = "adapter.iapt.rational.degrees"
	keyTrainBase     = "adapter.iapt.train.base_model"
	keyTrainDataset  = "adapter.iapt.train.dataset"
	keyTrainSteps    = "adapter.iapt.train.steps"
	keyTrainLoss     = "adapter.iapt.train.final_loss"
	rationalVersionB = "B"
)

// SaveAdapter validates a and writes it to path as an IAPT adapter GGUF file:
// the spec's metadata, the optional name and provenance, and every tensor as
// F32 with its ggml shape. The file is replaced atomically.
func SaveAdapter(path string, a *Adapter) error {
	if err := a.Validate(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	w := gguf.NewWriter()
	meta := []gguf.KV{
		{Key: keyGeneralType, Value: "adapter"},
		{Key: keyArchitecture, Value: a.Arch},
		{Key: keyAdapterType, Value: "iapt"},
		{Key: keySoftTokens, Value: uint32(a.SoftTokens)},
		{Key: keyBottleneck, Value: uint32(a.Bottleneck)},
		{Key: keyEmbedding, Value: uint32(a.Dim)},
		{Key: keyLayerCount, Value: uint32(a.Layers)},
		{Key: keyShare, Value: a.Share},
		{Key: keyRatVersion, Value: rationalVersionB},
		{Key: keyRatDegrees, Value: []uint32{RationalNumDegree, RationalDenDegree}},
	}
	optional := []struct {
		set bool
		kv  gguf.KV
	}{
		{a.Name != "", gguf.KV{Key: keyName, Value: a.Name}},
		{a.Train.BaseModel != "", gguf.KV{Key: keyTrainBase, Value: a.Train.BaseModel}},
		{a.Train.Dataset != "", gguf.KV{Key: keyTrainDataset, Value: a.Train.Dataset}},
		{a.Train.Steps != 0, gguf.KV{Key: keyTrainSteps, Value: a.Train.Steps}},
		{a.Train.FinalLoss != 0, gguf.KV{Key: keyTrainLoss, Value: a.Train.FinalLoss}},
	}
	for _, o := range optional {
		if o.set {
			meta = append(meta, o.kv)
		}
	}
	for _, kv := range meta {
		if err := w.Set(kv.Key, kv.Value); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	for _, p := range a.params() {
		shape := make([]uint64, len(p.shape))
		for i, d := range p.shape {
			shape[i] = uint64(d)
		}
		if err := w.AddTensorF32(p.name, shape, *p.data); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return w.WriteFile(path)
}

// LoadAdapter reads the IAPT adapter file at path and validates it: the
// metadata must be the spec's, every expected tensor must be present as F32
// with the right shape, no other tensor may be present, and all values must
// be finite. Whether it fits a base model is checked by Adapter.CheckBase
// (NewModel does). Errors name the file.
func LoadAdapter(path string) (*Adapter, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	return decodeAdapter(f)
}

// decodeAdapter builds and validates an adapter from an open GGUF file.
func decodeAdapter(f *gguf.File) (*Adapter, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: "+format, append([]any{f.Path}, args...)...)
	}
	var err error
	strs := map[string]string{}
	for _, key := range []string{keyGeneralType, keyArchitecture, keyAdapterType, keyShare, keyRatVersion} {
		if strs[key], err = stringKey(f, key); err != nil {
			return nil, fail("%w", err)
		}
	}
	want := map[string]string{keyGeneralType: "adapter", keyAdapterType: "iapt", keyRatVersion: rationalVersionB}
	for key, w := range want {
		if strs[key] != w {
			return nil, fail("metadata %s is %q, want %q", key, strs[key], w)
		}
	}
	nums := map[string]int{}
	for _, key := range []string{keySoftTokens, keyBottleneck, keyEmbedding, keyLayerCount} {
		v, err := uint32Key(f, key)
		if err != nil {
			return nil, fail("%w", err)
		}
		nums[key] = int(v)
	}
	degrees, ok := f.Value(keyRatDegrees)
	if !ok {
		return nil, fail("metadata %s is missing", keyRatDegrees)
	}
	if d, isU32 := degrees.([]uint32); !isU32 || !slices.Equal(d, []uint32{RationalNumDegree, RationalDenDegree}) {
		return nil, fail("metadata %s is %T %v, want u32 [%d, %d]", keyRatDegrees, degrees, degrees, RationalNumDegree, RationalDenDegree)
	}
	a := &Adapter{
		AdapterConfig: AdapterConfig{SoftTokens: nums[keySoftTokens], Bottleneck: nums[keyBottleneck], Share: strs[keyShare]},
		Arch:          strs[keyArchitecture],
		Dim:           nums[keyEmbedding],
		Layers:        nums[keyLayerCount],
	}
	if err := a.AdapterConfig.Validate(); err != nil {
		return nil, fail("%w", err)
	}
	if a.Dim <= 0 || a.Layers <= 0 {
		return nil, fail("metadata gives width %d and %d layers; both must be positive", a.Dim, a.Layers)
	}
	for _, o := range []struct {
		key string
		dst *string
	}{{keyName, &a.Name}, {keyTrainBase, &a.Train.BaseModel}, {keyTrainDataset, &a.Train.Dataset}} {
		if _, ok := f.Value(o.key); ok {
			if *o.dst, err = stringKey(f, o.key); err != nil {
				return nil, fail("%w", err)
			}
		}
	}
	if _, ok := f.Value(keyTrainSteps); ok {
		if a.Train.Steps, err = uint32Key(f, keyTrainSteps); err != nil {
			return nil, fail("%w", err)
		}
	}
	if v, ok := f.Value(keyTrainLoss); ok {
		loss, isF32 := v.(float32)
		if !isF32 {
			return nil, fail("metadata %s is %T, want f32", keyTrainLoss, v)
		}
		a.Train.FinalLoss = loss
	}

	a.Gen = make([]Generator, a.Layers)
	params := a.params()
	expected := map[string]bool{}
	for _, p := range params {
		expected[p.name] = true
	}
	for _, t := range f.Tensors {
		if !expected[t.Name] {
			return nil, fail("unknown tensor %q", t.Name)
		}
	}
	for _, p := range params {
		info, ok := f.Tensor(p.name)
		if !ok {
			return nil, fail("tensor %s is missing", p.name)
		}
		if info.Type != gguf.TypeF32 {
			return nil, fail("tensor %s has type %v, want F32", p.name, info.Type)
		}
		shape := make([]int, len(info.Shape))
		for i, d := range info.Shape {
			shape[i] = int(d)
		}
		if !slices.Equal(shape, p.shape) {
			return nil, fail("tensor %s has shape %v, want %v", p.name, shape, p.shape)
		}
		if *p.data, err = f.ReadF32(p.name); err != nil {
			return nil, err
		}
	}
	if err := a.Validate(); err != nil {
		return nil, fail("%w", err)
	}
	return a, nil
}

// stringKey returns a required string metadata value.
func stringKey(f *gguf.File, key string) (string, error) {
	v, ok := f.Value(key)
	if !ok {
		return "", fmt.Errorf("metadata %s is missing", key)
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("metadata %s is %T, want string", key, v)
	}
	return s, nil
}

// uint32Key returns a required u32 metadata value.
func uint32Key(f *gguf.File, key string) (uint32, error) {
	v, ok := f.Value(key)
	if !ok {
		return 0, fmt.Errorf("metadata %s is missing", key)
	}
	u, ok := v.(uint32)
	if !ok {
		return 0, fmt.Errorf("metadata %s is %T, want u32", key, v)
	}
	return u, nil
}
