package trainer

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/dataset"
)

// evalExample is an evaluation example: its tokens, and the texts the task
// metric compares a generated answer with.
type evalExample struct {
	Example
	// instruction is the text of the last user turn (what a stories
	// instruction is parsed from).
	instruction string
	// response is the reference answer (the label of a sentiment example).
	response string
}

// trainData is the encoded data of a run.
type trainData struct {
	train []Example
	eval  []evalExample
	// template is the prompt template the examples were rendered with.
	template string
	// hash identifies the tokens of both sets, in order: a resumed run
	// must see the same data.
	hash string
}

// loadData reads, splits and encodes the data of a run with the runtime
// model's tokenizer, reporting on log what it read, skipped and dropped.
func loadData(rt *bridge.Model, cfg *TrainConfig, log io.Writer) (*trainData, error) {
	pairs, rep, err := dataset.Load(cfg.TrainData, dataset.LoadOptions{})
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(log, rep)
	var evalPairs []dataset.Pair
	if cfg.EvalData != "" {
		var erep dataset.LoadReport
		if evalPairs, erep, err = dataset.Load(cfg.EvalData, dataset.LoadOptions{}); err != nil {
			return nil, err
		}
		fmt.Fprintln(log, erep)
	} else {
		if pairs, evalPairs, err = dataset.Split(pairs, cfg.EvalFrac, cfg.Seed); err != nil {
			return nil, err
		}
		fmt.Fprintf(log, "held out %d of the %d pairs of %s for evaluation (--eval-frac %g, seed %d)\n",
			len(evalPairs), len(pairs)+len(evalPairs), cfg.TrainData, cfg.EvalFrac, cfg.Seed)
	}
	enc, err := dataset.NewEncoder(rt, "")
	if err != nil {
		return nil, err
	}
	opts := dataset.EncodeOptions{SoftTokens: cfg.SoftTokens, MaxLen: cfg.MaxLen}
	d := &trainData{template: enc.Template()}
	train, trep, err := enc.Encode(pairs, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.TrainData, err)
	}
	fmt.Fprintf(log, "training set: %s\n", trep)
	d.train = make([]Example, len(train))
	for i, e := range train {
		d.train[i] = Example(e)
	}
	evalName := cfg.EvalData
	if evalName == "" {
		evalName = cfg.TrainData + " (held out)"
	}
	if d.eval, err = encodeEval(enc, evalPairs, opts, evalName, log); err != nil {
		return nil, err
	}
	if cfg.NoEOSLoss {
		eos := rt.Info().EOS
		for i := range d.train {
			stripEOS(&d.train[i], eos)
		}
		for i := range d.eval {
			stripEOS(&d.eval[i].Example, eos)
		}
	}
	switch {
	case len(d.train) < cfg.BatchSize:
		return nil, fmt.Errorf("%s: %d usable training examples, fewer than the batch size %d", cfg.TrainData, len(d.train), cfg.BatchSize)
	case len(d.eval) == 0:
		return nil, fmt.Errorf("%s: no usable evaluation examples", evalName)
	}
	h := sha256.New()
	put := func(toks []int32) {
		_ = binary.Write(h, binary.LittleEndian, int64(len(toks)))
		_ = binary.Write(h, binary.LittleEndian, toks)
	}
	for _, e := range d.train {
		put(e.Instruction)
		put(e.Response)
	}
	for _, e := range d.eval {
		put(e.Instruction)
		put(e.Response)
	}
	d.hash = hex.EncodeToString(h.Sum(nil))
	return d, nil
}

// encodeEval encodes evaluation pairs with enc, keeping each example's
// texts for the task metric; name is their file, for messages.
// Examples too long for opts are left out and counted on log.
func encodeEval(enc *dataset.Encoder, pairs []dataset.Pair, opts dataset.EncodeOptions, name string, log io.Writer) ([]evalExample, error) {
	exs, rep, err := enc.Encode(pairs, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	fmt.Fprintf(log, "evaluation set: %s\n", rep)
	out := make([]evalExample, len(exs))
	for i, ex := range exs {
		p := pairs[rep.Index[i]]
		var instr string
		for _, m := range p.Messages {
			if m.Role == "user" {
				instr = m.Content
			}
		}
		out[i] = evalExample{Example: Example(ex), instruction: instr, response: p.Response}
	}
	return out, nil
}

// stripEOS removes the end-of-sequence token eos that ends e's response,
// unless it is the whole response.
func stripEOS(e *Example, eos int32) {
	if n := len(e.Response); n > 1 && e.Response[n-1] == eos {
		e.Response = e.Response[:n-1]
	}
}
