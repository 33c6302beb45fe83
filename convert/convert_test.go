package convert

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/iapt-go/iapt/gguf"
)

// tiny is a small GQA model: kv_dim 4, head size 4, 3 normal tokens.
var tiny = Llama2cConfig{Dim: 8, HiddenDim: 12, Layers: 2, Heads: 2, KVHeads: 1, VocabSize: 262, SeqLen: 4, SharedClassifier: true}

// synthArray is one array of a synthetic checkpoint, in file order.
type synthArray struct {
	name string
	data []float32
}

// synthArrays returns the arrays of a checkpoint with config c; value j of
// array k is k*1000 + j/8, so every weight is distinct and exact in float32.
func synthArrays(c Llama2cConfig) []synthArray {
	kvDim := c.Dim * c.KVHeads / c.Heads
	var out []synthArray
	add := func(name string, n int) {
		data := make([]float32, n)
		for j := range data {
			data[j] = float32(len(out)*1000) + float32(j)/8
		}
		out = append(out, synthArray{name, data})
	}
	add("emb", c.VocabSize*c.Dim)
	for _, f := range []struct {
		name string
		n    int
	}{
		{"rms_att", c.Dim}, {"wq", c.Dim * c.Dim}, {"wk", kvDim * c.Dim}, {"wv", kvDim * c.Dim},
		{"wo", c.Dim * c.Dim}, {"rms_ffn", c.Dim}, {"w1", c.HiddenDim * c.Dim}, {"w2", c.Dim * c.HiddenDim},
		{"w3", c.HiddenDim * c.Dim},
	} {
		for l := range c.Layers {
			add(fmt.Sprintf("%s.%d", f.name, l), f.n)
		}
	}
	add("rms_final", c.Dim)
	add("freq_real", c.SeqLen*c.Dim/c.Heads/2)
	add("freq_imag", c.SeqLen*c.Dim/c.Heads/2)
	if !c.SharedClassifier {
		add("wcls", c.VocabSize*c.Dim)
	}
	return out
}

// byName finds a synthetic array.
func byName(arrays []synthArray, name string) []float32 {
	for _, a := range arrays {
		if a.name == name {
			return a.data
		}
	}
	panic("no synthetic array " + name)
}

// checkpointBytes encodes a legacy llama2.c checkpoint with header hdr.
func checkpointBytes(hdr [7]int32, arrays []synthArray) []byte {
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, hdr)
	for _, a := range arrays {
		binary.Write(&buf, binary.LittleEndian, a.data)
	}
	return buf.Bytes()
}

func header(c Llama2cConfig) [7]int32 {
	v := int32(c.VocabSize)
	if !c.SharedClassifier {
		v = -v
	}
	return [7]int32{int32(c.Dim), int32(c.HiddenDim), int32(c.Layers), int32(c.Heads), int32(c.KVHeads), v, int32(c.SeqLen)}
}

// tinyPieces is a llama2.c-style vocabulary of n tokens.
func tinyPieces(n int) []string {
	p := []string{"<unk>", "\n<s>\n", "\n</s>\n"}
	for b := range 256 { // both forms llama2.c has used for byte tokens
		if b%2 == 0 {
			p = append(p, fmt.Sprintf("<0x%02X>", b))
		} else {
			p = append(p, string(rune(b)))
		}
	}
	for i := len(p); i < n; i++ {
		p = append(p, fmt.Sprintf(" w%d x", i))
	}
	return p
}

// tokenizerBytes encodes a llama2.c tokenizer.bin; token i has score -i/4.
func tokenizerBytes(maxLen int32, pieces []string) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, uint32(maxLen))
	for i, p := range pieces {
		b = le.AppendUint32(b, math.Float32bits(-float32(i)/4))
		b = le.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return b
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func unshared(c Llama2cConfig) Llama2cConfig {
	c.SharedClassifier = false
	return c
}

func TestReadCheckpoint(t *testing.T) {
	for _, c := range []Llama2cConfig{tiny, unshared(tiny)} {
		t.Run(fmt.Sprint("shared=", c.SharedClassifier), func(t *testing.T) {
			arrays := synthArrays(c)
			ck, err := ReadCheckpoint(writeFile(t, "model.bin", checkpointBytes(header(c), arrays)))
			if err != nil {
				t.Fatal(err)
			}
			if ck.Config != c {
				t.Errorf("config %+v, want %+v", ck.Config, c)
			}
			check := func(name string, got []float32) {
				t.Helper()
				if want := byName(arrays, name); !slices.Equal(got, want) {
					t.Errorf("%s: got %d values %v..., want %v...", name, len(got), got[:min(3, len(got))], want[:3])
				}
			}
			check("emb", ck.TokenEmbedding)
			check("rms_final", ck.RMSFinal)
			for l := range c.Layers {
				for name, got := range map[string][][]float32{
					"rms_att": ck.RMSAtt, "wq": ck.WQ, "wk": ck.WK, "wv": ck.WV, "wo": ck.WO,
					"rms_ffn": ck.RMSFFN, "w1": ck.W1, "w2": ck.W2, "w3": ck.W3,
				} {
					if len(got) != c.Layers {
						t.Fatalf("%s has %d layers", name, len(got))
					}
					check(fmt.Sprintf("%s.%d", name, l), got[l])
				}
			}
			if c.SharedClassifier {
				if ck.WCls != nil {
					t.Error("shared classifier read a WCls")
				}
			} else {
				check("wcls", ck.WCls)
			}
		})
	}
}

func TestReadCheckpointErrors(t *testing.T) {
	good := checkpointBytes(header(tiny), synthArrays(tiny))
	withHeader := func(edit func(h *[7]int32)) []byte {
		h := header(tiny)
		edit(&h)
		return append(checkpointBytes(h, nil), good[headerBytes:]...)
	}
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"short", good[:20], "file is 20 bytes, shorter than the 28-byte llama2.c header"},
		{"dim0", withHeader(func(h *[7]int32) { h[0] = 0 }), "header: dim is 0"},
		{"hidden", withHeader(func(h *[7]int32) { h[1] = -5 }), "header: hidden_dim is -5"},
		{"layers", withHeader(func(h *[7]int32) { h[2] = 0 }), "header: n_layers is 0"},
		{"heads", withHeader(func(h *[7]int32) { h[3] = 3 }), "dim 8 is not a multiple of n_heads 3"},
		{"kvheads", withHeader(func(h *[7]int32) { h[4] = 3 }), "n_heads 2 is not a multiple of n_kv_heads 3"},
		{"kvheads0", withHeader(func(h *[7]int32) { h[4] = 0 }), "header: n_kv_heads is 0"},
		{"oddhead", withHeader(func(h *[7]int32) { h[0], h[3] = 6, 2 }), "head size dim/n_heads = 3 is odd"},
		{"vocab0", withHeader(func(h *[7]int32) { h[5] = 0 }), "header: vocab_size is 0"},
		{"vocabmin", withHeader(func(h *[7]int32) { h[5] = math.MinInt32 }), "vocab_size is 2147483648"},
		{"seq", withHeader(func(h *[7]int32) { h[6] = -1 }), "header: seq_len is -1"},
		{"huge", withHeader(func(h *[7]int32) { h[0], h[2], h[3], h[4] = 1<<30, 1<<30, 2, 2 }), "more than 2^63 bytes"},
		{"versioned", withHeader(func(h *[7]int32) { h[0], h[1] = 0x616b3432, 1 }), `versioned llama2.c export (magic "ak42", version 1)`},
		{"extra", append(slices.Clone(good), 0, 0, 0, 0), "implies " + fmt.Sprint(len(good)) + " bytes (trailing data"},
		{"cut", good[:len(good)-1], "truncated file?"},
		{"negvocab", withHeader(func(h *[7]int32) { h[5] = -h[5] }), "the missing bytes match the classifier"},
		{"posvocab", checkpointBytes(header(tiny), synthArrays(unshared(tiny))), "the extra bytes match an unshared classifier"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, "model.bin", c.data)
			_, err := ReadCheckpoint(path)
			if err == nil || !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ReadCheckpoint: %v, want an error starting with the path and containing %q", err, c.want)
			}
		})
	}
	if _, err := ReadCheckpoint(filepath.Join(t.TempDir(), "none.bin")); err == nil || !os.IsNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
}

func TestReadTokenizer(t *testing.T) {
	pieces := tinyPieces(262)
	path := writeFile(t, "tokenizer.bin", tokenizerBytes(27, pieces))
	tok, err := ReadTokenizer(path, 262)
	if err != nil {
		t.Fatal(err)
	}
	if tok.MaxTokenLength != 27 || !slices.Equal(tok.Pieces, pieces) || tok.Scores[10] != -2.5 || len(tok.Scores) != 262 {
		t.Errorf("tokenizer: max %d, %d pieces, score[10] %v", tok.MaxTokenLength, len(tok.Pieces), tok.Scores[10])
	}
	good := tokenizerBytes(27, pieces)
	neg := bytes.Clone(good)
	binary.LittleEndian.PutUint32(neg[4+4:], math.MaxUint32) // length of token 0 = -1
	for _, c := range []struct {
		name  string
		data  []byte
		vocab int
		want  string
	}{
		{"vocab0", good, 0, "vocabulary size 0"},
		{"empty", nil, 262, "too short for max_token_length"},
		{"maxlen", tokenizerBytes(0, pieces), 262, "max_token_length is 0"},
		{"fewer", good, 263, "token 262: file ends at byte"},
		{"huge", good, 1 << 20, "cannot hold 1048576 tokens"},
		{"more", good, 261, "follow the last of 261 tokens"},
		{"cut", good[:len(good)-2], 262, "token 261: 7 bytes at byte"},
		{"cutheader", good[:len(good)-10], 262, "token 261: file ends at byte"},
		{"long", tokenizerBytes(5, pieces), 262, "token 2: length 6 at byte 34 is outside 0..max_token_length 5"},
		{"negative", neg, 262, "token 0: length -1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, "tokenizer.bin", c.data)
			_, err := ReadTokenizer(path, c.vocab)
			if err == nil || !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ReadTokenizer: %v, want an error starting with the path and containing %q", err, c.want)
			}
		})
	}
}

func TestWriteGGUF(t *testing.T) {
	for _, c := range []Llama2cConfig{tiny, unshared(tiny)} {
		t.Run(fmt.Sprint("shared=", c.SharedClassifier), func(t *testing.T) {
			arrays := synthArrays(c)
			ck, err := ReadCheckpoint(writeFile(t, "model.bin", checkpointBytes(header(c), arrays)))
			if err != nil {
				t.Fatal(err)
			}
			pieces := tinyPieces(c.VocabSize)
			tok := &Tokenizer{MaxTokenLength: 10, Pieces: pieces, Scores: make([]float32, len(pieces))}
			for i := range tok.Scores {
				tok.Scores[i] = -float32(i) / 4
			}
			out := filepath.Join(t.TempDir(), "tiny.gguf")
			if err := WriteGGUF(ck, tok, out, "tiny"); err != nil {
				t.Fatal(err)
			}
			f, err := gguf.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			wantKV := map[string]any{
				"general.architecture": "llama", "general.name": "tiny", "general.file_type": uint32(0),
				"llama.context_length": uint32(4), "llama.embedding_length": uint32(8), "llama.block_count": uint32(2),
				"llama.feed_forward_length": uint32(12), "llama.attention.head_count": uint32(2),
				"llama.attention.head_count_kv": uint32(1), "llama.rope.dimension_count": uint32(4),
				"llama.attention.layer_norm_rms_epsilon": float32(1e-5), "llama.rope.freq_base": float32(10000),
				"llama.vocab_size": uint32(262), "tokenizer.ggml.model": "llama",
				"tokenizer.ggml.bos_token_id": uint32(1), "tokenizer.ggml.eos_token_id": uint32(2),
				"tokenizer.ggml.unknown_token_id": uint32(0), "tokenizer.ggml.add_bos_token": true,
				"tokenizer.ggml.add_eos_token": false, "tokenizer.ggml.scores": tok.Scores,
			}
			for k, want := range wantKV {
				if got, ok := f.Value(k); !ok || !reflect.DeepEqual(got, want) {
					t.Errorf("%s = %#v, want %#v", k, got, want)
				}
			}
			if v, _ := f.Value("tokenizer.ggml.tokens"); true {
				toks, _ := v.([]string)
				want := []string{"<unk>", "<s>", "</s>", "<0x00>", "<0x0A>", "<0x0B>", "<0xFF>", "▁w259▁x", "▁w261▁x"}
				if len(toks) != 262 || !slices.Equal([]string{toks[0], toks[1], toks[2], toks[3], toks[13], toks[14], toks[258], toks[259], toks[261]}, want) {
					t.Errorf("tokens %q", toks)
				}
			}
			if v, _ := f.Value("tokenizer.ggml.token_type"); true {
				types, _ := v.([]int32)
				if len(types) != 262 || !slices.Equal([]int32{types[0], types[1], types[2], types[3], types[258], types[259], types[261]}, []int32{2, 3, 3, 6, 6, 1, 1}) {
					t.Errorf("token types %v", types)
				}
			}
			type want struct {
				shape []uint64
				data  string
			}
			wantT := map[string]want{
				"token_embd.weight":  {[]uint64{8, 262}, "emb"},
				"output_norm.weight": {[]uint64{8}, "rms_final"},
			}
			for l := range 2 {
				p := fmt.Sprintf("blk.%d.", l)
				for name, w := range map[string]want{
					"attn_norm.weight":   {[]uint64{8}, "rms_att"},
					"attn_q.weight":      {[]uint64{8, 8}, "wq"},
					"attn_k.weight":      {[]uint64{8, 4}, "wk"},
					"attn_v.weight":      {[]uint64{8, 4}, "wv"},
					"attn_output.weight": {[]uint64{8, 8}, "wo"},
					"ffn_norm.weight":    {[]uint64{8}, "rms_ffn"},
					"ffn_gate.weight":    {[]uint64{8, 12}, "w1"},
					"ffn_down.weight":    {[]uint64{12, 8}, "w2"},
					"ffn_up.weight":      {[]uint64{8, 12}, "w3"},
				} {
					wantT[p+name] = want{w.shape, fmt.Sprintf("%s.%d", w.data, l)}
				}
			}
			if !c.SharedClassifier {
				wantT["output.weight"] = want{[]uint64{8, 262}, "wcls"}
			}
			if len(f.Tensors) != len(wantT) {
				t.Errorf("%d tensors, want %d", len(f.Tensors), len(wantT))
			}
			for name, w := range wantT {
				ti, ok := f.Tensor(name)
				if !ok || ti.Type != gguf.TypeF32 || !slices.Equal(ti.Shape, w.shape) {
					t.Errorf("%s: %+v (found %v), want F32 %v", name, ti, ok, w.shape)
					continue
				}
				got, err := f.ReadF32(name)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, byName(arrays, w.data)) {
					t.Errorf("%s: data differs from %s", name, w.data)
				}
			}
		})
	}
}

func TestWriteGGUFRefusesBadInput(t *testing.T) {
	ck, err := ReadCheckpoint(writeFile(t, "model.bin", checkpointBytes(header(tiny), synthArrays(tiny))))
	if err != nil {
		t.Fatal(err)
	}
	tokWith := func(edit func(p []string) []string) *Tokenizer {
		p := edit(tinyPieces(262))
		return &Tokenizer{MaxTokenLength: 10, Pieces: p, Scores: make([]float32, len(p))}
	}
	same := func(p []string) []string { return p }
	fewLayers := *ck
	fewLayers.WQ = ck.WQ[:1]
	for _, c := range []struct {
		name string
		ck   *Checkpoint
		tok  *Tokenizer
		want string
	}{
		{"size", ck, tokWith(func(p []string) []string { return p[:261] }), "tokenizer has 261 pieces and 261 scores, the checkpoint's vocab_size is 262"},
		{"unk", ck, tokWith(func(p []string) []string { p[0] = "<pad>"; return p }), `tokenizer: token 0 is "<pad>", want "<unk>"`},
		{"eos", ck, tokWith(func(p []string) []string { p[2] = "\n<s>\n"; return p }), `token 2 is "\n<s>\n", want "</s>"`},
		{"byte", ck, tokWith(func(p []string) []string { p[13] = "\r"; return p }), `token 13 is "\r", want the byte token "<0x0A>" or "\n"`},
		{"byte high", ck, tokWith(func(p []string) []string { p[258] = "\xff"; return p }), `token 258 is "\xff", want the byte token "<0xFF>" or "ÿ"`},
		{"layers", &fewLayers, tokWith(same), "field wq has 1 layers, want 2"},
		{"missing", &Checkpoint{Config: tiny, RMSAtt: ck.RMSAtt, WQ: ck.WQ, WK: ck.WK, WV: ck.WV, WO: ck.WO, RMSFFN: ck.RMSFFN, W1: ck.W1, W2: ck.W2, W3: ck.W3},
			tokWith(same), `tensor "token_embd.weight": 0 values`},
		{"config", &Checkpoint{Config: Llama2cConfig{Dim: 8}}, tokWith(same), "checkpoint config: hidden_dim is 0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "x.gguf")
			err := WriteGGUF(c.ck, c.tok, out, "x")
			if err == nil || !strings.HasPrefix(err.Error(), out+": ") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("WriteGGUF: %v, want an error starting with the path and containing %q", err, c.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("output exists after a failed write: %v", err)
			}
		})
	}
	short := &Tokenizer{Pieces: tinyPieces(262)[:100], Scores: make([]float32, 100)}
	if _, _, err := short.ggufVocab(); err == nil || !strings.Contains(err.Error(), "vocabulary has 100 tokens") {
		t.Errorf("short vocabulary: %v", err)
	}
}

func TestExtractEmscriptenBundle(t *testing.T) {
	dir := t.TempDir()
	data := []byte("MODELBYTES--tokenizer-bytes")
	dataPath := filepath.Join(dir, "b.data")
	if err := os.WriteFile(dataPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	js := func(table string) string {
		p := filepath.Join(t.TempDir(), "b.js")
		src := `var Module;(function(){function loadPackage(m){}` + "\n" +
			`loadPackage({"files": ` + table + `, "remote_package_size": 27})})();`
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	out := filepath.Join(dir, "out")
	got, err := ExtractEmscriptenBundle(js(`[{"filename":"/model.bin","start":0,"end":10},
		{"filename": "/sub/tokenizer.bin", "start": 12, "end": 27, "audio": 0}]`), dataPath, out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"model.bin": filepath.Join(out, "model.bin"), "sub/tokenizer.bin": filepath.Join(out, "sub", "tokenizer.bin")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("paths %v, want %v", got, want)
	}
	for name, content := range map[string]string{"model.bin": "MODELBYTES", "sub/tokenizer.bin": "tokenizer-bytes"} {
		if b, err := os.ReadFile(want[name]); err != nil || string(b) != content {
			t.Errorf("%s holds %q (%v), want %q", name, b, err, content)
		}
	}
	for _, c := range []struct {
		name  string
		table string
		want  string
	}{
		{"past end", `[{"filename":"/m","start":20,"end":28}]`, `"/m" has byte range [20, 28), outside the 27 bytes`},
		{"reversed", `[{"filename":"/m","start":5,"end":4}]`, "byte range [5, 4)"},
		{"negative", `[{"filename":"/m","start":-1,"end":4}]`, "byte range [-1, 4)"},
		{"escape", `[{"filename":"/../m","start":0,"end":4}]`, `"/../m" does not name a file inside`},
		{"absolute", `[{"filename":"//etc/m","start":0,"end":4}]`, `"//etc/m" does not name a file inside`},
		{"dup", `[{"filename":"/m","start":0,"end":4},{"filename":"m","start":0,"end":4}]`, `"m" is listed twice`},
		{"noname", `[{"start":0,"end":4}]`, "entry 0 has no filename"},
		{"empty", `[]`, "table is empty"},
		{"broken", `[{"filename":"/m","start":"x"}]`, "file table at byte"},
	} {
		t.Run(c.name, func(t *testing.T) {
			jsPath := js(c.table)
			dest := t.TempDir()
			_, err := ExtractEmscriptenBundle(jsPath, dataPath, dest)
			if err == nil || !strings.HasPrefix(err.Error(), jsPath+": ") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one starting with the script path and containing %q", err, c.want)
			}
			if es, _ := os.ReadDir(dest); len(es) != 0 {
				t.Errorf("wrote %d entries despite the error", len(es))
			}
		})
	}
	noTable := filepath.Join(dir, "plain.js")
	os.WriteFile(noTable, []byte("console.log(1)"), 0o644)
	if _, err := ExtractEmscriptenBundle(noTable, dataPath, out); err == nil || !strings.Contains(err.Error(), "no Emscripten file table") {
		t.Errorf("script without a table: %v", err)
	}
	twoTables := filepath.Join(dir, "two.js")
	os.WriteFile(twoTables, []byte(`a({"files":[]}); b({"files" : []})`), 0o644)
	if _, err := ExtractEmscriptenBundle(twoTables, dataPath, out); err == nil || !strings.Contains(err.Error(), "2 Emscripten file tables") {
		t.Errorf("script with two tables: %v", err)
	}
}

// llama2cDir returns the folder with the real stories15M model.bin and
// tokenizer.bin, or "" when there is none.
func llama2cDir() string {
	for _, dir := range []string{os.Getenv("IAPT_LLAMA2C_DIR"), filepath.Join("..", "models", "cache", "llama2c")} {
		if dir == "" {
			continue
		}
		_, err1 := os.Stat(filepath.Join(dir, "model.bin"))
		_, err2 := os.Stat(filepath.Join(dir, "tokenizer.bin"))
		if err1 == nil && err2 == nil {
			return dir
		}
	}
	return ""
}

func TestStories15M(t *testing.T) {
	dir := llama2cDir()
	if dir == "" {
		t.Skip("no model.bin and tokenizer.bin in $IAPT_LLAMA2C_DIR or ../models/cache/llama2c")
	}
	modelPath := filepath.Join(dir, "model.bin")
	ck, err := ReadCheckpoint(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	want := Llama2cConfig{Dim: 288, HiddenDim: 768, Layers: 6, Heads: 6, KVHeads: 6, VocabSize: 32000, SeqLen: 256, SharedClassifier: true}
	if ck.Config != want {
		t.Fatalf("config %+v, want %+v", ck.Config, want)
	}
	tok, err := ReadTokenizer(filepath.Join(dir, "tokenizer.bin"), 32000)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "stories15M.gguf")
	if err := WriteGGUF(ck, tok, out, "stories15M"); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Tensors) != 2+6*9 {
		t.Errorf("%d tensors, want %d", len(f.Tensors), 2+6*9)
	}
	if _, ok := f.Tensor("output.weight"); ok {
		t.Error("shared classifier written as output.weight")
	}
	v, _ := f.Value("tokenizer.ggml.tokens")
	toks, _ := v.([]string)
	if len(toks) != 32000 || toks[1] != "<s>" || toks[3+'\n'] != "<0x0A>" || !slices.Contains(toks, "▁Once") {
		t.Errorf("tokens: %d, %q %q, ▁Once present: %v", len(toks), toks[1], toks[3+'\n'], slices.Contains(toks, "▁Once"))
	}

	raw, err := os.ReadFile(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	// Float offsets into model.bin, computed from the llama2.c layout.
	const d, h, L, V = 288, 768, 6, 32000
	layerBase := func(field int) int { // field 0 rms_att, 1 wq, 2 wk, 3 wv, 4 wo, 5 rms_ffn, 6 w1, 7 w2, 8 w3
		sizes := []int{d, d * d, d * d, d * d, d * d, d, h * d, d * h, h * d}
		off := V * d
		for _, s := range sizes[:field] {
			off += L * s
		}
		return off
	}
	at := func(i int) float32 {
		return math.Float32frombits(binary.LittleEndian.Uint32(raw[28+4*i:]))
	}
	for _, c := range []struct {
		tensor string
		index  int // element in the GGUF tensor
		file   int // float index in model.bin
	}{
		{"token_embd.weight", 0, 0},
		{"token_embd.weight", 1000*d + 5, 1000*d + 5},
		{"token_embd.weight", V*d - 1, V*d - 1},
		{"blk.0.attn_norm.weight", 7, layerBase(0) + 7},
		{"blk.3.attn_k.weight", 17*d + 100, layerBase(2) + 3*d*d + 17*d + 100},
		{"blk.5.attn_output.weight", d*d - 1, layerBase(4) + 5*d*d + d*d - 1},
		{"blk.2.ffn_down.weight", 40*h + 700, layerBase(7) + 2*d*h + 40*h + 700},
		{"blk.4.ffn_up.weight", 123, layerBase(8) + 4*h*d + 123},
		{"output_norm.weight", 287, layerBase(9) + 287},
	} {
		got, err := f.ReadF32(c.tensor)
		if err != nil {
			t.Fatal(err)
		}
		if got[c.index] != at(c.file) || got[c.index] == 0 {
			t.Errorf("%s[%d] = %v, model.bin float %d = %v", c.tensor, c.index, got[c.index], c.file, at(c.file))
		}
	}
}
