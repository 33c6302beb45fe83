// Package gguf reads and writes GGUF files, the model format of ggml and
// llama.cpp, in pure Go.
//
// The reader follows the layout that ggml's gguf.cpp accepts (versions 2 and
// 3, little-endian): a header, key/value metadata, tensor descriptions and an
// aligned data section. Open reads and validates everything except the tensor
// data, so that a corrupt or truncated file is reported before anything
// touches the data. The Writer produces version 3 files with F32 tensors.
package gguf

import (
	"fmt"
	"math"
	"math/bits"
)

// Type is a ggml tensor element type, as stored in a GGUF tensor description.
type Type uint32

// ggml tensor types whose storage layout this package knows. The values are
// those of enum ggml_type; the byte sizes are those of ggml's type traits.
const (
	TypeF32  Type = 0  // 32-bit IEEE float
	TypeF16  Type = 1  // 16-bit IEEE float
	TypeQ4_0 Type = 2  // 32 weights per 18-byte block
	TypeQ4_1 Type = 3  // 32 weights per 20-byte block
	TypeQ5_0 Type = 6  // 32 weights per 22-byte block
	TypeQ5_1 Type = 7  // 32 weights per 24-byte block
	TypeQ8_0 Type = 8  // 32 weights per 34-byte block
	TypeQ8_1 Type = 9  // 32 weights per 36-byte block
	TypeQ2_K Type = 10 // 256 weights per 84-byte block
	TypeQ3_K Type = 11 // 256 weights per 110-byte block
	TypeQ4_K Type = 12 // 256 weights per 144-byte block
	TypeQ5_K Type = 13 // 256 weights per 176-byte block
	TypeQ6_K Type = 14 // 256 weights per 210-byte block
	TypeQ8_K Type = 15 // 256 weights per 292-byte block
	TypeI8   Type = 24 // 8-bit integer
	TypeI16  Type = 25 // 16-bit integer
	TypeI32  Type = 26 // 32-bit integer
	TypeI64  Type = 27 // 64-bit integer
	TypeF64  Type = 28 // 64-bit IEEE float
	TypeBF16 Type = 30 // bfloat16
)

// typeTraits describes the storage of one ggml type: elements per block and
// bytes per block.
type typeTraits struct {
	name       string
	blockElems uint64
	blockBytes uint64
}

var traits = map[Type]typeTraits{
	TypeF32:  {"F32", 1, 4},
	TypeF16:  {"F16", 1, 2},
	TypeQ4_0: {"Q4_0", 32, 18},
	TypeQ4_1: {"Q4_1", 32, 20},
	TypeQ5_0: {"Q5_0", 32, 22},
	TypeQ5_1: {"Q5_1", 32, 24},
	TypeQ8_0: {"Q8_0", 32, 34},
	TypeQ8_1: {"Q8_1", 32, 36},
	TypeQ2_K: {"Q2_K", 256, 84},
	TypeQ3_K: {"Q3_K", 256, 110},
	TypeQ4_K: {"Q4_K", 256, 144},
	TypeQ5_K: {"Q5_K", 256, 176},
	TypeQ6_K: {"Q6_K", 256, 210},
	TypeQ8_K: {"Q8_K", 256, 292},
	TypeI8:   {"I8", 1, 1},
	TypeI16:  {"I16", 1, 2},
	TypeI32:  {"I32", 1, 4},
	TypeI64:  {"I64", 1, 8},
	TypeF64:  {"F64", 1, 8},
	TypeBF16: {"BF16", 1, 2},
}

// String returns ggml's name of the type, such as "Q8_0", or "type(N)" for a
// type this package does not know.
func (t Type) String() string {
	if tr, ok := traits[t]; ok {
		return tr.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// BlockSize returns the number of elements in one storage block of t (1 for
// unquantized types), or 0 when t is unknown.
func (t Type) BlockSize() uint64 { return traits[t].blockElems }

// TypeSize returns the number of bytes in one storage block of t, or 0 when t
// is unknown.
func (t Type) TypeSize() uint64 { return traits[t].blockBytes }

// maxDims is GGML_MAX_DIMS, the most dimensions a ggml tensor has.
const maxDims = 4

// maxNameLen is the longest tensor name ggml accepts (GGML_MAX_NAME - 1).
const maxNameLen = 63

// TensorInfo describes one tensor of a GGUF file.
type TensorInfo struct {
	Name   string
	Shape  []uint64 // ggml order: ne0 (the contiguous dimension) first
	Type   Type
	Offset uint64 // byte offset of the data, relative to the data section
}

// Elements returns the number of elements, the product of Shape (1 for a
// tensor without dimensions). Open guarantees that it does not overflow.
func (t TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Bytes returns the size of the tensor's data in bytes. It fails for an
// unknown type, for more than 4 dimensions, for a first dimension that is not
// a whole number of blocks and for sizes that do not fit in an int64.
func (t TensorInfo) Bytes() (uint64, error) {
	tr, ok := traits[t.Type]
	if !ok {
		return 0, fmt.Errorf("tensor %q: unknown tensor type %d", t.Name, uint32(t.Type))
	}
	if len(t.Shape) > maxDims {
		return 0, fmt.Errorf("tensor %q: %d dimensions, at most %d allowed", t.Name, len(t.Shape), maxDims)
	}
	n := uint64(1)
	for i, d := range t.Shape {
		hi, lo := bits.Mul64(n, d)
		if hi != 0 || lo > math.MaxInt64 {
			return 0, fmt.Errorf("tensor %q: shape %v overflows at dimension %d", t.Name, t.Shape, i)
		}
		n = lo
	}
	ne0 := uint64(1)
	if len(t.Shape) > 0 {
		ne0 = t.Shape[0]
	}
	if ne0%tr.blockElems != 0 {
		return 0, fmt.Errorf("tensor %q: first dimension %d is not a multiple of the %s block size %d",
			t.Name, ne0, tr.name, tr.blockElems)
	}
	hi, size := bits.Mul64(n/tr.blockElems, tr.blockBytes)
	if hi != 0 || size > math.MaxInt64 {
		return 0, fmt.Errorf("tensor %q: %d elements of %s do not fit in an int64 byte count", t.Name, n, tr.name)
	}
	return size, nil
}

// pad rounds n up to a multiple of align, which must be a power of two.
func pad(n, align uint64) uint64 {
	return (n + align - 1) &^ (align - 1)
}
