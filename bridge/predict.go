package bridge

import (
	"fmt"
	"time"
	"unicode/utf8"
)

// PredictOptions configure Predict.
type PredictOptions struct {
	// MaxTokens bounds the generated tokens (0: until the context is full).
	MaxTokens int
	Sampler   SamplerParams
	// Adapter, when set, is switched on for the prefill (IAPT).
	Adapter *Adapter
	// Seq is the sequence id to use; it is cleared first.
	Seq int
	// IgnoreEOG keeps generating past end-of-generation tokens.
	IgnoreEOG bool
	// OnText receives the text as it is generated, in pieces that are whole
	// UTF-8 sequences; returning false stops the generation.
	OnText func(text string) bool
}

// PredictResult is what Predict generated and how fast.
type PredictResult struct {
	Tokens       []Token
	Text         string
	PromptTokens int
	// FinishReason is "stop" (end of generation or OnText said stop),
	// "length" (MaxTokens) or "context" (the context is full).
	FinishReason string
	PromptTime   time.Duration
	GenTime      time.Duration
}

// PromptTokensPerSecond is the prefill speed.
func (r PredictResult) PromptTokensPerSecond() float64 {
	return float64(r.PromptTokens) / r.PromptTime.Seconds()
}

// GenTokensPerSecond is the generation speed (tokens after the first).
func (r PredictResult) GenTokensPerSecond() float64 {
	if len(r.Tokens) < 2 || r.GenTime <= 0 {
		return 0
	}
	return float64(len(r.Tokens)-1) / r.GenTime.Seconds()
}

// TextStream turns token pieces into text emitted only at UTF-8 boundaries,
// so that a character split over byte tokens is never torn apart.
type TextStream struct {
	pending []byte
}

// Push adds a token's bytes and returns the text that is complete so far.
func (s *TextStream) Push(piece string) string {
	s.pending = append(s.pending, piece...)
	n := len(s.pending)
	// Hold back an incomplete trailing sequence (at most 3 bytes).
	for cut := n; cut > 0 && cut > n-4; cut-- {
		if utf8.RuneStart(s.pending[cut-1]) {
			if !utf8.FullRune(s.pending[cut-1:]) {
				n = cut - 1
			}
			break
		}
	}
	out := string(s.pending[:n])
	s.pending = s.pending[n:]
	return out
}

// Flush returns whatever is left, complete or not.
func (s *TextStream) Flush() string {
	out := string(s.pending)
	s.pending = nil
	return out
}

// Predict generates a continuation of prompt in one sequence of the
// context: prefill (with the adapter, if any), then sample token by token.
func (c *Context) Predict(prompt []Token, o PredictOptions) (PredictResult, error) {
	var res PredictResult
	if err := c.RemoveTokens(o.Seq, -1, -1); err != nil {
		return res, err
	}
	smp, err := NewSampler(o.Sampler)
	if err != nil {
		return res, err
	}
	defer smp.Close()
	for _, t := range prompt {
		smp.Accept(t)
	}
	start := time.Now()
	pf, err := c.Prefill(o.Seq, prompt, o.Adapter, false)
	if err != nil {
		return res, err
	}
	res.PromptTokens = len(prompt)
	res.PromptTime = time.Since(start)
	model := c.Model()
	b := NewBatch(1, 1)
	defer b.Close()
	var stream TextStream
	var text []byte
	emit := func(s string) bool {
		text = append(text, s...)
		return s == "" || o.OnText == nil || o.OnText(s)
	}
	pos, idx := pf.NextPos, pf.LastIndex
	genStart := time.Now()
	for {
		if o.MaxTokens > 0 && len(res.Tokens) >= o.MaxTokens {
			res.FinishReason = "length"
			break
		}
		tok, err := smp.Sample(c, idx)
		if err != nil {
			return res, err
		}
		if !o.IgnoreEOG && model.IsEOG(tok) {
			res.FinishReason = "stop"
			break
		}
		res.Tokens = append(res.Tokens, tok)
		if len(res.Tokens) == 1 {
			genStart = time.Now()
		}
		piece, err := model.TokenPiece(tok, false)
		if err != nil {
			return res, err
		}
		if !emit(stream.Push(piece)) {
			res.FinishReason = "stop"
			break
		}
		if pos >= c.Params().NCtx {
			res.FinishReason = "context"
			break
		}
		if o.MaxTokens > 0 && len(res.Tokens) >= o.MaxTokens {
			res.FinishReason = "length"
			break
		}
		b.Clear()
		if _, err := b.Add(tok, pos, []int{o.Seq}, true); err != nil {
			return res, err
		}
		if err := c.Decode(b); err != nil {
			return res, fmt.Errorf("generate at position %d: %w", pos, err)
		}
		pos, idx = pos+1, 0
	}
	res.GenTime = time.Since(genStart)
	emit(stream.Flush())
	res.Text = string(text)
	return res, nil
}
