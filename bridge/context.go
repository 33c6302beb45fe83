package bridge

/*
#include <stdlib.h>
#include "ggml-backend.h"
#include "wrap.h"
*/
import "C"

import (
	"fmt"
	"strings"
	"sync"
	"unsafe"
)

// ContextParams are the options of NewContext. Zero values take defaults:
// NCtx from the model's training context, NBatch 512 (capped at NCtx),
// NUbatch = NBatch, NSeqMax 1, Threads 4 (both decode and batch), KV cache
// F16, flash attention auto.
type ContextParams struct {
	NCtx, NBatch, NUbatch, NSeqMax int
	Threads, ThreadsBatch          int
	// TypeK and TypeV are the KV cache types: "f16" (default), "f32",
	// "q8_0", "q4_0".
	TypeK, TypeV string
	// FlashAttn is "auto" (default), "on" or "off".
	FlashAttn string
	// SplitKV gives each sequence its own KV buffer (llama.cpp's
	// non-unified cache). The default, a unified cache, is what IAPT
	// prefills need: sequences of unequal length never get split across
	// ubatches.
	SplitKV bool
	// CountNodes makes the context count the graph nodes it computes (see
	// GraphStats); for tests, it splits computation at every node.
	CountNodes bool
}

// Context is an inference state over a model: KV cache, batch buffers,
// logits. Use it from one goroutine.
type Context struct {
	mu     sync.Mutex
	ptr    *C.struct_llama_context
	model  *Model
	params ContextParams
	nVocab int
	stats  *C.struct_bridge_graph_stats // with CountNodes, else nil
}

var kvTypes = map[string]C.enum_ggml_type{
	"f32": C.GGML_TYPE_F32, "f16": C.GGML_TYPE_F16, "q8_0": C.GGML_TYPE_Q8_0, "q4_0": C.GGML_TYPE_Q4_0,
}

func kvType(field, name string) (C.enum_ggml_type, error) {
	if name == "" {
		name = "f16"
	}
	t, ok := kvTypes[strings.ToLower(name)]
	if !ok {
		return 0, fmt.Errorf("context: %s %q is not a KV cache type (f32, f16, q8_0, q4_0)", field, name)
	}
	return t, nil
}

// NewContext creates a context on the model.
func (m *Model) NewContext(p ContextParams) (*Context, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ptr == nil {
		return nil, ErrClosed
	}
	if m.info.Layers == 0 || p.NCtx < 0 || p.NBatch < 0 || p.NUbatch < 0 || p.NSeqMax < 0 || p.Threads < 0 || p.ThreadsBatch < 0 {
		return nil, fmt.Errorf("context: negative size in %+v, or a vocab-only model", p)
	}
	if p.NCtx == 0 {
		p.NCtx = m.info.CtxTrain
	}
	if p.NBatch == 0 {
		p.NBatch = min(512, p.NCtx)
	}
	if p.NUbatch == 0 || p.NUbatch > p.NBatch {
		p.NUbatch = p.NBatch
	}
	if p.NSeqMax == 0 {
		p.NSeqMax = 1
	}
	if p.Threads == 0 {
		p.Threads = 4
	}
	if p.ThreadsBatch == 0 {
		p.ThreadsBatch = p.Threads
	}
	cp := C.llama_context_default_params()
	cp.n_ctx = C.uint32_t(p.NCtx)
	cp.n_batch = C.uint32_t(p.NBatch)
	cp.n_ubatch = C.uint32_t(p.NUbatch)
	cp.n_seq_max = C.uint32_t(p.NSeqMax)
	cp.n_threads = C.int32_t(p.Threads)
	cp.n_threads_batch = C.int32_t(p.ThreadsBatch)
	cp.kv_unified = C.bool(!p.SplitKV)
	cp.no_perf = true
	var err error
	if cp.type_k, err = kvType("TypeK", p.TypeK); err != nil {
		return nil, err
	}
	if cp.type_v, err = kvType("TypeV", p.TypeV); err != nil {
		return nil, err
	}
	switch strings.ToLower(p.FlashAttn) {
	case "", "auto":
		cp.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_AUTO
	case "on":
		cp.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_ENABLED
	case "off":
		cp.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_DISABLED
	default:
		return nil, fmt.Errorf("context: FlashAttn %q is not auto, on or off", p.FlashAttn)
	}
	var stats *C.struct_bridge_graph_stats
	if p.CountNodes {
		stats = (*C.struct_bridge_graph_stats)(C.calloc(1, C.size_t(unsafe.Sizeof(C.struct_bridge_graph_stats{}))))
		cp.cb_eval = C.ggml_backend_sched_eval_callback(C.bridge_count_nodes)
		cp.cb_eval_user_data = unsafe.Pointer(stats)
	}
	var cerr *C.char
	ptr := C.bridge_context_new(m.ptr, cp, &cerr)
	if ptr == nil {
		C.free(unsafe.Pointer(stats))
		return nil, cError("context on "+m.info.Path, cerr)
	}
	p.NCtx = int(C.llama_n_ctx(ptr))
	p.NBatch = int(C.llama_n_batch(ptr))
	p.NUbatch = int(C.llama_n_ubatch(ptr))
	return &Context{ptr: ptr, model: m, params: p, nVocab: m.info.Vocab, stats: stats}, nil
}

// Params returns the context's effective parameters.
func (c *Context) Params() ContextParams { return c.params }

// Model returns the model the context runs.
func (c *Context) Model() *Model { return c.model }

// Close frees the context; Close after Close is a no-op.
func (c *Context) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr != nil {
		C.llama_free(c.ptr)
		c.ptr = nil
		C.free(unsafe.Pointer(c.stats))
		c.stats = nil
	}
	return nil
}

// GraphStats returns the number of graph nodes computed since the last call
// (and how many of them are IAPT generator nodes), then resets the counts.
// It needs a context made with CountNodes.
func (c *Context) GraphStats() (nodes, iaptNodes int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr == nil {
		return 0, 0, ErrClosed
	}
	if c.stats == nil {
		return 0, 0, fmt.Errorf("graph stats: context was made without CountNodes")
	}
	nodes, iaptNodes = int(c.stats.nodes), int(c.stats.iapt_nodes)
	c.stats.nodes, c.stats.iapt_nodes = 0, 0
	return nodes, iaptNodes, nil
}

// SetThreads changes the number of threads for generation and for batches.
func (c *Context) SetThreads(gen, batch int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr == nil {
		return ErrClosed
	}
	C.llama_set_n_threads(c.ptr, C.int32_t(gen), C.int32_t(batch))
	return nil
}

// Batch is a set of tokens to decode together, each with its position,
// sequence ids and whether its logits are wanted.
type Batch struct {
	b        C.struct_llama_batch
	capacity int
	nSeqMax  int
	// nOut counts the tokens with logits requested so far.
	nOut int
}

// NewBatch allocates a batch for up to capacity tokens, each in up to
// nSeqMax sequences. Free it with Close.
func NewBatch(capacity, nSeqMax int) *Batch {
	if capacity < 1 {
		capacity = 1
	}
	if nSeqMax < 1 {
		nSeqMax = 1
	}
	return &Batch{b: C.llama_batch_init(C.int32_t(capacity), 0, C.int32_t(nSeqMax)), capacity: capacity, nSeqMax: nSeqMax}
}

// Close frees the batch; Close after Close is a no-op.
func (b *Batch) Close() {
	if b.capacity > 0 {
		C.llama_batch_free(b.b)
		b.capacity = 0
	}
}

// Len is the number of tokens in the batch.
func (b *Batch) Len() int { return int(b.b.n_tokens) }

// Clear empties the batch for reuse.
func (b *Batch) Clear() { b.b.n_tokens = 0; b.nOut = 0 }

// Add appends a token at position pos of the given sequences; logits asks
// for its output row. It returns the token's index in the batch.
func (b *Batch) Add(tok Token, pos int, seqs []int, logits bool) (int, error) {
	n := int(b.b.n_tokens)
	if n >= b.capacity {
		return 0, fmt.Errorf("batch: full at %d tokens", b.capacity)
	}
	if len(seqs) == 0 || len(seqs) > b.nSeqMax {
		return 0, fmt.Errorf("batch: token needs 1..%d sequence ids, got %d", b.nSeqMax, len(seqs))
	}
	unsafe.Slice(b.b.token, b.capacity)[n] = C.llama_token(tok)
	unsafe.Slice(b.b.pos, b.capacity)[n] = C.llama_pos(pos)
	unsafe.Slice(b.b.n_seq_id, b.capacity)[n] = C.int32_t(len(seqs))
	ids := unsafe.Slice(unsafe.Slice(b.b.seq_id, b.capacity)[n], b.nSeqMax)
	for i, s := range seqs {
		ids[i] = C.llama_seq_id(s)
	}
	var l C.int8_t
	if logits {
		l = 1
		b.nOut++
	}
	unsafe.Slice(b.b.logits, b.capacity)[n] = l
	b.b.n_tokens++
	return n, nil
}

// Decode runs the model on the batch, filling the KV cache and the logits
// of the tokens that asked for them.
func (c *Context) Decode(b *Batch) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.decodeLocked(b)
}

func (c *Context) decodeLocked(b *Batch) error {
	if c.ptr == nil {
		return ErrClosed
	}
	if b == nil || b.capacity == 0 {
		return fmt.Errorf("decode: batch is nil or closed")
	}
	n := b.Len()
	if n == 0 {
		return fmt.Errorf("decode: empty batch")
	}
	toks := unsafe.Slice(b.b.token, n)
	pos := unsafe.Slice(b.b.pos, n)
	nseq := unsafe.Slice(b.b.n_seq_id, n)
	seqIDs := unsafe.Slice(b.b.seq_id, n)
	for i := 0; i < n; i++ {
		if toks[i] < 0 || int(toks[i]) >= c.nVocab {
			return fmt.Errorf("decode: token %d at batch index %d is out of the vocabulary (0..%d)", toks[i], i, c.nVocab-1)
		}
		if pos[i] < 0 || int(pos[i]) >= c.params.NCtx {
			return fmt.Errorf("decode: position %d at batch index %d is outside the context (0..%d)", pos[i], i, c.params.NCtx-1)
		}
		for _, s := range unsafe.Slice(seqIDs[i], nseq[i]) {
			if s < 0 || int(s) >= c.params.NSeqMax {
				return fmt.Errorf("decode: sequence id %d at batch index %d is outside 0..%d (NSeqMax)", s, i, c.params.NSeqMax-1)
			}
		}
	}
	if n > c.params.NBatch {
		return fmt.Errorf("decode: batch of %d tokens exceeds the context's n_batch %d", n, c.params.NBatch)
	}
	var cerr *C.char
	if rc := C.bridge_decode(c.ptr, b.b, &cerr); rc != 0 {
		return cError("decode", cerr)
	}
	return nil
}

// Logits returns a copy of the logits of batch index i of the last Decode
// (i = -1: the last token that asked for logits).
func (c *Context) Logits(i int) ([]float32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr == nil {
		return nil, ErrClosed
	}
	p := C.llama_get_logits_ith(c.ptr, C.int32_t(i))
	if p == nil {
		return nil, fmt.Errorf("logits: batch index %d has no logits (not requested in the last decode)", i)
	}
	out := make([]float32, c.nVocab)
	copy(out, unsafe.Slice((*float32)(unsafe.Pointer(p)), c.nVocab))
	return out, nil
}

// RemoveTokens drops the cached tokens of sequence seq at positions
// [p0, p1) (p1 < 0: to the end; seq < 0: all sequences).
func (c *Context) RemoveTokens(seq, p0, p1 int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr == nil {
		return ErrClosed
	}
	if !C.llama_memory_seq_rm(C.llama_get_memory(c.ptr), C.llama_seq_id(seq), C.llama_pos(p0), C.llama_pos(p1)) {
		return fmt.Errorf("remove tokens: llama.cpp refused to remove [%d,%d) of sequence %d", p0, p1, seq)
	}
	return nil
}

// ClearSequences empties the whole KV cache.
func (c *Context) ClearSequences() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr == nil {
		return ErrClosed
	}
	C.llama_memory_clear(C.llama_get_memory(c.ptr), C.bool(true))
	return nil
}

// SeqPosMax is the largest cached position of sequence seq, or -1 if empty.
func (c *Context) SeqPosMax(seq int) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr == nil {
		return 0, ErrClosed
	}
	return int(C.llama_memory_seq_pos_max(C.llama_get_memory(c.ptr), C.llama_seq_id(seq))), nil
}
