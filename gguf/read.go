package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"slices"
)

// magic is the first four bytes of every GGUF file.
const magic = "GGUF"

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// alignmentKey is the metadata key that overrides DefaultAlignment.
const alignmentKey = "general.alignment"

// Smallest encodings of one metadata pair (key length, empty key, tag, one
// byte of value) and of one tensor description (name length, empty name,
// n_dims, type, offset). They bound the counts a file of a given size can hold.
const (
	minKVBytes     = 8 + 4 + 1
	minTensorBytes = 8 + 4 + 4 + 8
)

// KV is one metadata pair. Value holds one of uint8, int8, uint16, int16,
// uint32, int32, float32, bool, string, uint64, int64, float64 or a slice of
// one of them.
type KV struct {
	Key   string
	Value any
}

// File is the header, metadata and tensor descriptions of a GGUF file.
type File struct {
	Path       string
	Version    uint32
	Alignment  uint64 // data alignment in bytes
	KV         []KV   // metadata in file order
	Tensors    []TensorInfo
	DataOffset int64 // file offset of the data section
}

// Open reads and validates the header, metadata and tensor descriptions of
// the GGUF file at path; it does not read tensor data. It checks the magic,
// the version (2 or 3), counts and lengths against the file size, duplicate
// keys and tensor names, tensor types and shapes (at most 4 dimensions, none
// 0, ne0 a whole number of blocks), that tensors follow each other at aligned
// offsets as gguf.cpp requires, and that every tensor's data lies inside the
// file. Errors start with the path.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, pathError(path, err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, pathError(path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	f, err := parse(path, &decoder{r: bufio.NewReaderSize(fh, 1<<16), size: st.Size()})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// parse decodes everything before the data section and validates it.
func parse(path string, d *decoder) (*File, error) {
	head, err := d.bytes(4, "magic")
	if err != nil {
		return nil, fmt.Errorf("not a GGUF file: %w", err)
	}
	if string(head) != magic {
		return nil, fmt.Errorf("not a GGUF file: magic is %q, want %q", head, magic)
	}
	f := &File{Path: path, Alignment: DefaultAlignment}
	if f.Version, err = d.u32("version"); err != nil {
		return nil, err
	}
	switch {
	case f.Version == 2 || f.Version == 3:
	case f.Version&0xffff == 0:
		return nil, fmt.Errorf("version %#x looks byte-swapped; big-endian GGUF files are not supported", f.Version)
	default:
		return nil, fmt.Errorf("unsupported GGUF version %d (supported: 2 and 3)", f.Version)
	}
	nTensors, err := d.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := d.u64("metadata count")
	if err != nil {
		return nil, err
	}
	left := uint64(d.size - d.off)
	if nKV > left/minKVBytes {
		return nil, fmt.Errorf("metadata count %d cannot fit in the %d bytes left", nKV, left)
	}
	if nTensors > left/minTensorBytes {
		return nil, fmt.Errorf("tensor count %d cannot fit in the %d bytes left", nTensors, left)
	}
	if err := f.readKV(d, nKV); err != nil {
		return nil, err
	}
	if err := f.readTensorInfos(d, nTensors); err != nil {
		return nil, err
	}
	f.DataOffset = int64(pad(uint64(d.off), f.Alignment))
	if err := f.checkData(d.size); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *File) readKV(d *decoder, n uint64) error {
	f.KV = make([]KV, 0, n)
	seen := make(map[string]bool, n)
	for i := range n {
		key, err := d.str("key")
		if err != nil {
			return fmt.Errorf("metadata %d: %w", i, err)
		}
		if seen[key] {
			return fmt.Errorf("metadata %d: duplicate key %q", i, key)
		}
		seen[key] = true
		tag, err := d.u32("value type")
		if err != nil {
			return fmt.Errorf("metadata %d (%q): %w", i, key, err)
		}
		v, err := d.value(valueType(tag))
		if err != nil {
			return fmt.Errorf("metadata %d (%q): %w", i, key, err)
		}
		f.KV = append(f.KV, KV{Key: key, Value: v})
	}
	if v, ok := f.Value(alignmentKey); ok {
		a, isU32 := v.(uint32)
		if !isU32 {
			return fmt.Errorf("%s is %T, want uint32", alignmentKey, v)
		}
		if a == 0 || a&(a-1) != 0 {
			return fmt.Errorf("%s is %d, want a power of two", alignmentKey, a)
		}
		f.Alignment = uint64(a)
	}
	return nil
}

func (f *File) readTensorInfos(d *decoder, n uint64) error {
	f.Tensors = make([]TensorInfo, 0, n)
	seen := make(map[string]bool, n)
	for i := range n {
		name, err := d.str("tensor name")
		if err != nil {
			return fmt.Errorf("tensor %d: %w", i, err)
		}
		if len(name) > maxNameLen {
			return fmt.Errorf("tensor %d: name of %d bytes is longer than %d", i, len(name), maxNameLen)
		}
		if seen[name] {
			return fmt.Errorf("tensor %d: duplicate name %q", i, name)
		}
		seen[name] = true
		nd, err := d.u32("dimension count")
		if err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		if nd > maxDims {
			return fmt.Errorf("tensor %q: %d dimensions, at most %d allowed", name, nd, maxDims)
		}
		t := TensorInfo{Name: name, Shape: make([]uint64, nd)}
		if err := d.fixed(t.Shape, 8*uint64(nd), "shape"); err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		if i := slices.Index(t.Shape, 0); i >= 0 {
			return fmt.Errorf("tensor %q: dimension %d of shape %v is 0", name, i, t.Shape)
		}
		typ, err := d.u32("type")
		if err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		t.Type = Type(typ)
		if t.Offset, err = d.u64("data offset"); err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		if _, err := t.Bytes(); err != nil {
			return err
		}
		f.Tensors = append(f.Tensors, t)
	}
	return nil
}

// checkData checks that the tensors are laid out as gguf.cpp expects (in
// order, each at the aligned end of the previous one) and that each tensor's
// data lies inside a file of the given size.
func (f *File) checkData(size int64) error {
	var want uint64
	for _, t := range f.Tensors {
		n, _ := t.Bytes() // validated by readTensorInfos
		if t.Offset != want {
			return fmt.Errorf("tensor %q: data offset %d, want %d (tensors must follow each other, aligned to %d bytes)",
				t.Name, t.Offset, want, f.Alignment)
		}
		end := uint64(f.DataOffset) + t.Offset + n
		if end > uint64(size) {
			return fmt.Errorf("tensor %q: data ends at byte %d but the file has %d bytes (truncated file)",
				t.Name, end, size)
		}
		want = pad(t.Offset+n, f.Alignment)
	}
	return nil
}

// Value returns the metadata value of key.
func (f *File) Value(key string) (any, bool) {
	for _, kv := range f.KV {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// lookup is Value with an error for a missing key.
func (f *File) lookup(key string) (any, error) {
	v, ok := f.Value(key)
	if !ok {
		return nil, fmt.Errorf("%s: metadata key %q not found", f.Path, key)
	}
	return v, nil
}

// String returns the string value of key.
func (f *File) String(key string) (string, error) {
	v, err := f.lookup(key)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: metadata key %q is %T, want string", f.Path, key, v)
	}
	return s, nil
}

// Uint32 returns the value of key, which may have any integer type as long
// as the value fits in a uint32.
func (f *File) Uint32(key string) (uint32, error) {
	v, err := f.lookup(key)
	if err != nil {
		return 0, err
	}
	var u uint64
	neg := false
	switch x := v.(type) {
	case uint8:
		u = uint64(x)
	case uint16:
		u = uint64(x)
	case uint32:
		u = uint64(x)
	case uint64:
		u = x
	case int8:
		u, neg = uint64(x), x < 0
	case int16:
		u, neg = uint64(x), x < 0
	case int32:
		u, neg = uint64(x), x < 0
	case int64:
		u, neg = uint64(x), x < 0
	default:
		return 0, fmt.Errorf("%s: metadata key %q is %T, want an integer", f.Path, key, v)
	}
	if neg || u > math.MaxUint32 {
		return 0, fmt.Errorf("%s: metadata key %q is %T %v, which does not fit in a uint32", f.Path, key, v, v)
	}
	return uint32(u), nil
}

// Float32 returns the float32 value of key.
func (f *File) Float32(key string) (float32, error) {
	v, err := f.lookup(key)
	if err != nil {
		return 0, err
	}
	x, ok := v.(float32)
	if !ok {
		return 0, fmt.Errorf("%s: metadata key %q is %T, want float32", f.Path, key, v)
	}
	return x, nil
}

// Tensor returns the description of the tensor called name.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	for _, t := range f.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return TensorInfo{}, false
}

// ReadF32 reads the data of an F32 or F16 tensor as float32 values, in
// storage order (ne0 fastest).
func (f *File) ReadF32(name string) ([]float32, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q not found", f.Path, name)
	}
	if t.Type != TypeF32 && t.Type != TypeF16 {
		return nil, fmt.Errorf("%s: tensor %q has type %v; only F32 and F16 can be read as float32", f.Path, name, t.Type)
	}
	n, err := t.Bytes()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	fh, err := os.Open(f.Path)
	if err != nil {
		return nil, pathError(f.Path, err)
	}
	defer fh.Close()
	buf := make([]byte, n)
	if _, err := fh.ReadAt(buf, f.DataOffset+int64(t.Offset)); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: reading %d bytes at offset %d: %w",
			f.Path, name, n, f.DataOffset+int64(t.Offset), err)
	}
	out := make([]float32, t.Elements())
	for i := range out {
		if t.Type == TypeF32 {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
		} else {
			out[i] = halfToFloat(binary.LittleEndian.Uint16(buf[2*i:]))
		}
	}
	return out, nil
}

// pathError prefixes err with path, dropping the path that an *fs.PathError
// repeats, so that every message starts with the file's path.
func pathError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == path {
		return fmt.Errorf("%s: %s: %w", path, pe.Op, pe.Err)
	}
	return fmt.Errorf("%s: %w", path, err)
}

// halfToFloat converts an IEEE 754 binary16 value to float32 exactly.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch exp {
	case 0x1f: // infinity or NaN, payload kept
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	case 0: // zero or subnormal: mant * 2^-24
		v := float32(mant) / (1 << 24)
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}
