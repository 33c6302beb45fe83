package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"reflect"
)

// valueType is the type tag of a metadata value (enum gguf_type).
type valueType uint32

const (
	typeUint8   valueType = 0
	typeInt8    valueType = 1
	typeUint16  valueType = 2
	typeInt16   valueType = 3
	typeUint32  valueType = 4
	typeInt32   valueType = 5
	typeFloat32 valueType = 6
	typeBool    valueType = 7
	typeString  valueType = 8
	typeArray   valueType = 9
	typeUint64  valueType = 10
	typeInt64   valueType = 11
	typeFloat64 valueType = 12
)

// fixedSize returns the encoded size of a fixed-size scalar type and 0 for
// strings, arrays and unknown tags.
func (t valueType) fixedSize() uint64 {
	switch t {
	case typeUint8, typeInt8, typeBool:
		return 1
	case typeUint16, typeInt16:
		return 2
	case typeUint32, typeInt32, typeFloat32:
		return 4
	case typeUint64, typeInt64, typeFloat64:
		return 8
	}
	return 0
}

// tagOf returns the tag of a Go metadata value and, for slices, the tag of
// the elements. ok is false for Go types that GGUF cannot hold.
func tagOf(v any) (tag, elem valueType, ok bool) {
	switch v.(type) {
	case uint8:
		return typeUint8, 0, true
	case int8:
		return typeInt8, 0, true
	case uint16:
		return typeUint16, 0, true
	case int16:
		return typeInt16, 0, true
	case uint32:
		return typeUint32, 0, true
	case int32:
		return typeInt32, 0, true
	case float32:
		return typeFloat32, 0, true
	case bool:
		return typeBool, 0, true
	case string:
		return typeString, 0, true
	case uint64:
		return typeUint64, 0, true
	case int64:
		return typeInt64, 0, true
	case float64:
		return typeFloat64, 0, true
	case []uint8:
		return typeArray, typeUint8, true
	case []int8:
		return typeArray, typeInt8, true
	case []uint16:
		return typeArray, typeUint16, true
	case []int16:
		return typeArray, typeInt16, true
	case []uint32:
		return typeArray, typeUint32, true
	case []int32:
		return typeArray, typeInt32, true
	case []float32:
		return typeArray, typeFloat32, true
	case []bool:
		return typeArray, typeBool, true
	case []string:
		return typeArray, typeString, true
	case []uint64:
		return typeArray, typeUint64, true
	case []int64:
		return typeArray, typeInt64, true
	case []float64:
		return typeArray, typeFloat64, true
	}
	return 0, 0, false
}

// makeSlice returns a new []T of length n for a fixed-size numeric tag.
func makeSlice(t valueType, n int) any {
	switch t {
	case typeUint8:
		return make([]uint8, n)
	case typeInt8:
		return make([]int8, n)
	case typeUint16:
		return make([]uint16, n)
	case typeInt16:
		return make([]int16, n)
	case typeUint32:
		return make([]uint32, n)
	case typeInt32:
		return make([]int32, n)
	case typeFloat32:
		return make([]float32, n)
	case typeUint64:
		return make([]uint64, n)
	case typeInt64:
		return make([]int64, n)
	case typeFloat64:
		return make([]float64, n)
	}
	return nil
}

// decoder reads little-endian GGUF items and refuses, before allocating, any
// item that claims more bytes than are left in the file.
type decoder struct {
	r    *bufio.Reader
	off  int64 // bytes consumed
	size int64 // file size
}

// need fails unless n more bytes remain before the end of the file.
func (d *decoder) need(n uint64, what string) error {
	if left := uint64(d.size - d.off); n > left {
		return fmt.Errorf("%s needs %d bytes at offset %d but only %d remain (truncated or corrupt file)",
			what, n, d.off, left)
	}
	return nil
}

// bytes reads the next n bytes.
func (d *decoder) bytes(n uint64, what string) ([]byte, error) {
	if err := d.need(n, what); err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(d.r, b); err != nil {
		return nil, fmt.Errorf("%s at offset %d: %w", what, d.off, err)
	}
	d.off += int64(n)
	return b, nil
}

// fixed decodes n bytes into data, a pointer or a slice of fixed-size values.
func (d *decoder) fixed(data any, n uint64, what string) error {
	if err := d.need(n, what); err != nil {
		return err
	}
	if err := binary.Read(d.r, binary.LittleEndian, data); err != nil {
		return fmt.Errorf("%s at offset %d: %w", what, d.off, err)
	}
	d.off += int64(n)
	return nil
}

func (d *decoder) u32(what string) (uint32, error) {
	var v uint32
	err := d.fixed(&v, 4, what)
	return v, err
}

func (d *decoder) u64(what string) (uint64, error) {
	var v uint64
	err := d.fixed(&v, 8, what)
	return v, err
}

// str reads a string: a u64 length and that many bytes.
func (d *decoder) str(what string) (string, error) {
	n, err := d.u64(what + " length")
	if err != nil {
		return "", err
	}
	b, err := d.bytes(n, what)
	return string(b), err
}

// value reads one metadata value of type t.
func (d *decoder) value(t valueType) (any, error) {
	switch {
	case t == typeString:
		return d.str("string value")
	case t == typeArray:
		return d.array()
	case t == typeBool:
		b, err := d.bytes(1, "bool value")
		if err != nil {
			return nil, err
		}
		if b[0] > 1 {
			return nil, fmt.Errorf("bool value %d at offset %d is neither 0 nor 1", b[0], d.off-1)
		}
		return b[0] == 1, nil
	case t.fixedSize() > 0:
		s := makeSlice(t, 1)
		if err := d.fixed(s, t.fixedSize(), "value"); err != nil {
			return nil, err
		}
		return reflect.ValueOf(s).Index(0).Interface(), nil
	}
	return nil, fmt.Errorf("unknown value type %d at offset %d", t, d.off-4)
}

// array reads an array value after its ARRAY tag.
func (d *decoder) array() (any, error) {
	et, err := d.u32("array element type")
	if err != nil {
		return nil, err
	}
	n, err := d.u64("array length")
	if err != nil {
		return nil, err
	}
	elem := valueType(et)
	left := uint64(d.size - d.off)
	switch {
	case elem == typeArray:
		return nil, fmt.Errorf("nested array at offset %d is not supported", d.off-12)
	case elem == typeString:
		if n > left/8 {
			return nil, fmt.Errorf("array of %d strings at offset %d cannot fit in the %d bytes left", n, d.off, left)
		}
		out := make([]string, n)
		for i := range out {
			if out[i], err = d.str("array string"); err != nil {
				return nil, fmt.Errorf("element %d: %w", i, err)
			}
		}
		return out, nil
	case elem == typeBool:
		b, err := d.bytes(n, "bool array")
		if err != nil {
			return nil, err
		}
		out := make([]bool, n)
		for i, v := range b {
			if v > 1 {
				return nil, fmt.Errorf("bool array element %d is %d, neither 0 nor 1", i, v)
			}
			out[i] = v == 1
		}
		return out, nil
	case elem.fixedSize() > 0:
		size := elem.fixedSize()
		if n > left/size {
			return nil, fmt.Errorf("array of %d %d-byte elements at offset %d cannot fit in the %d bytes left",
				n, size, d.off, left)
		}
		s := makeSlice(elem, int(n))
		if err := d.fixed(s, n*size, "array"); err != nil {
			return nil, err
		}
		return s, nil
	}
	return nil, fmt.Errorf("unknown array element type %d at offset %d", et, d.off-12)
}

// encoder writes little-endian GGUF items, counts the bytes written and
// keeps the first error, after which it writes nothing.
type encoder struct {
	w   io.Writer
	n   uint64
	err error
}

// Write implements io.Writer for binary.Write.
func (e *encoder) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.n += uint64(n)
	e.err = err
	return n, err
}

// fixed writes a fixed-size value or a slice of them.
func (e *encoder) fixed(v any) {
	if err := binary.Write(e, binary.LittleEndian, v); err != nil && e.err == nil {
		e.err = err
	}
}

func (e *encoder) str(s string) {
	e.fixed(uint64(len(s)))
	io.WriteString(e, s) // an error stays in e.err
}

// zeros writes n zero bytes.
func (e *encoder) zeros(n uint64) {
	var z [512]byte
	for n > 0 && e.err == nil {
		k := min(n, uint64(len(z)))
		e.Write(z[:k]) // an error stays in e.err
		n -= k
	}
}

// value writes the tag and the encoding of a value accepted by tagOf.
func (e *encoder) value(v any) {
	tag, elem, _ := tagOf(v)
	e.fixed(uint32(tag))
	if tag == typeArray {
		e.fixed(uint32(elem))
		e.fixed(uint64(reflect.ValueOf(v).Len()))
	}
	switch x := v.(type) {
	case string:
		e.str(x)
	case []string:
		for _, s := range x {
			e.str(s)
		}
	default:
		e.fixed(x)
	}
}
