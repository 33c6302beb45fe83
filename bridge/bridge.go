// Package bridge is the cgo binding of the project's patched llama.cpp: GGUF
// models and their metadata, contexts, tokenizer, chat templates, batched
// decoding, logits, the sampler chain, native LoRA adapters, IAPT adapters,
// quantisation and tensor access for the trainer.
//
// Every failure in C or C++ comes back as a Go error that names the file and
// the problem. Models and contexts are freed by Close; using them afterwards
// is an error, not a crash. A Context is not safe for concurrent use: drive
// each one from a single goroutine (its methods lock, so misuse is
// serialised rather than corrupting memory).
//
// The libraries are built by the Makefile (make libs) into ../build/lib.
package bridge

/*
#cgo CFLAGS: -I${SRCDIR}/../build/llama.cpp/llama/include -I${SRCDIR}/../build/llama.cpp/ggml/include -I${SRCDIR}/../plugin
#cgo CXXFLAGS: -std=c++17 -I${SRCDIR}/../build/llama.cpp/llama/include -I${SRCDIR}/../build/llama.cpp/ggml/include -I${SRCDIR}/../plugin
#cgo LDFLAGS: -L${SRCDIR}/../build/lib -Wl,--start-group -lllama -lggml-cpu -lggml -Wl,--end-group -lstdc++ -lm -lpthread -ldl
#include <stdlib.h>
#include "wrap.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"
)

var initOnce sync.Once

// ensureInit initialises llama.cpp's backend and log capture once.
func ensureInit() {
	initOnce.Do(func() {
		C.bridge_init()
		if os.Getenv("IAPT_VERBOSE") != "" {
			C.bridge_set_verbose(true)
		}
	})
}

// SetVerbose turns llama.cpp's own informational logging on stderr on or off
// (errors are always returned as Go errors). IAPT_VERBOSE=1 turns it on too.
func SetVerbose(on bool) {
	ensureInit()
	C.bridge_set_verbose(C.bool(on))
}

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("bridge: use after Close")

// cError turns a malloc'ed C error string into a Go error prefixed with
// context, freeing the string.
func cError(prefix string, cerr *C.char) error {
	if cerr == nil {
		return errors.New(prefix)
	}
	defer C.free(unsafe.Pointer(cerr))
	return fmt.Errorf("%s: %s", prefix, C.GoString(cerr))
}

// SystemInfo reports llama.cpp's build and CPU features.
func SystemInfo() string {
	ensureInit()
	return C.GoString(C.llama_print_system_info())
}
