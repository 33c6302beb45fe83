package bridge

/*
#include <stdlib.h>
#include "wrap.h"
#include "iapt.h"
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
)

// Adapter is a loaded IAPT adapter (shared/IAPT-SPEC.md): per-layer
// generators that turn a prompt's instruction rows into SoftTokens soft
// tokens at prefill. Several adapters can be loaded on one model at once.
type Adapter struct {
	mu          sync.RWMutex
	ptr         *C.struct_llama_iapt_adapter
	model       *Model
	Path        string
	SoftTokens  int
	Bottleneck  int
	ShareUpDown bool
	Params      uint64
}

// LoadAdapter reads an IAPT adapter GGUF and validates it against the model
// (architecture, width, layer count, every tensor's name, shape and values).
func (m *Model) LoadAdapter(path string) (*Adapter, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ptr == nil {
		return nil, ErrClosed
	}
	if err := checkGGUF(path); err != nil {
		return nil, fmt.Errorf("load IAPT adapter: %w", err)
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var cerr *C.char
	ptr := C.iapt_adapter_load(m.ptr, cpath, &cerr)
	if ptr == nil {
		return nil, cError("load IAPT adapter", cerr)
	}
	return &Adapter{
		ptr: ptr, model: m, Path: path,
		SoftTokens:  int(C.iapt_adapter_n_soft(ptr)),
		Bottleneck:  int(C.iapt_adapter_bottleneck(ptr)),
		ShareUpDown: bool(C.iapt_adapter_share_updown(ptr)),
		Params:      uint64(C.iapt_adapter_n_params(ptr)),
	}, nil
}

// Meta returns a string metadata value of the adapter file.
func (a *Adapter) Meta(key string) (string, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.ptr == nil {
		return "", false
	}
	ckey := C.CString(key)
	defer C.free(unsafe.Pointer(ckey))
	n := int(C.iapt_adapter_meta_str(a.ptr, ckey, nil, 0))
	if n < 0 {
		return "", false
	}
	buf := make([]byte, n+1)
	C.iapt_adapter_meta_str(a.ptr, ckey, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	return string(buf[:n]), true
}

// Close frees the adapter. No context may be prefilling with it then;
// sequences already prefilled keep their soft tokens in the KV cache.
func (a *Adapter) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ptr != nil {
		C.iapt_adapter_free(a.ptr)
		a.ptr = nil
	}
}

// Prefilled describes a sequence after Prefill.
type Prefilled struct {
	// Offset is the number of soft-token rows before the prompt (0 without
	// an adapter): prompt token i sits at position Offset+i.
	Offset int
	// NextPos is the position of the next token to decode.
	NextPos int
	// LastIndex is the batch index of the last prompt token, whose logits
	// predict the first generated token.
	LastIndex int
}

// Prefill decodes a prompt into sequence seq, which must be empty. With an
// adapter, SoftTokens placeholder rows come first (positions 0..m-1) and the
// whole prefill must fit one ubatch; the adapter is switched on for this
// decode only. allLogits asks for the logits of every prompt token (batch
// index Offset+i for prompt token i); otherwise only the last one.
func (c *Context) Prefill(seq int, prompt []Token, a *Adapter, allLogits bool) (Prefilled, error) {
	if len(prompt) == 0 {
		return Prefilled{}, fmt.Errorf("prefill: empty prompt")
	}
	off := 0
	if a != nil {
		off = a.SoftTokens
	}
	n := off + len(prompt)
	p := c.Params()
	if n > p.NCtx {
		return Prefilled{}, fmt.Errorf("prefill: prompt of %d tokens (+%d soft tokens) exceeds the context of %d", len(prompt), off, p.NCtx)
	}
	b := NewBatch(n, 1)
	defer b.Close()
	for i := 0; i < off; i++ {
		// Placeholder rows: any valid id; their content is replaced.
		if _, err := b.Add(0, i, []int{seq}, false); err != nil {
			return Prefilled{}, err
		}
	}
	for i, t := range prompt {
		if _, err := b.Add(t, off+i, []int{seq}, allLogits || i == len(prompt)-1); err != nil {
			return Prefilled{}, err
		}
	}
	res := Prefilled{Offset: off, NextPos: n, LastIndex: n - 1}
	if a == nil {
		return res, c.Decode(b)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	a.mu.RLock()
	defer a.mu.RUnlock()
	if c.ptr == nil || a.ptr == nil {
		return Prefilled{}, ErrClosed
	}
	if a.model != c.model {
		return Prefilled{}, fmt.Errorf("prefill: adapter %s was loaded for another model", a.Path)
	}
	if n > p.NUbatch {
		return Prefilled{}, fmt.Errorf("prefill with adapter %s: %d soft tokens + %d prompt tokens = %d rows do not fit one ubatch of %d; raise NUbatch or shorten the prompt",
			a.Path, off, len(prompt), n, p.NUbatch)
	}
	var cerr *C.char
	if rc := C.iapt_decode_prefill(c.ptr, a.ptr, b.b, &cerr); rc != 0 {
		return Prefilled{}, cError("prefill", cerr)
	}
	return res, nil
}
