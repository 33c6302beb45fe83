package gguf

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"

	"github.com/iapt-go/iapt/internal/atomicfile"
)

// writeVersion is the GGUF version the Writer produces.
const writeVersion = 3

// Writer collects metadata and F32 tensors and writes them as a GGUF v3 file.
// The zero value is not usable; call NewWriter.
type Writer struct {
	kv      []KV
	tensors []pendingTensor
}

// pendingTensor is a tensor added to a Writer.
type pendingTensor struct {
	name  string
	shape []uint64
	data  []float32
}

// NewWriter returns an empty Writer.
func NewWriter() *Writer {
	return &Writer{}
}

// Set adds the metadata pair key=value, or replaces the value of an existing
// key in place, so that keys keep the order of their first Set. value must be
// one of the types listed at KV; slices are copied. general.alignment must be
// a uint32 power of two.
func (w *Writer) Set(key string, value any) error {
	if key == "" {
		return errors.New("gguf: empty metadata key")
	}
	if _, _, ok := tagOf(value); !ok {
		return fmt.Errorf("gguf: metadata key %q: unsupported value type %T", key, value)
	}
	if key == alignmentKey {
		a, ok := value.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return fmt.Errorf("gguf: %s must be a uint32 power of two, got %T %v", key, value, value)
		}
	}
	if rv := reflect.ValueOf(value); rv.Kind() == reflect.Slice {
		c := reflect.MakeSlice(rv.Type(), rv.Len(), rv.Len())
		reflect.Copy(c, rv)
		value = c.Interface()
	}
	for i := range w.kv {
		if w.kv[i].Key == key {
			w.kv[i].Value = value
			return nil
		}
	}
	w.kv = append(w.kv, KV{Key: key, Value: value})
	return nil
}

// AddTensorF32 adds an F32 tensor. shape is in ggml order (ne0 first) with at
// most 4 dimensions, none of them 0 (llama.cpp cannot load those), and
// len(data) must equal the product of shape. The Writer keeps data without
// copying it until WriteFile returns; the caller must not change it in
// between.
func (w *Writer) AddTensorF32(name string, shape []uint64, data []float32) error {
	if len(name) > maxNameLen {
		return fmt.Errorf("gguf: tensor name %q is %d bytes, longer than %d", name, len(name), maxNameLen)
	}
	for _, t := range w.tensors {
		if t.name == name {
			return fmt.Errorf("gguf: duplicate tensor name %q", name)
		}
	}
	if i := slices.Index(shape, 0); i >= 0 {
		return fmt.Errorf("gguf: tensor %q: dimension %d of shape %v is 0", name, i, shape)
	}
	info := TensorInfo{Name: name, Shape: slices.Clone(shape), Type: TypeF32}
	if _, err := info.Bytes(); err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	if n := info.Elements(); uint64(len(data)) != n {
		return fmt.Errorf("gguf: tensor %q: %d values for shape %v, want %d", name, len(data), shape, n)
	}
	w.tensors = append(w.tensors, pendingTensor{name: name, shape: info.Shape, data: data})
	return nil
}

// WriteFile writes the GGUF file to path atomically: it writes a temporary
// file in the same directory, syncs it and renames it over path. On error the
// temporary file is removed and an existing file at path is left untouched.
func (w *Writer) WriteFile(path string) error {
	return atomicfile.Write(path, w.encode)
}

// alignment returns the data alignment in effect.
func (w *Writer) alignment() uint64 {
	for _, kv := range w.kv {
		if kv.Key == alignmentKey {
			return uint64(kv.Value.(uint32)) // type checked by Set
		}
	}
	return DefaultAlignment
}

// encode writes the whole file to out.
func (w *Writer) encode(out io.Writer) error {
	align := w.alignment()
	e := &encoder{w: out}
	io.WriteString(e, magic) // an error stays in e.err
	e.fixed(uint32(writeVersion))
	e.fixed(uint64(len(w.tensors)))
	e.fixed(uint64(len(w.kv)))
	for _, kv := range w.kv {
		e.str(kv.Key)
		e.value(kv.Value)
	}
	var off uint64
	for _, t := range w.tensors {
		e.str(t.name)
		e.fixed(uint32(len(t.shape)))
		e.fixed(t.shape)
		e.fixed(uint32(TypeF32))
		e.fixed(off)
		off = pad(off+4*uint64(len(t.data)), align)
	}
	e.zeros(pad(e.n, align) - e.n)
	for _, t := range w.tensors {
		for chunk := range slices.Chunk(t.data, 1<<14) {
			e.fixed(chunk)
		}
		n := 4 * uint64(len(t.data))
		e.zeros(pad(n, align) - n)
	}
	return e.err
}
