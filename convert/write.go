package convert

import (
	"fmt"
	"strings"

	"github.com/iapt-go/iapt/gguf"
)

// Token types of llama.cpp's vocabulary (enum llama_token_type).
const (
	tokenNormal  int32 = 1
	tokenUnknown int32 = 2
	tokenControl int32 = 3
	tokenByte    int32 = 6
)

// The special tokens of the llama sentencepiece vocabulary.
const (
	unkID = 0
	bosID = 1
	eosID = 2
	// firstByteID is the id of <0x00>; the 256 byte tokens follow it.
	firstByteID = 3
)

// ggufVocab maps llama2.c pieces to llama.cpp's sentencepiece vocabulary:
// ids 0-2 become <unk>, <s>, </s>; ids 3-258 the byte tokens <0x00>..<0xFF>;
// in every other piece spaces become U+2581. It checks that the pieces have
// the llama layout, which llama2.c stores as "<unk>", "\n<s>\n", "\n</s>\n"
// and, for byte NN, either "<0xNN>" or the character U+00NN in UTF-8 (the
// tokenizer.bin of the original llama2.c release).
func (t *Tokenizer) ggufVocab() ([]string, []int32, error) {
	n := len(t.Pieces)
	if n < firstByteID+256 {
		return nil, nil, fmt.Errorf("vocabulary has %d tokens, fewer than the %d of llama's special and byte tokens", n, firstByteID+256)
	}
	tokens := make([]string, n)
	types := make([]int32, n)
	for id, p := range t.Pieces {
		switch {
		case id <= eosID:
			want := [...]string{"<unk>", "<s>", "</s>"}[id]
			if strings.TrimSpace(p) != want {
				return nil, nil, fmt.Errorf("token %d is %q, want %q", id, p, want)
			}
			tokens[id], types[id] = want, tokenControl
			if id == unkID {
				types[id] = tokenUnknown
			}
		case id < firstByteID+256:
			want := fmt.Sprintf("<0x%02X>", id-firstByteID)
			if char := string(rune(id - firstByteID)); !strings.EqualFold(p, want) && p != char {
				return nil, nil, fmt.Errorf("token %d is %q, want the byte token %q or %q", id, p, want, char)
			}
			tokens[id], types[id] = want, tokenByte
		default:
			tokens[id], types[id] = strings.ReplaceAll(p, " ", "\u2581"), tokenNormal
		}
	}
	return tokens, types, nil
}

// WriteGGUF writes ck and tok as an all-F32 GGUF file of llama.cpp's "llama"
// architecture, with general.name set to name. llama2.c already stores the
// query and key projections in llama.cpp's rotary layout, so matrices are
// copied as they are; a row-major [out, in] matrix gets the ggml shape
// [in, out]. A shared classifier writes no output.weight, and llama.cpp ties
// the output to token_embd.weight. The file is written atomically.
func WriteGGUF(ck *Checkpoint, tok *Tokenizer, path, name string) error {
	c := ck.Config
	if err := c.validate(); err != nil {
		return fmt.Errorf("%s: checkpoint config: %w", path, err)
	}
	if len(tok.Pieces) != c.VocabSize || len(tok.Scores) != c.VocabSize {
		return fmt.Errorf("%s: tokenizer has %d pieces and %d scores, the checkpoint's vocab_size is %d",
			path, len(tok.Pieces), len(tok.Scores), c.VocabSize)
	}
	for _, f := range ck.fields() {
		if f.split != nil && len(*f.split) != c.Layers {
			return fmt.Errorf("%s: checkpoint field %s has %d layers, want %d", path, f.name, len(*f.split), c.Layers)
		}
	}
	tokens, types, err := tok.ggufVocab()
	if err != nil {
		return fmt.Errorf("%s: tokenizer: %w", path, err)
	}
	w := gguf.NewWriter()
	for _, kv := range []gguf.KV{
		{Key: "general.architecture", Value: "llama"},
		{Key: "general.name", Value: name},
		{Key: "general.file_type", Value: uint32(0)}, // all F32
		{Key: "llama.vocab_size", Value: uint32(c.VocabSize)},
		{Key: "llama.context_length", Value: uint32(c.SeqLen)},
		{Key: "llama.embedding_length", Value: uint32(c.Dim)},
		{Key: "llama.block_count", Value: uint32(c.Layers)},
		{Key: "llama.feed_forward_length", Value: uint32(c.HiddenDim)},
		{Key: "llama.attention.head_count", Value: uint32(c.Heads)},
		{Key: "llama.attention.head_count_kv", Value: uint32(c.KVHeads)},
		{Key: "llama.rope.dimension_count", Value: uint32(c.HeadSize())},
		{Key: "llama.attention.layer_norm_rms_epsilon", Value: float32(1e-5)},
		{Key: "llama.rope.freq_base", Value: float32(10000)},
		{Key: "tokenizer.ggml.model", Value: "llama"},
		{Key: "tokenizer.ggml.tokens", Value: tokens},
		{Key: "tokenizer.ggml.scores", Value: tok.Scores},
		{Key: "tokenizer.ggml.token_type", Value: types},
		{Key: "tokenizer.ggml.bos_token_id", Value: uint32(bosID)},
		{Key: "tokenizer.ggml.eos_token_id", Value: uint32(eosID)},
		{Key: "tokenizer.ggml.unknown_token_id", Value: uint32(unkID)},
		{Key: "tokenizer.ggml.add_bos_token", Value: true},
		{Key: "tokenizer.ggml.add_eos_token", Value: false},
	} {
		if err := w.Set(kv.Key, kv.Value); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	d, h, kv, v := uint64(c.Dim), uint64(c.HiddenDim), uint64(c.KVDim()), uint64(c.VocabSize)
	type tensor struct {
		name  string
		shape []uint64
		data  []float32
	}
	ts := []tensor{{"token_embd.weight", []uint64{d, v}, ck.TokenEmbedding}}
	for l := range c.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		ts = append(ts,
			tensor{p + "attn_norm.weight", []uint64{d}, ck.RMSAtt[l]},
			tensor{p + "attn_q.weight", []uint64{d, d}, ck.WQ[l]},
			tensor{p + "attn_k.weight", []uint64{d, kv}, ck.WK[l]},
			tensor{p + "attn_v.weight", []uint64{d, kv}, ck.WV[l]},
			tensor{p + "attn_output.weight", []uint64{d, d}, ck.WO[l]},
			tensor{p + "ffn_norm.weight", []uint64{d}, ck.RMSFFN[l]},
			tensor{p + "ffn_gate.weight", []uint64{d, h}, ck.W1[l]},
			tensor{p + "ffn_down.weight", []uint64{h, d}, ck.W2[l]},
			tensor{p + "ffn_up.weight", []uint64{d, h}, ck.W3[l]},
		)
	}
	ts = append(ts, tensor{"output_norm.weight", []uint64{d}, ck.RMSFinal})
	if !c.SharedClassifier {
		ts = append(ts, tensor{"output.weight", []uint64{d, v}, ck.WCls})
	}
	for _, t := range ts {
		if err := w.AddTensorF32(t.name, t.shape, t.data); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return w.WriteFile(path)
}
