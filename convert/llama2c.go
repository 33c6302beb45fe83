package convert

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"os"
)

// headerBytes is the size of the legacy llama2.c header: seven int32 values.
const headerBytes = 7 * 4

// versionedMagic starts the newer, versioned llama2.c export formats ("ak42").
const versionedMagic = 0x616b3432

// Llama2cConfig is the header of a llama2.c checkpoint.
type Llama2cConfig struct {
	Dim, HiddenDim, Layers, Heads, KVHeads, VocabSize, SeqLen int
	// SharedClassifier is true when the output classifier is the token
	// embedding (a positive vocab_size in the file).
	SharedClassifier bool
}

// HeadSize is the width of one attention head.
func (c Llama2cConfig) HeadSize() int { return c.Dim / c.Heads }

// KVDim is the width of the key and value projections.
func (c Llama2cConfig) KVDim() int { return c.Dim * c.KVHeads / c.Heads }

// validate checks the header values; errors name the llama2.c field.
func (c Llama2cConfig) validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{
		{"dim", c.Dim}, {"hidden_dim", c.HiddenDim}, {"n_layers", c.Layers}, {"n_heads", c.Heads},
		{"n_kv_heads", c.KVHeads}, {"vocab_size", c.VocabSize}, {"seq_len", c.SeqLen},
	} {
		if f.v <= 0 || f.v > math.MaxInt32 {
			return fmt.Errorf("%s is %d, want 1 to %d", f.name, f.v, math.MaxInt32)
		}
	}
	switch {
	case c.Dim%c.Heads != 0:
		return fmt.Errorf("dim %d is not a multiple of n_heads %d", c.Dim, c.Heads)
	case c.HeadSize()%2 != 0:
		return fmt.Errorf("head size dim/n_heads = %d is odd; rotary embeddings need it even", c.HeadSize())
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("n_heads %d is not a multiple of n_kv_heads %d", c.Heads, c.KVHeads)
	}
	return nil
}

// Checkpoint is a llama2.c model: its header and its fp32 weights, each
// stored row-major as in the file. Per-layer weights have one slice per layer.
type Checkpoint struct {
	Config         Llama2cConfig
	TokenEmbedding []float32   // [vocab, dim]
	RMSAtt         [][]float32 // per layer [dim]
	WQ             [][]float32 // per layer [dim, dim]
	WK             [][]float32 // per layer [kv_dim, dim]
	WV             [][]float32 // per layer [kv_dim, dim]
	WO             [][]float32 // per layer [dim, dim]
	RMSFFN         [][]float32 // per layer [dim]
	W1             [][]float32 // per layer [hidden, dim], the gate projection
	W2             [][]float32 // per layer [dim, hidden], the down projection
	W3             [][]float32 // per layer [hidden, dim], the up projection
	RMSFinal       []float32   // [dim]
	WCls           []float32   // [vocab, dim]; nil when the classifier is shared
}

// field is one array of a llama2.c checkpoint file, in file order.
type field struct {
	name  string       // llama2.c's name
	size  uint64       // float32 values, per layer for per-layer fields
	flat  *[]float32   // destination of a global field
	split *[][]float32 // destination of a per-layer field
}

// fields lists the arrays of the checkpoint file described by ck.Config, in
// file order. Fields without a destination (freq_cis) are skipped on read.
func (ck *Checkpoint) fields() []field {
	c := ck.Config
	d, h, kv, v := uint64(c.Dim), uint64(c.HiddenDim), uint64(c.KVDim()), uint64(c.VocabSize)
	freq := uint64(c.SeqLen) * uint64(c.HeadSize()/2)
	fs := []field{
		{name: "token_embedding_table", size: v * d, flat: &ck.TokenEmbedding},
		{name: "rms_att_weight", size: d, split: &ck.RMSAtt},
		{name: "wq", size: d * d, split: &ck.WQ},
		{name: "wk", size: kv * d, split: &ck.WK},
		{name: "wv", size: kv * d, split: &ck.WV},
		{name: "wo", size: d * d, split: &ck.WO},
		{name: "rms_ffn_weight", size: d, split: &ck.RMSFFN},
		{name: "w1", size: h * d, split: &ck.W1},
		{name: "w2", size: d * h, split: &ck.W2},
		{name: "w3", size: h * d, split: &ck.W3},
		{name: "rms_final_weight", size: d, flat: &ck.RMSFinal},
		{name: "freq_cis_real", size: freq},
		{name: "freq_cis_imag", size: freq},
	}
	if !c.SharedClassifier {
		fs = append(fs, field{name: "wcls", size: v * d, flat: &ck.WCls})
	}
	return fs
}

// fileSize returns the exact size in bytes of a checkpoint file with this
// layout, or false when it does not fit in an int64. Each field size is a
// product of two int32 values and cannot overflow on its own.
func fileSize(fs []field, layers int) (int64, bool) {
	total := uint64(headerBytes)
	for _, f := range fs {
		n := f.size
		if f.split != nil {
			hi, lo := bits.Mul64(n, uint64(layers))
			if hi != 0 {
				return 0, false
			}
			n = lo
		}
		hi, lo := bits.Mul64(n, 4)
		sum, carry := bits.Add64(total, lo, 0)
		if hi != 0 || carry != 0 || sum > math.MaxInt64 {
			return 0, false
		}
		total = sum
	}
	return int64(total), true
}

// ReadCheckpoint reads a llama2.c checkpoint in the legacy format: seven
// int32 values (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
// seq_len; a negative vocab_size means that an unshared classifier follows the
// other weights), then the fp32 weights. It validates the header and checks
// that the file size is exactly what the header implies. Errors start with
// the path.
func ReadCheckpoint(path string) (*Checkpoint, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() < headerBytes {
		return nil, fmt.Errorf("%s: file is %d bytes, shorter than the %d-byte llama2.c header", path, st.Size(), headerBytes)
	}
	r := bufio.NewReaderSize(fh, 1<<20)
	var hdr [7]int32
	if err := binary.Read(r, binary.LittleEndian, &hdr); err != nil {
		return nil, fmt.Errorf("%s: reading header: %w", path, err)
	}
	if uint32(hdr[0]) == versionedMagic {
		return nil, fmt.Errorf("%s: versioned llama2.c export (magic \"ak42\", version %d); only the legacy format is supported",
			path, hdr[1])
	}
	vocab := int(hdr[5])
	c := Llama2cConfig{
		Dim: int(hdr[0]), HiddenDim: int(hdr[1]), Layers: int(hdr[2]), Heads: int(hdr[3]),
		KVHeads: int(hdr[4]), VocabSize: max(vocab, -vocab), SeqLen: int(hdr[6]), SharedClassifier: vocab > 0,
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%s: header: %w", path, err)
	}
	ck := &Checkpoint{Config: c}
	fs := ck.fields()
	want, ok := fileSize(fs, c.Layers)
	if !ok {
		return nil, fmt.Errorf("%s: header %+v implies a file of more than 2^63 bytes", path, c)
	}
	if st.Size() != want {
		return nil, fmt.Errorf("%s: file is %d bytes, but header %+v implies %d bytes (%s)",
			path, st.Size(), c, want, sizeHint(st.Size()-want, c))
	}
	for _, f := range fs {
		if err := readField(r, f, c.Layers); err != nil {
			return nil, fmt.Errorf("%s: field %s: %w", path, f.name, err)
		}
	}
	return ck, nil
}

// sizeHint explains a size difference of diff bytes.
func sizeHint(diff int64, c Llama2cConfig) string {
	cls := 4 * int64(c.VocabSize) * int64(c.Dim)
	switch {
	case diff == cls && c.SharedClassifier:
		return "the extra bytes match an unshared classifier, but vocab_size is positive"
	case diff == -cls && !c.SharedClassifier:
		return "the missing bytes match the classifier that the negative vocab_size announces"
	case diff < 0:
		return "truncated file?"
	}
	return "trailing data or a different format?"
}

// readField reads one field into its destination or skips it.
func readField(r *bufio.Reader, f field, layers int) error {
	n := f.size
	if f.split != nil {
		n *= uint64(layers)
	}
	if f.flat == nil && f.split == nil {
		_, err := r.Discard(int(4 * n))
		return err
	}
	data := make([]float32, n)
	if err := binary.Read(r, binary.LittleEndian, data); err != nil {
		return err
	}
	if f.flat != nil {
		*f.flat = data
		return nil
	}
	per := make([][]float32, layers)
	for i := range per {
		per[i] = data[uint64(i)*f.size : uint64(i+1)*f.size : uint64(i+1)*f.size]
	}
	*f.split = per
	return nil
}

// Tokenizer is a llama2.c tokenizer.bin: one byte string and score per token.
type Tokenizer struct {
	MaxTokenLength int
	Pieces         []string // token id -> bytes, with spaces as ' '
	Scores         []float32
}

// ReadTokenizer reads a llama2.c tokenizer.bin holding vocabSize tokens: an
// int32 max_token_length, then per token a float32 score, an int32 length and
// that many bytes. The file must end after the last token. Errors start with
// the path.
func ReadTokenizer(path string, vocabSize int) (*Tokenizer, error) {
	if vocabSize <= 0 {
		return nil, fmt.Errorf("%s: vocabulary size %d, want > 0", path, vocabSize)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if len(b) < 4 {
		return nil, fmt.Errorf("%s: file is %d bytes, too short for max_token_length", path, len(b))
	}
	maxLen := int32(le.Uint32(b))
	if maxLen <= 0 {
		return nil, fmt.Errorf("%s: max_token_length is %d, want > 0", path, maxLen)
	}
	if rest := len(b) - 4; vocabSize > rest/8 {
		return nil, fmt.Errorf("%s: %d bytes cannot hold %d tokens", path, len(b), vocabSize)
	}
	t := &Tokenizer{MaxTokenLength: int(maxLen), Pieces: make([]string, vocabSize), Scores: make([]float32, vocabSize)}
	off := 4
	for i := range vocabSize {
		if len(b)-off < 8 {
			return nil, fmt.Errorf("%s: token %d: file ends at byte %d, inside the score and length", path, i, len(b))
		}
		t.Scores[i] = math.Float32frombits(le.Uint32(b[off:]))
		n := int32(le.Uint32(b[off+4:]))
		off += 8
		if n < 0 || n > maxLen {
			return nil, fmt.Errorf("%s: token %d: length %d at byte %d is outside 0..max_token_length %d", path, i, n, off-4, maxLen)
		}
		if int(n) > len(b)-off {
			return nil, fmt.Errorf("%s: token %d: %d bytes at byte %d run past the end of the file (%d bytes)", path, i, n, off, len(b))
		}
		t.Pieces[i] = string(b[off : off+int(n)])
		off += int(n)
	}
	if off != len(b) {
		return nil, fmt.Errorf("%s: %d bytes follow the last of %d tokens; is the vocabulary size right?", path, len(b)-off, vocabSize)
	}
	return t, nil
}
