package bridge

/*
#include <stdlib.h>
#include "wrap.h"
*/
import "C"

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"unsafe"
)

// Token is a vocabulary id.
type Token = int32

// ModelParams are the options of LoadModel. The zero value is usable.
type ModelParams struct {
	// NoMmap reads the file into memory instead of mapping it.
	NoMmap bool
	// VocabOnly loads only the vocabulary (tokenizer, templates), no weights.
	VocabOnly bool
	// NoRepack keeps weights in their file layout instead of llama.cpp's
	// CPU-repacked one; needed to read quantised tensors with TensorF32.
	NoRepack bool
}

// ModelInfo is what a GGUF base model says about itself.
type ModelInfo struct {
	Path         string
	Architecture string
	Name         string
	Description  string
	Layers       int
	Embd         int
	Heads        int
	HeadsKV      int
	Vocab        int
	CtxTrain     int
	Params       uint64
	SizeBytes    uint64
	ChatTemplate string // empty when the GGUF has none
	BOS, EOS     Token
	AddBOS       bool
	AddEOS       bool
}

// Model is a loaded GGUF base model.
type Model struct {
	mu   sync.RWMutex
	ptr  *C.struct_llama_model
	voc  *C.struct_llama_vocab
	info ModelInfo
}

// checkGGUF refuses, before llama.cpp sees it, a path that is missing, a
// folder, empty, or not a GGUF file.
func checkGGUF(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("%s: is a directory, not a GGUF file", path)
	}
	if st.Size() == 0 {
		return fmt.Errorf("%s: file is empty", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil || !bytes.Equal(magic, []byte("GGUF")) {
		return fmt.Errorf("%s: not a GGUF file (magic %q, want \"GGUF\")", path, magic)
	}
	return nil
}

// LoadModel loads a GGUF model for CPU inference.
func LoadModel(path string, p ModelParams) (*Model, error) {
	ensureInit()
	if err := checkGGUF(path); err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var cerr *C.char
	ptr := C.bridge_model_load(cpath, C.bool(!p.NoMmap), C.bool(p.VocabOnly), C.bool(!p.NoRepack), &cerr)
	if ptr == nil {
		return nil, cError("load model "+path, cerr)
	}
	m := &Model{ptr: ptr, voc: C.llama_model_get_vocab(ptr)}
	m.info = m.readInfo(path)
	return m, nil
}

func (m *Model) readInfo(path string) ModelInfo {
	info := ModelInfo{
		Path:     path,
		Layers:   int(C.llama_model_n_layer(m.ptr)),
		Embd:     int(C.llama_model_n_embd(m.ptr)),
		Vocab:    int(C.llama_vocab_n_tokens(m.voc)),
		CtxTrain: int(C.llama_model_n_ctx_train(m.ptr)),
		Params:   uint64(C.llama_model_n_params(m.ptr)),
		BOS:      Token(C.llama_vocab_bos(m.voc)),
		EOS:      Token(C.llama_vocab_eos(m.voc)),
		AddBOS:   bool(C.llama_vocab_get_add_bos(m.voc)),
		AddEOS:   bool(C.llama_vocab_get_add_eos(m.voc)),
	}
	if info.Layers > 0 { // a vocab-only model has no layer parameters
		info.Heads = int(C.llama_model_n_head(m.ptr))
		info.HeadsKV = int(C.llama_model_n_head_kv(m.ptr))
	}
	info.SizeBytes = uint64(C.llama_model_size(m.ptr))
	info.Architecture, _ = m.metaLocked("general.architecture")
	info.Name, _ = m.metaLocked("general.name")
	if t := C.llama_model_chat_template(m.ptr, nil); t != nil {
		info.ChatTemplate = C.GoString(t)
	}
	buf := make([]byte, 256)
	n := C.llama_model_desc(m.ptr, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	if n > 0 {
		info.Description = string(buf[:min(int(n), len(buf)-1)])
	}
	return info
}

// Close frees the model. Contexts and adapters made from it must be closed
// first; Close after Close is a no-op.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ptr != nil {
		C.llama_model_free(m.ptr)
		m.ptr, m.voc = nil, nil
	}
	return nil
}

// Info returns the model's metadata summary.
func (m *Model) Info() ModelInfo { return m.info }

// Meta returns a metadata value of the GGUF as a string (arrays are not
// supported by llama.cpp's accessor).
func (m *Model) Meta(key string) (string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ptr == nil {
		return "", ErrClosed
	}
	v, ok := m.metaLocked(key)
	if !ok {
		return "", fmt.Errorf("%s: no metadata key %q", m.info.Path, key)
	}
	return v, nil
}

func (m *Model) metaLocked(key string) (string, bool) {
	ckey := C.CString(key)
	defer C.free(unsafe.Pointer(ckey))
	buf := make([]byte, 1024)
	for {
		n := int(C.llama_model_meta_val_str(m.ptr, ckey, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf))))
		if n < 0 {
			return "", false
		}
		if n < len(buf) {
			return string(buf[:n]), true
		}
		buf = make([]byte, n+1)
	}
}

// MetaUint reads an integer metadata value.
func (m *Model) MetaUint(key string) (uint64, error) {
	s, err := m.Meta(key)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: metadata %q = %q is not an unsigned integer", m.info.Path, key, s)
	}
	return v, nil
}

// Tokenize turns text into tokens. addSpecial adds BOS/EOS as the model
// asks; parseSpecial turns special-token text such as "<s>" into its token.
func (m *Model) Tokenize(text string, addSpecial, parseSpecial bool) ([]Token, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ptr == nil {
		return nil, ErrClosed
	}
	ctext := C.CString(text)
	defer C.free(unsafe.Pointer(ctext))
	n := len(text) + 8
	for {
		toks := make([]Token, n)
		got := int(C.llama_tokenize(m.voc, ctext, C.int32_t(len(text)), (*C.llama_token)(unsafe.Pointer(&toks[0])), C.int32_t(n), C.bool(addSpecial), C.bool(parseSpecial)))
		if got >= 0 {
			return toks[:got], nil
		}
		if got == -(1<<31) || -got <= n {
			return nil, fmt.Errorf("tokenize: text of %d bytes is too long", len(text))
		}
		n = -got
	}
}

// TokenPiece returns the text of one token; special renders control tokens.
func (m *Model) TokenPiece(tok Token, special bool) (string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ptr == nil {
		return "", ErrClosed
	}
	if tok < 0 || int(tok) >= m.info.Vocab {
		return "", fmt.Errorf("token %d is out of the vocabulary (0..%d)", tok, m.info.Vocab-1)
	}
	buf := make([]byte, 64)
	for {
		n := int(C.llama_token_to_piece(m.voc, C.llama_token(tok), (*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)), 0, C.bool(special)))
		if n >= 0 {
			return string(buf[:n]), nil
		}
		buf = make([]byte, -n)
	}
}

// Detokenize turns tokens back into text.
func (m *Model) Detokenize(toks []Token, removeSpecial, unparseSpecial bool) (string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ptr == nil {
		return "", ErrClosed
	}
	if len(toks) == 0 {
		return "", nil
	}
	for _, t := range toks {
		if t < 0 || int(t) >= m.info.Vocab {
			return "", fmt.Errorf("token %d is out of the vocabulary (0..%d)", t, m.info.Vocab-1)
		}
	}
	n := len(toks)*8 + 16
	for {
		buf := make([]byte, n)
		got := int(C.llama_detokenize(m.voc, (*C.llama_token)(unsafe.Pointer(&toks[0])), C.int32_t(len(toks)), (*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(n), C.bool(removeSpecial), C.bool(unparseSpecial)))
		if got >= 0 {
			return string(buf[:got]), nil
		}
		n = -got
	}
}

// IsEOG reports whether tok ends a generation (EOS, EOT and the like).
func (m *Model) IsEOG(tok Token) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.ptr != nil && bool(C.llama_vocab_is_eog(m.voc, C.llama_token(tok)))
}

// ChatMessage is one turn of a conversation.
type ChatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// ErrNoChatTemplate is returned by ApplyChatTemplate for a model without a
// chat template when no template is given.
var ErrNoChatTemplate = errors.New("the model has no chat template (tokenizer.chat_template)")

// ApplyChatTemplate renders a conversation with tmpl, or with the model's own
// template when tmpl is empty. addAssistant ends the prompt with the opening
// of an assistant turn. llama.cpp recognises a fixed list of template
// families (it has no Jinja engine); others are refused with an error.
func (m *Model) ApplyChatTemplate(tmpl string, msgs []ChatMessage, addAssistant bool) (string, error) {
	if tmpl == "" {
		tmpl = m.info.ChatTemplate
	}
	if tmpl == "" {
		return "", fmt.Errorf("%s: %w", m.info.Path, ErrNoChatTemplate)
	}
	return RenderChatTemplate(tmpl, msgs, addAssistant)
}

// RenderChatTemplate renders a conversation with a template text or the name
// of one of llama.cpp's built-in templates (e.g. "chatml", "llama2").
func RenderChatTemplate(tmpl string, msgs []ChatMessage, addAssistant bool) (string, error) {
	ensureInit()
	if len(msgs) == 0 {
		return "", errors.New("chat template: no messages")
	}
	ctmpl := C.CString(tmpl)
	defer C.free(unsafe.Pointer(ctmpl))
	roles := make([]*C.char, len(msgs))
	contents := make([]*C.char, len(msgs))
	total := len(tmpl)
	for i, msg := range msgs {
		roles[i] = C.CString(msg.Role)
		contents[i] = C.CString(msg.Content)
		total += len(msg.Role) + len(msg.Content)
	}
	defer func() {
		for i := range msgs {
			C.free(unsafe.Pointer(roles[i]))
			C.free(unsafe.Pointer(contents[i]))
		}
	}()
	n := 2*total + 256
	for {
		buf := (*C.char)(C.malloc(C.size_t(n)))
		var cerr *C.char
		got := int(C.bridge_chat_apply(ctmpl, &roles[0], &contents[0], C.size_t(len(msgs)), C.bool(addAssistant), buf, C.int32_t(n), &cerr))
		if got < 0 {
			C.free(unsafe.Pointer(buf))
			return "", cError("chat template", cerr)
		}
		if got <= n {
			s := C.GoStringN(buf, C.int(got))
			C.free(unsafe.Pointer(buf))
			return s, nil
		}
		C.free(unsafe.Pointer(buf))
		n = got + 1
	}
}

// TensorF32 reads a model tensor as float32 (dequantised through ggml),
// with its shape in ggml order (ne0 first). Quantised tensors need the model
// loaded with NoRepack.
func (m *Model) TensorF32(name string) ([]float32, []int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ptr == nil {
		return nil, nil, ErrClosed
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var ne [4]C.int64_t
	var cerr *C.char
	n := int64(C.bridge_tensor_f32(m.ptr, cname, nil, 0, &ne[0], &cerr))
	if n < 0 {
		return nil, nil, cError(m.info.Path, cerr)
	}
	shape := []int{int(ne[0])}
	for i := 1; i < 4; i++ {
		if ne[i] > 1 || (i == 1 && ne[2] > 1) || (i <= 2 && ne[3] > 1) {
			shape = append(shape, int(ne[i]))
		}
	}
	if n == 0 {
		return nil, shape, nil
	}
	data := make([]float32, n)
	if got := int64(C.bridge_tensor_f32(m.ptr, cname, (*C.float)(unsafe.Pointer(&data[0])), C.int64_t(n), &ne[0], &cerr)); got != n {
		return nil, nil, cError(m.info.Path, cerr)
	}
	return data, shape, nil
}
