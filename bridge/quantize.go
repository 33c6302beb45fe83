package bridge

/*
#include <stdlib.h>
#include "wrap.h"
*/
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"
)

// quantTypes maps the names Quantize accepts to llama.cpp file types.
var quantTypes = map[string]C.int{
	"f32": C.LLAMA_FTYPE_ALL_F32, "f16": C.LLAMA_FTYPE_MOSTLY_F16,
	"q8_0": C.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_0": C.LLAMA_FTYPE_MOSTLY_Q4_0,
}

// Quantize converts the GGUF model at in to type typ (f32, f16, q8_0,
// q4_0) with llama.cpp's quantizer, writing out atomically.
func Quantize(in, out, typ string, threads int) error {
	ensureInit()
	ft, ok := quantTypes[strings.ToLower(typ)]
	if !ok {
		return fmt.Errorf("quantize: type %q is not one of f32, f16, q8_0, q4_0", typ)
	}
	if err := checkGGUF(in); err != nil {
		return fmt.Errorf("quantize: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".tmp*")
	if err != nil {
		return fmt.Errorf("quantize: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cin, cout := C.CString(in), C.CString(tmp.Name())
	defer C.free(unsafe.Pointer(cin))
	defer C.free(unsafe.Pointer(cout))
	var cerr *C.char
	if !C.bridge_quantize(cin, cout, ft, C.int(threads), &cerr) {
		return cError("quantize "+in, cerr)
	}
	return os.Rename(tmp.Name(), out)
}
