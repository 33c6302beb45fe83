package dataset

import (
	"fmt"
	"strings"

	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/prompt"
)

// Example is one pair as token ids, laid out as the IAPT specification
// says (the trainer's trainer.Example has the same fields and converts
// with a type conversion).
type Example struct {
	// Instruction holds the tokens of the rendered prompt, BOS first when
	// the model adds one.
	Instruction []int32
	// Response holds the tokens of the response, EOS last.
	Response []int32
}

// Encoder turns pairs into examples with a model's tokenizer and a prompt
// template.
//
// The instruction is prompt.Render(template, messages), tokenized with the
// model's special tokens added (BOS). With a chat template, special-token
// text in the rendered prompt (such as "<|im_start|>") is parsed into
// special tokens, since the template put it there; with a simple
// {instruction} template it is not, so that user text such as "</s>" stays
// text. This is how the server tokenizes prompts. The response is tokenized
// on its own, without BOS, and the model's EOS is appended: the model learns
// to continue the prompt with the response's tokens and to stop.
type Encoder struct {
	model    *bridge.Model
	template string
	special  bool
}

// NewEncoder makes an encoder; an empty template picks the one serving uses
// for an adapter without a stored template: the model's chat template, else
// prompt.DefaultTemplate.
func NewEncoder(model *bridge.Model, template string) (*Encoder, error) {
	info := model.Info()
	if info.EOS < 0 || int(info.EOS) >= info.Vocab {
		return nil, fmt.Errorf("dataset: model %s has no EOS token to end responses with", info.Path)
	}
	tmpl := prompt.Choose(template, info.ChatTemplate)
	return &Encoder{model: model, template: tmpl, special: !prompt.IsSimple(tmpl)}, nil
}

// Template is the template the encoder renders prompts with.
func (e *Encoder) Template() string { return e.template }

// Example encodes one conversation and its response.
func (e *Encoder) Example(msgs []bridge.ChatMessage, response string) (Example, error) {
	text, err := prompt.Render(e.template, msgs)
	if err != nil {
		return Example{}, err
	}
	instr, err := e.model.Tokenize(text, true, e.special)
	if err != nil {
		return Example{}, fmt.Errorf("tokenize prompt: %w", err)
	}
	resp, err := e.model.Tokenize(response, false, false)
	if err != nil {
		return Example{}, fmt.Errorf("tokenize response: %w", err)
	}
	return Example{Instruction: instr, Response: append(resp, e.model.Info().EOS)}, nil
}

// EncodeOptions set the length limit of Encode.
type EncodeOptions struct {
	// SoftTokens is the adapter's number of soft tokens m, which take rows
	// of the sequence too.
	SoftTokens int
	// MaxLen bounds SoftTokens + len(Instruction) + len(Response); 0 or a
	// value above the model's training context means that context.
	MaxLen int
}

// maxReportedLines bounds EncodeReport.TooLongLines.
const maxReportedLines = 10

// LengthStats summarise token counts.
type LengthStats struct {
	N, Min, Max, Total int
}

func (s *LengthStats) add(n int) {
	if s.N == 0 || n < s.Min {
		s.Min = n
	}
	s.Max = max(s.Max, n)
	s.N++
	s.Total += n
}

// Mean is the average count (0 when empty).
func (s LengthStats) Mean() float64 {
	if s.N == 0 {
		return 0
	}
	return float64(s.Total) / float64(s.N)
}

// String renders "min/mean/max".
func (s LengthStats) String() string {
	return fmt.Sprintf("%d/%.1f/%d", s.Min, s.Mean(), s.Max)
}

// EncodeReport says what Encode kept and dropped.
type EncodeReport struct {
	// MaxLen is the limit applied (after capping at the model's context).
	MaxLen int
	// Pairs is the number of pairs given, Kept the number of examples
	// returned.
	Pairs, Kept int
	// Index holds, for each returned example, the index of its pair in the
	// pairs given.
	Index []int
	// TooLong counts the pairs dropped for exceeding MaxLen; TooLongLines
	// holds the first few of their lines (Pair.Line).
	TooLong      int
	TooLongLines []int
	// Instruction and Response are the token counts of the kept examples
	// (BOS and EOS included); Total is SoftTokens plus both.
	Instruction, Response, Total LengthStats
}

// String renders the report on a few lines.
func (r EncodeReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d pairs kept (max %d tokens with soft tokens)", r.Kept, r.Pairs, r.MaxLen)
	if r.TooLong > 0 {
		fmt.Fprintf(&b, "; %d too long, dropped (lines %v", r.TooLong, r.TooLongLines)
		if r.TooLong > len(r.TooLongLines) {
			b.WriteString(" ...")
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, "\ntokens min/mean/max: instruction %v, response %v, total %v", r.Instruction, r.Response, r.Total)
	return b.String()
}

// Encode encodes pairs in order. A pair that does not fit o.MaxLen is
// dropped and reported, never cut: the response is never truncated.
func (e *Encoder) Encode(pairs []Pair, o EncodeOptions) ([]Example, EncodeReport, error) {
	ctx := e.model.Info().CtxTrain
	rep := EncodeReport{MaxLen: o.MaxLen, Pairs: len(pairs)}
	if o.SoftTokens < 0 || o.MaxLen < 0 {
		return nil, rep, fmt.Errorf("dataset: encode: soft tokens %d and max length %d must not be negative", o.SoftTokens, o.MaxLen)
	}
	if rep.MaxLen == 0 || rep.MaxLen > ctx {
		rep.MaxLen = ctx
	}
	out := make([]Example, 0, len(pairs))
	for i, p := range pairs {
		ex, err := e.Example(p.Messages, p.Response)
		if err != nil {
			return nil, rep, fmt.Errorf("dataset: line %d: %w", p.Line, err)
		}
		n := o.SoftTokens + len(ex.Instruction) + len(ex.Response)
		if n > rep.MaxLen {
			rep.TooLong++
			if len(rep.TooLongLines) < maxReportedLines {
				rep.TooLongLines = append(rep.TooLongLines, p.Line)
			}
			continue
		}
		rep.Instruction.add(len(ex.Instruction))
		rep.Response.add(len(ex.Response))
		rep.Total.add(n)
		rep.Index = append(rep.Index, i)
		out = append(out, ex)
	}
	rep.Kept = len(out)
	return out, rep, nil
}
