package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/iapt-go/iapt/internal/atomicfile"
)

// allValues has one metadata value of every supported Go type.
var allValues = []KV{
	{"u8", uint8(200)},
	{"i8", int8(-100)},
	{"u16", uint16(60000)},
	{"i16", int16(-30000)},
	{"u32", uint32(4000000000)},
	{"i32", int32(-2000000000)},
	{"f32", float32(-1.5e-7)},
	{"bool.t", true},
	{"bool.f", false},
	{"str", "héllo ▁world"},
	{"str.empty", ""},
	{"u64", uint64(math.MaxUint64)},
	{"i64", int64(math.MinInt64)},
	{"f64", math.Pi},
	{"a.u8", []uint8{0, 1, 255}},
	{"a.i8", []int8{-128, 0, 127}},
	{"a.u16", []uint16{1, 65535}},
	{"a.i16", []int16{-32768, 32767}},
	{"a.u32", []uint32{7, 8, 9}},
	{"a.i32", []int32{-1, 0, 1, 2}},
	{"a.f32", []float32{0.25, -3, float32(math.Inf(1))}},
	{"a.bool", []bool{true, false, true}},
	{"a.str", []string{"<unk>", "", "▁the", "\x00\xff"}},
	{"a.u64", []uint64{1 << 63}},
	{"a.i64", []int64{-1 << 62}},
	{"a.f64", []float64{1e300, -0.5}},
	{"a.empty", []int32{}},
}

type testTensor struct {
	name  string
	shape []uint64
	data  []float32
}

func ramp(n int, scale float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = scale * float32(i-n/2)
	}
	return out
}

// testTensors end with a tensor of 32 bytes, so the file ends without padding.
var testTensors = []testTensor{
	{"odd", []uint64{5}, ramp(5, 0.5)},
	{"matrix", []uint64{7, 3}, ramp(21, -0.125)},
	{"specials", []uint64{4}, []float32{float32(math.Copysign(0, -1)), float32(math.Inf(-1)), float32(math.NaN()), math.MaxFloat32}},
	{"blk.0.cube", []uint64{2, 3, 2, 2}, ramp(24, 1)},
	{"last", []uint64{8}, ramp(8, 2)},
}

func newTestWriter(t testing.TB, kv []KV, tensors []testTensor) *Writer {
	t.Helper()
	w := NewWriter()
	for _, p := range kv {
		if err := w.Set(p.Key, p.Value); err != nil {
			t.Fatal(err)
		}
	}
	for _, x := range tensors {
		if err := w.AddTensorF32(x.name, x.shape, x.data); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// validBytes returns the encoding of allValues and testTensors.
func validBytes(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := newTestWriter(t, allValues, testTensors).encode(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeTemp(t testing.TB, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func TestRoundTrip(t *testing.T) {
	for _, align := range []uint32{0, 8, 64} {
		t.Run(fmt.Sprint("align", align), func(t *testing.T) {
			kv := allValues
			want := uint64(DefaultAlignment)
			if align != 0 {
				kv = append([]KV{{alignmentKey, align}}, allValues...)
				want = uint64(align)
			}
			path := filepath.Join(t.TempDir(), "rt.gguf")
			if err := newTestWriter(t, kv, testTensors).WriteFile(path); err != nil {
				t.Fatal(err)
			}
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			if f.Version != 3 || f.Alignment != want || f.Path != path {
				t.Errorf("version %d alignment %d path %q, want 3, %d, %q", f.Version, f.Alignment, f.Path, want, path)
			}
			if !reflect.DeepEqual(f.KV, kv) {
				t.Errorf("metadata differs:\n got %#v\nwant %#v", f.KV, kv)
			}
			if f.DataOffset%int64(want) != 0 {
				t.Errorf("data offset %d not aligned to %d", f.DataOffset, want)
			}
			if len(f.Tensors) != len(testTensors) {
				t.Fatalf("%d tensors, want %d", len(f.Tensors), len(testTensors))
			}
			for i, x := range testTensors {
				ti := f.Tensors[i]
				if ti.Name != x.name || !reflect.DeepEqual(ti.Shape, x.shape) || ti.Type != TypeF32 || ti.Offset%want != 0 {
					t.Errorf("tensor %d: %+v, want %s %v F32 aligned", i, ti, x.name, x.shape)
				}
				if ti.Elements() != uint64(len(x.data)) {
					t.Errorf("%s: Elements %d, want %d", x.name, ti.Elements(), len(x.data))
				}
				got, err := f.ReadF32(x.name)
				if err != nil {
					t.Fatal(err)
				}
				if !sameBits(got, x.data) {
					t.Errorf("%s: data %v, want %v", x.name, got, x.data)
				}
			}
		})
	}
}

func TestSetReplacesInPlaceAndCopies(t *testing.T) {
	w := NewWriter()
	arr := []string{"a", "b"}
	for _, p := range []KV{{"x", uint32(1)}, {"y", arr}, {"x", "two"}} {
		if err := w.Set(p.Key, p.Value); err != nil {
			t.Fatal(err)
		}
	}
	arr[0] = "changed"
	want := []KV{{"x", "two"}, {"y", []string{"a", "b"}}}
	if !reflect.DeepEqual(w.kv, want) {
		t.Errorf("kv %#v, want %#v", w.kv, want)
	}
}

func TestWriterRefusesBadInput(t *testing.T) {
	w := NewWriter()
	for _, c := range []struct {
		key   string
		value any
		want  string
	}{
		{"k", 5, "unsupported value type int"},
		{"k", []any{uint8(1)}, "unsupported value type []interface {}"},
		{"k", [][]int32{{1}}, "unsupported value type [][]int32"},
		{"k", nil, "unsupported value type <nil>"},
		{"", uint8(1), "empty metadata key"},
		{alignmentKey, uint32(48), "power of two"},
		{alignmentKey, uint64(32), "power of two"},
	} {
		if err := w.Set(c.key, c.value); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Set(%q, %#v) = %v, want error containing %q", c.key, c.value, err, c.want)
		}
	}
	if err := w.AddTensorF32("t", []uint64{2, 3}, make([]float32, 6)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		shape []uint64
		n     int
		want  string
	}{
		{"t", []uint64{1}, 1, "duplicate tensor name"},
		{"u", []uint64{2, 3}, 5, "5 values for shape [2 3], want 6"},
		{"u", []uint64{1, 1, 1, 1, 1}, 1, "5 dimensions"},
		{strings.Repeat("n", 64), []uint64{1}, 1, "longer than 63"},
		{"u", []uint64{1 << 32, 1 << 32}, 0, "overflows"},
		{"u", []uint64{4, 0}, 0, "dimension 1 of shape [4 0] is 0"},
	} {
		if err := w.AddTensorF32(c.name, c.shape, make([]float32, c.n)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("AddTensorF32(%q, %v) = %v, want error containing %q", c.name, c.shape, err, c.want)
		}
	}
}

func TestAccessors(t *testing.T) {
	kv := []KV{
		{"s", "text"}, {"u8", uint8(7)}, {"i64", int64(1 << 31)}, {"neg", int32(-1)},
		{"big", uint64(1 << 32)}, {"f", float32(0.5)}, {"d", 0.5},
	}
	path := filepath.Join(t.TempDir(), "acc.gguf")
	if err := newTestWriter(t, kv, nil).WriteFile(path); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := f.String("s"); s != "text" || err != nil {
		t.Errorf("String(s) = %q, %v", s, err)
	}
	if u, err := f.Uint32("u8"); u != 7 || err != nil {
		t.Errorf("Uint32(u8) = %d, %v", u, err)
	}
	if u, err := f.Uint32("i64"); u != 1<<31 || err != nil {
		t.Errorf("Uint32(i64) = %d, %v", u, err)
	}
	if x, err := f.Float32("f"); x != 0.5 || err != nil {
		t.Errorf("Float32(f) = %v, %v", x, err)
	}
	if v, ok := f.Value("d"); !ok || v != 0.5 {
		t.Errorf("Value(d) = %v, %v", v, ok)
	}
	if _, ok := f.Value("missing"); ok {
		t.Error("Value(missing) found")
	}
	for _, c := range []struct {
		get  func() error
		want string
	}{
		{func() error { _, err := f.String("u8"); return err }, `"u8" is uint8, want string`},
		{func() error { _, err := f.String("missing"); return err }, `"missing" not found`},
		{func() error { _, err := f.Uint32("neg"); return err }, `"neg" is int32 -1, which does not fit`},
		{func() error { _, err := f.Uint32("big"); return err }, `"big" is uint64 4294967296, which does not fit`},
		{func() error { _, err := f.Uint32("s"); return err }, `"s" is string, want an integer`},
		{func() error { _, err := f.Float32("d"); return err }, `"d" is float64, want float32`},
		{func() error { _, err := f.ReadF32("nope"); return err }, `tensor "nope" not found`},
	} {
		err := c.get()
		if err == nil || !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want %q prefixed by the path", err, c.want)
		}
	}
}

func TestTypeSizes(t *testing.T) {
	for _, c := range []struct {
		info TensorInfo
		want uint64
	}{
		{TensorInfo{Shape: []uint64{3, 5}, Type: TypeF32}, 60},
		{TensorInfo{Shape: []uint64{3, 5}, Type: TypeF16}, 30},
		{TensorInfo{Shape: []uint64{64, 3}, Type: TypeQ8_0}, 2 * 34 * 3},
		{TensorInfo{Shape: []uint64{32, 2}, Type: TypeQ4_0}, 2 * 18},
		{TensorInfo{Shape: []uint64{512}, Type: TypeQ4_K}, 2 * 144},
		{TensorInfo{Shape: nil, Type: TypeF32}, 4},
		{TensorInfo{Shape: []uint64{32, 0}, Type: TypeQ8_0}, 0},
	} {
		if got, err := c.info.Bytes(); got != c.want || err != nil {
			t.Errorf("%v %v: Bytes = %d, %v, want %d", c.info.Type, c.info.Shape, got, err, c.want)
		}
	}
	for _, c := range []struct {
		info TensorInfo
		want string
	}{
		{TensorInfo{Name: "q", Shape: []uint64{33}, Type: TypeQ8_0}, `"q": first dimension 33 is not a multiple of the Q8_0 block size 32`},
		{TensorInfo{Name: "u", Shape: []uint64{1}, Type: 99}, `"u": unknown tensor type 99`},
		{TensorInfo{Name: "s", Shape: []uint64{1 << 62, 4}, Type: TypeF32}, "overflows"},
		{TensorInfo{Name: "b", Shape: []uint64{1 << 62}, Type: TypeF32}, "do not fit"},
		{TensorInfo{Name: "q", Type: TypeQ4_0}, "first dimension 1 is not a multiple"},
	} {
		if _, err := c.info.Bytes(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Bytes(%+v) = %v, want error containing %q", c.info, err, c.want)
		}
	}
	if TypeQ8_0.String() != "Q8_0" || TypeF16.String() != "F16" || Type(99).String() != "type(99)" {
		t.Errorf("names: %v %v %v", TypeQ8_0, TypeF16, Type(99))
	}
	if TypeQ4_0.BlockSize() != 32 || TypeQ4_0.TypeSize() != 18 || Type(99).BlockSize() != 0 {
		t.Errorf("Q4_0 block %d/%d, unknown %d", TypeQ4_0.BlockSize(), TypeQ4_0.TypeSize(), Type(99).BlockSize())
	}
}

func TestHalfToFloat(t *testing.T) {
	for _, c := range []struct {
		h    uint16
		want float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 1.0 / (1 << 24)},
		{0x03ff, 1023.0 / (1 << 24)}, {0x0400, 1.0 / (1 << 14)}, {0x3555, 0.333251953125},
		{0x7c00, float32(math.Inf(1))}, {0xfc00, float32(math.Inf(-1))},
		{0x8000, float32(math.Copysign(0, -1))}, {0x0000, 0},
	} {
		if got := halfToFloat(c.h); math.Float32bits(got) != math.Float32bits(c.want) {
			t.Errorf("halfToFloat(%#04x) = %v, want %v", c.h, got, c.want)
		}
	}
	if got := halfToFloat(0x7e00); !math.IsNaN(float64(got)) {
		t.Errorf("halfToFloat(0x7e00) = %v, want NaN", got)
	}
}

// fieldAfter returns the offset just after the first occurrence of the
// GGUF string s (u64 length and bytes) in data.
func fieldAfter(t *testing.T, data []byte, s string) int {
	t.Helper()
	enc := binary.LittleEndian.AppendUint64(nil, uint64(len(s)))
	i := bytes.Index(data, append(enc, s...))
	if i < 0 {
		t.Fatalf("string %q not found", s)
	}
	return i + len(enc) + len(s)
}

func TestReadF32Types(t *testing.T) {
	data := validBytes(t)
	// Turn "last" ([8] F32) into an F16 tensor holding 1, -2, 0.5, ... .
	typeAt := fieldAfter(t, data, "last") + 4 + 8
	binary.LittleEndian.PutUint32(data[typeAt:], uint32(TypeF16))
	halves := []uint16{0x3c00, 0xc000, 0x3800, 0x0001, 0x7bff, 0x8000, 0x7c00, 0x3555}
	lastStart := len(data) - 32
	for i, h := range halves {
		binary.LittleEndian.PutUint16(data[lastStart+2*i:], h)
	}
	// Turn "matrix" ([7 3] F32, 84 bytes) into Q8_0 [64 1], 68 bytes: both
	// pad to 96, so the next tensor's offset stays right.
	shapeAt := fieldAfter(t, data, "matrix") + 4
	binary.LittleEndian.PutUint64(data[shapeAt:], 64)
	binary.LittleEndian.PutUint64(data[shapeAt+8:], 1)
	binary.LittleEndian.PutUint32(data[shapeAt+16:], uint32(TypeQ8_0))
	path := writeTemp(t, data)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.ReadF32("last")
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, len(halves))
	for i, h := range halves {
		want[i] = halfToFloat(h)
	}
	if !sameBits(got, want) || got[0] != 1 || got[1] != -2 || got[2] != 0.5 {
		t.Errorf("F16 data %v, want %v", got, want)
	}
	if _, err := f.ReadF32("matrix"); err == nil || !strings.Contains(err.Error(), `"matrix" has type Q8_0`) {
		t.Errorf("ReadF32 of Q8_0: %v", err)
	}
	os.Truncate(path, f.DataOffset)
	if _, err := f.ReadF32("odd"); err == nil || !strings.HasPrefix(err.Error(), path+`: tensor "odd": reading`) {
		t.Errorf("ReadF32 after truncation: %v", err)
	}
}

func TestTruncated(t *testing.T) {
	data := validBytes(t)
	f, err := Open(writeTemp(t, data))
	if err != nil {
		t.Fatal(err)
	}
	last := f.Tensors[len(f.Tensors)-1]
	if end := f.DataOffset + int64(last.Offset) + 32; end != int64(len(data)) {
		t.Fatalf("file is %d bytes, last tensor ends at %d: every cut must lose data", len(data), end)
	}
	dir := t.TempDir()
	for cut := range len(data) {
		path := filepath.Join(dir, fmt.Sprint("cut", cut))
		if err := os.WriteFile(path, data[:cut], 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Open(path)
		if err == nil {
			t.Fatalf("file cut at %d of %d bytes opened without error", cut, len(data))
		}
		if !strings.HasPrefix(err.Error(), path+": ") {
			t.Fatalf("cut %d: error %q does not start with the path", cut, err)
		}
		if cut > int(f.DataOffset) && !strings.Contains(err.Error(), "truncated file") {
			t.Fatalf("cut %d in the data: error %q does not say the file is truncated", cut, err)
		}
	}
}

func TestCorrupt(t *testing.T) {
	le := binary.LittleEndian
	kv := []KV{{alignmentKey, uint32(32)}, {"flag", true}, {"arr", []int32{1, 2}}, {"names", []string{"x"}}, {"b", uint8(1)}, {"c", uint8(2)}}
	tensors := []testTensor{{"t0", []uint64{4}, ramp(4, 1)}, {"t1", []uint64{8}, ramp(8, 1)}}
	var buf bytes.Buffer
	if err := newTestWriter(t, kv, tensors).encode(&buf); err != nil {
		t.Fatal(err)
	}
	valid := buf.Bytes()
	for _, c := range []struct {
		name  string
		patch func(b []byte) []byte
		want  string
	}{
		{"magic", func(b []byte) []byte { copy(b, "GGML"); return b }, `magic is "GGML"`},
		{"empty", func(b []byte) []byte { return nil }, "magic needs 4 bytes"},
		{"version1", func(b []byte) []byte { le.PutUint32(b[4:], 1); return b }, "unsupported GGUF version 1"},
		{"version4", func(b []byte) []byte { le.PutUint32(b[4:], 4); return b }, "unsupported GGUF version 4"},
		{"bigendian", func(b []byte) []byte { binary.BigEndian.PutUint32(b[4:], 3); return b }, "byte-swapped"},
		{"ntensors", func(b []byte) []byte { le.PutUint64(b[8:], math.MaxUint64); return b }, "tensor count 18446744073709551615 cannot fit"},
		{"nkv", func(b []byte) []byte { le.PutUint64(b[16:], 1<<40); return b }, "metadata count 1099511627776 cannot fit"},
		{"keylen", func(b []byte) []byte { le.PutUint64(b[24:], 1<<60); return b }, "metadata 0: key needs 1152921504606846976 bytes"},
		{"arraylen", func(b []byte) []byte {
			le.PutUint64(b[fieldAfter(t, b, "arr")+8:], 1<<61)
			return b
		}, `"arr"): array of 2305843009213693952 4-byte elements`},
		{"stringarraylen", func(b []byte) []byte {
			le.PutUint64(b[fieldAfter(t, b, "names")+8:], 1<<61)
			return b
		}, `"names"): array of 2305843009213693952 strings`},
		{"valuetype", func(b []byte) []byte { le.PutUint32(b[fieldAfter(t, b, "b"):], 13); return b }, `"b"): unknown value type 13`},
		{"nested", func(b []byte) []byte { le.PutUint32(b[fieldAfter(t, b, "arr")+4:], 9); return b }, "nested array"},
		{"elemtype", func(b []byte) []byte { le.PutUint32(b[fieldAfter(t, b, "arr")+4:], 77); return b }, "unknown array element type 77"},
		{"bool", func(b []byte) []byte { b[fieldAfter(t, b, "flag")+4] = 2; return b }, "bool value 2"},
		{"dupkey", func(b []byte) []byte { b[fieldAfter(t, b, "c")-1] = 'b'; return b }, `metadata 5: duplicate key "b"`},
		{"alignment", func(b []byte) []byte { le.PutUint32(b[fieldAfter(t, b, alignmentKey)+4:], 48); return b }, "general.alignment is 48"},
		{"alignmenttype", func(b []byte) []byte { le.PutUint32(b[fieldAfter(t, b, alignmentKey):], uint32(typeInt32)); return b }, "general.alignment is int32"},
		{"duptensor", func(b []byte) []byte { copy(b[fieldAfter(t, b, "t1")-2:], "t0"); return b }, `duplicate name "t0"`},
		{"dims", func(b []byte) []byte { le.PutUint32(b[fieldAfter(t, b, "t0"):], 5); return b }, `"t0": 5 dimensions`},
		{"tensortype", func(b []byte) []byte { le.PutUint32(b[fieldAfter(t, b, "t0")+12:], 41); return b }, `"t0": unknown tensor type 41`},
		{"offset", func(b []byte) []byte { le.PutUint64(b[fieldAfter(t, b, "t1")+16:], 64); return b }, `"t1": data offset 64, want 32`},
		{"zerodim", func(b []byte) []byte { le.PutUint64(b[fieldAfter(t, b, "t1")+4:], 0); return b }, `"t1": dimension 0 of shape [0] is 0`},
		{"bigshape", func(b []byte) []byte { le.PutUint64(b[fieldAfter(t, b, "t1")+4:], 1<<40); return b }, `"t1": data ends at byte`},
		{"namelen", func(b []byte) []byte { le.PutUint64(b[fieldAfter(t, b, "t0")-10:], 64); return b }, "name of 64 bytes is longer than 63"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeTemp(t, c.patch(bytes.Clone(valid)))
			_, err := Open(path)
			if err == nil || !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Open: %v, want an error starting with the path and containing %q", err, c.want)
			}
		})
	}
	if _, err := Open(writeTemp(t, valid)); err != nil {
		t.Errorf("unpatched file: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "missing.gguf")
	if _, err := Open(missing); !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), missing+": open: ") {
		t.Errorf("Open of a missing file: %v", err)
	}
	if _, err := Open(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Open of a directory: %v", err)
	}
}

// dirEntries lists the names in dir.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteFileAtomic(t *testing.T) {
	w := newTestWriter(t, allValues[:3], testTensors[:2])
	dir := t.TempDir()

	missing := filepath.Join(dir, "no", "such", "dir", "m.gguf")
	if err := w.WriteFile(missing); err == nil || !strings.HasPrefix(err.Error(), missing+": ") {
		t.Errorf("WriteFile into a missing directory: %v", err)
	}
	if names := dirEntries(t, dir); len(names) != 0 {
		t.Errorf("left behind %v", names)
	}

	// Renaming over a directory fails after the temporary file is written.
	target := filepath.Join(dir, "isdir")
	if err := os.MkdirAll(filepath.Join(target, "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFile(target); err == nil {
		t.Error("WriteFile over a directory succeeded")
	}
	if names := dirEntries(t, dir); !reflect.DeepEqual(names, []string{"isdir"}) {
		t.Errorf("directory holds %v, want only isdir", names)
	}
	if names := dirEntries(t, target); !reflect.DeepEqual(names, []string{"keep"}) {
		t.Errorf("target directory holds %v, want keep", names)
	}

	// A failure while writing leaves an existing file as it was.
	existing := filepath.Join(dir, "old.gguf")
	if err := os.WriteFile(existing, []byte("old contents"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := atomicfile.Write(existing, func(out io.Writer) error {
		out.Write(bytes.Repeat([]byte("new"), 1<<20))
		return boom
	})
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), existing+": ") {
		t.Errorf("atomicfile.Write error %v, want boom prefixed by the path", err)
	}
	if got, _ := os.ReadFile(existing); string(got) != "old contents" {
		t.Errorf("existing file now holds %d bytes", len(got))
	}
	if names := dirEntries(t, dir); !reflect.DeepEqual(names, []string{"isdir", "old.gguf"}) {
		t.Errorf("directory holds %v after a failed write", names)
	}

	// A successful write replaces the existing file and leaves nothing else.
	if err := w.WriteFile(existing); err != nil {
		t.Fatal(err)
	}
	if names := dirEntries(t, dir); !reflect.DeepEqual(names, []string{"isdir", "old.gguf"}) {
		t.Errorf("directory holds %v after a write", names)
	}
	f, err := Open(existing)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.KV) != 3 || len(f.Tensors) != 2 {
		t.Errorf("rewritten file has %d keys and %d tensors", len(f.KV), len(f.Tensors))
	}
	if st, _ := os.Stat(existing); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
}

func FuzzOpen(f *testing.F) {
	f.Add(validBytes(f))
	var small bytes.Buffer
	if err := newTestWriter(f, []KV{{alignmentKey, uint32(8)}, {"k", []string{"a"}}}, testTensors[:1]).encode(&small); err != nil {
		f.Fatal(err)
	}
	f.Add(small.Bytes())
	f.Add([]byte("GGUF"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "fuzz.gguf")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		g, err := Open(path)
		if err != nil {
			if !strings.HasPrefix(err.Error(), path+": ") {
				t.Fatalf("error %q does not start with the path", err)
			}
			return
		}
		for _, kv := range g.KV {
			if _, _, ok := tagOf(kv.Value); !ok {
				t.Fatalf("key %q holds unsupported %T", kv.Key, kv.Value)
			}
		}
		for _, ti := range g.Tensors {
			n, err := ti.Bytes()
			if err != nil {
				t.Fatalf("opened file has a bad tensor: %v", err)
			}
			if g.DataOffset+int64(ti.Offset)+int64(n) > int64(len(data)) {
				t.Fatalf("tensor %q extends past the file", ti.Name)
			}
			if ti.Type == TypeF32 || ti.Type == TypeF16 {
				v, err := g.ReadF32(ti.Name)
				if err != nil || uint64(len(v)) != ti.Elements() {
					t.Fatalf("ReadF32(%q): %d values, %v", ti.Name, len(v), err)
				}
			}
		}
	})
}
