package bridge

/*
#include <stdlib.h>
#include "wrap.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// LoRA is a native llama.cpp LoRA adapter (its own GGUF LoRA format).
type LoRA struct {
	ptr   *C.struct_llama_adapter_lora
	model *Model
	Path  string
}

// LoadLoRA loads a llama.cpp GGUF LoRA adapter for this model.
func (m *Model) LoadLoRA(path string) (*LoRA, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ptr == nil {
		return nil, ErrClosed
	}
	if err := checkGGUF(path); err != nil {
		return nil, fmt.Errorf("load LoRA: %w", err)
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var cerr *C.char
	ptr := C.bridge_lora_load(m.ptr, cpath, &cerr)
	if ptr == nil {
		return nil, cError("load LoRA "+path, cerr)
	}
	return &LoRA{ptr: ptr, model: m, Path: path}, nil
}

// Close frees the adapter; contexts must not use it afterwards.
func (l *LoRA) Close() {
	if l.ptr != nil {
		C.llama_adapter_lora_free(l.ptr)
		l.ptr = nil
	}
}

// SetLoRA applies the adapter with a scale to every following decode.
func (c *Context) SetLoRA(l *LoRA, scale float32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr == nil || l.ptr == nil {
		return ErrClosed
	}
	if l.model != c.model {
		return fmt.Errorf("LoRA %s was loaded for another model", l.Path)
	}
	if C.llama_set_adapter_lora(c.ptr, l.ptr, C.float(scale)) != 0 {
		return fmt.Errorf("LoRA %s: llama.cpp refused the adapter", l.Path)
	}
	return nil
}

// ClearLoRA removes all LoRA adapters from the context.
func (c *Context) ClearLoRA() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr == nil {
		return ErrClosed
	}
	C.llama_clear_adapter_lora(c.ptr)
	return nil
}
