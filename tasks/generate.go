package tasks

import (
	"fmt"
	"strings"

	"github.com/iapt-go/iapt/bridge"
)

// GenOptions configure GenerateStories.
type GenOptions struct {
	// MaxTokens bounds the tokens generated per story (> 0).
	MaxTokens int
	// Parallel is the number of stories decoded together in one context
	// (> 0); a finished story's slot takes the next prompt.
	Parallel int
	// Threads is the number of CPU threads (0: the bridge's default).
	Threads int
	// Sampler is the sampling chain; story i is drawn with seed
	// Sampler.Seed + i, so a story does not depend on Parallel's schedule
	// beyond the floating-point effects of batching.
	Sampler bridge.SamplerParams
	// Progress, when set, is called after each finished story.
	Progress func(done, total int)
}

// Generated is one generated story.
type Generated struct {
	// Prompt is the opening the model continued; Text is the opening
	// followed by the generated text.
	Prompt, Text string
	// Tokens is the number of generated tokens (stop token excluded).
	Tokens int
	// Finish is "stop" (the model ended the story) or "length" (MaxTokens).
	Finish string
}

// slot is one sequence of the batch while it generates a story.
type slot struct {
	story  int // index into prompts; -1 when free
	smp    *bridge.Sampler
	pos    int // position of the next token to decode
	last   bridge.Token
	bidx   int // batch index of the logits to sample from
	pieces strings.Builder
	tokens int
}

// GenerateStories continues each prompt with the model, Parallel stories at
// a time, and returns them in the order of prompts. A story ends at an
// end-of-generation token, at BOS (llama2.c models such as stories15M start
// the next story with it) or after MaxTokens tokens.
func GenerateStories(model *bridge.Model, prompts []string, o GenOptions) ([]Generated, error) {
	if o.MaxTokens <= 0 || o.Parallel <= 0 {
		return nil, fmt.Errorf("generate stories: max tokens %d and parallel %d must be positive", o.MaxTokens, o.Parallel)
	}
	info := model.Info()
	toks := make([][]bridge.Token, len(prompts))
	for i, p := range prompts {
		t, err := model.Tokenize(p, true, false)
		if err != nil {
			return nil, fmt.Errorf("generate stories: prompt %d %q: %w", i, p, err)
		}
		if len(t)+o.MaxTokens > info.CtxTrain {
			return nil, fmt.Errorf("generate stories: prompt %d %q: %d tokens + %d to generate exceed the model's context of %d",
				i, p, len(t), o.MaxTokens, info.CtxTrain)
		}
		toks[i] = t
	}
	par := min(o.Parallel, max(len(prompts), 1))
	ctx, err := model.NewContext(bridge.ContextParams{NCtx: par * info.CtxTrain, NSeqMax: par, Threads: o.Threads, SplitKV: true})
	if err != nil {
		return nil, fmt.Errorf("generate stories: %w", err)
	}
	defer ctx.Close()
	out := make([]Generated, len(prompts))
	slots := make([]*slot, par)
	for i := range slots {
		slots[i] = &slot{story: -1}
	}
	defer func() {
		for _, s := range slots {
			if s.smp != nil {
				s.smp.Close()
			}
		}
	}()
	next, done := 0, 0
	// accept handles a sampled token; it reports whether the story goes on.
	accept := func(s *slot, tok bridge.Token) (bool, error) {
		if model.IsEOG(tok) || tok == info.BOS {
			out[s.story].Finish = "stop"
			return false, nil
		}
		piece, err := model.TokenPiece(tok, false)
		if err != nil {
			return false, err
		}
		s.pieces.WriteString(piece)
		s.tokens++
		s.last = tok
		if s.tokens >= o.MaxTokens {
			out[s.story].Finish = "length"
			return false, nil
		}
		return true, nil
	}
	// finish stores a slot's story and frees the slot.
	finish := func(s *slot) {
		g := &out[s.story]
		g.Prompt = prompts[s.story]
		g.Text = g.Prompt + s.pieces.String()
		g.Tokens = s.tokens
		s.smp.Close()
		*s = slot{story: -1}
		done++
		if o.Progress != nil {
			o.Progress(done, len(prompts))
		}
	}
	// fill gives a free slot the next prompts until one goes on.
	fill := func(seq int, s *slot) error {
		for s.story < 0 && next < len(prompts) {
			i := next
			next++
			if err := ctx.RemoveTokens(seq, -1, -1); err != nil {
				return err
			}
			p := o.Sampler
			p.Seed += uint32(i)
			smp, err := bridge.NewSampler(p)
			if err != nil {
				return err
			}
			for _, t := range toks[i] {
				smp.Accept(t)
			}
			*s = slot{story: i, smp: smp}
			pf, err := ctx.Prefill(seq, toks[i], nil, false)
			if err != nil {
				return fmt.Errorf("prompt %d: %w", i, err)
			}
			s.pos = pf.NextPos
			tok, err := smp.Sample(ctx, pf.LastIndex)
			if err != nil {
				return err
			}
			more, err := accept(s, tok)
			if err != nil {
				return err
			}
			if !more {
				finish(s)
			}
		}
		return nil
	}
	b := bridge.NewBatch(par, 1)
	defer b.Close()
	for {
		for seq, s := range slots {
			if err := fill(seq, s); err != nil {
				return nil, fmt.Errorf("generate stories: %w", err)
			}
		}
		b.Clear()
		for seq, s := range slots {
			if s.story < 0 {
				continue
			}
			idx, err := b.Add(s.last, s.pos, []int{seq}, true)
			if err != nil {
				return nil, fmt.Errorf("generate stories: %w", err)
			}
			s.bidx = idx
			s.pos++
		}
		if b.Len() == 0 {
			break
		}
		if err := ctx.Decode(b); err != nil {
			return nil, fmt.Errorf("generate stories: %w", err)
		}
		for _, s := range slots {
			if s.story < 0 {
				continue
			}
			tok, err := s.smp.Sample(ctx, s.bidx)
			if err != nil {
				return nil, fmt.Errorf("generate stories: %w", err)
			}
			more, err := accept(s, tok)
			if err != nil {
				return nil, fmt.Errorf("generate stories: %w", err)
			}
			if !more {
				finish(s)
			}
		}
	}
	return out, nil
}
