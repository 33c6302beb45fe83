package trainer

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/iapt-go/iapt/adapterfile"
	"github.com/iapt-go/iapt/internal/atomicfile"
)

// A checkpoint is a folder of four files, written in this order, each
// atomically; state.json comes last and holds the SHA-256 of the others, so
// a checkpoint whose writing was cut short is detected, never half used.
const (
	ckptAdapter = "adapter.gguf" // the adapter after State.Step steps
	ckptBest    = "best.gguf"    // the adapter with the best evaluation loss so far
	ckptMoments = "moments.bin"  // AdamW moments: m then v, little-endian float32, flatten order
	ckptState   = "state.json"   // ckptState
)

// stateVersion is the version of the state.json layout.
const stateVersion = 3

// trajectory is what determines the parameters a run produces, step by
// step: a resumed run must have the same.
type trajectory struct {
	BaseModel    string      `json:"base_model"` // file name and size
	DataHash     string      `json:"data_hash"`  // tokens of both sets, in order
	SoftTokens   int         `json:"soft_tokens"`
	Bottleneck   int         `json:"bottleneck"`
	Share        string      `json:"share"`
	Steps        int         `json:"steps"`
	BatchSize    int         `json:"batch_size"`
	Accum        int         `json:"accum"`
	Seed         uint64      `json:"seed"`
	Optim        OptimConfig `json:"optim"`
	EvalEvery    int         `json:"eval_every"`
	EvalExamples int         `json:"eval_examples"`
	Patience     int         `json:"patience"`
	Init         string      `json:"init,omitempty"` // SHA-256 of the initial adapter file
}

// diff lists the fields (by JSON name) in which t and u differ, with both
// values.
func (t trajectory) diff(u trajectory) []string {
	flat := func(v trajectory) map[string]string {
		raw, _ := json.Marshal(v) // a struct of plain values always marshals
		var m map[string]json.RawMessage
		_ = json.Unmarshal(raw, &m)
		out := map[string]string{}
		for k, v := range m {
			out[k] = string(v)
		}
		return out
	}
	a, b := flat(t), flat(u)
	var d []string
	for _, k := range slices.Sorted(maps.Keys(a)) {
		if a[k] != b[k] {
			d = append(d, fmt.Sprintf("%s: checkpoint %s, now %s", k, a[k], b[k]))
		}
	}
	return d
}

// trainState is the content of state.json.
type trainState struct {
	Version    int        `json:"version"`
	Trajectory trajectory `json:"trajectory"`
	// Inputs are the generator input statistics measured when the run
	// started: the learning-rate factors (lrScales) depend on them.
	Inputs inputStats `json:"input_stats"`
	// Step is the number of optimizer steps done.
	Step int `json:"step"`
	// Tokens is the number of tokens trained on; Elapsed the training
	// time in seconds, evaluation included, over all sessions.
	Tokens  int64   `json:"tokens"`
	Elapsed float64 `json:"elapsed_s"`
	// BestLoss is the best evaluation loss so far (nil before the first
	// evaluation), reached after BestStep steps; BadEvals counts the
	// evaluations since, for early stopping; Stopped says early stopping
	// ended the run.
	BestLoss *float64 `json:"best_loss,omitempty"`
	BestStep int      `json:"best_step"`
	BadEvals int      `json:"bad_evals"`
	Stopped  bool     `json:"stopped"`
	// SHA-256 of the other files (Best empty when there is no best.gguf).
	AdapterSHA string `json:"adapter_sha256"`
	MomentsSHA string `json:"moments_sha256"`
	BestSHA    string `json:"best_sha256,omitempty"`
}

// checkpoint is a run's state as saved and restored.
type checkpoint struct {
	state   trainState
	adapter *adapterfile.Adapter
	best    *adapterfile.Adapter // nil before the first evaluation
	opt     *adamW
}

// writeBytes writes data to path atomically.
func writeBytes(path string, data []byte) error {
	return atomicfile.Write(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// fileSHA returns the hex SHA-256 of a file's content.
func fileSHA(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// save writes the checkpoint into dir, creating it if needed.
func (c *checkpoint) save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	st := c.state
	st.Version = stateVersion
	var err error
	write := func(name string, a *adapterfile.Adapter) (string, error) {
		p := filepath.Join(dir, name)
		if err := a.Write(p); err != nil {
			return "", err
		}
		return fileSHA(p)
	}
	if st.AdapterSHA, err = write(ckptAdapter, c.adapter); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	st.BestSHA = ""
	if c.best != nil {
		if st.BestSHA, err = write(ckptBest, c.best); err != nil {
			return fmt.Errorf("checkpoint: %w", err)
		}
	}
	var buf bytes.Buffer
	_ = binary.Write(&buf, binary.LittleEndian, uint64(c.opt.steps))
	_ = binary.Write(&buf, binary.LittleEndian, c.opt.m)
	_ = binary.Write(&buf, binary.LittleEndian, c.opt.v)
	sum := sha256.Sum256(buf.Bytes())
	st.MomentsSHA = hex.EncodeToString(sum[:])
	if err := writeBytes(filepath.Join(dir, ckptMoments), buf.Bytes()); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	js, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if err := writeBytes(filepath.Join(dir, ckptState), append(js, '\n')); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// loadCheckpoint reads the checkpoint in dir and checks that its files are
// the ones its state.json names. n is the number of adapter values the
// run has.
func loadCheckpoint(dir string, n int) (*checkpoint, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("resume from %s: "+format, append([]any{dir}, args...)...)
	}
	raw, err := os.ReadFile(filepath.Join(dir, ckptState))
	if err != nil {
		return nil, fail("%w", err)
	}
	c := &checkpoint{}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c.state); err != nil {
		return nil, fail("%s: %v", ckptState, err)
	}
	if c.state.Version != stateVersion {
		return nil, fail("%s has version %d, this program reads version %d", ckptState, c.state.Version, stateVersion)
	}
	check := func(name, want string) error {
		got, err := fileSHA(filepath.Join(dir, name))
		if err != nil {
			return fail("%w", err)
		}
		if got != want {
			return fail("%s does not match %s (an interrupted write?): SHA-256 %s, want %s", name, ckptState, got, want)
		}
		return nil
	}
	if err := check(ckptAdapter, c.state.AdapterSHA); err != nil {
		return nil, err
	}
	if c.adapter, err = adapterfile.Read(filepath.Join(dir, ckptAdapter)); err != nil {
		return nil, fail("%w", err)
	}
	if c.state.BestSHA != "" {
		if err := check(ckptBest, c.state.BestSHA); err != nil {
			return nil, err
		}
		if c.best, err = adapterfile.Read(filepath.Join(dir, ckptBest)); err != nil {
			return nil, fail("%w", err)
		}
	}
	if err := check(ckptMoments, c.state.MomentsSHA); err != nil {
		return nil, err
	}
	raw, err = os.ReadFile(filepath.Join(dir, ckptMoments))
	if err != nil {
		return nil, fail("%w", err)
	}
	if len(raw) != 8+8*n {
		return nil, fail("%s has %d bytes, want %d for %d adapter values", ckptMoments, len(raw), 8+8*n, n)
	}
	c.opt = newAdamW(n)
	r := bytes.NewReader(raw)
	var steps uint64
	for _, v := range []any{&steps, c.opt.m, c.opt.v} {
		if err := binary.Read(r, binary.LittleEndian, v); err != nil {
			return nil, fail("%s: %w", ckptMoments, err)
		}
	}
	c.opt.steps = int(steps)
	if c.opt.steps != c.state.Step {
		return nil, fail("%s holds %d optimizer steps, %s says %d", ckptMoments, c.opt.steps, ckptState, c.state.Step)
	}
	return c, nil
}
