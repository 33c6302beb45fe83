package bridge

/*
#include "wrap.h"
*/
import "C"

import (
	"fmt"
	"math"
)

// SamplerParams configure llama.cpp's sampler chain. Temperature <= 0 means
// greedy (argmax); otherwise the chain is penalties, top-k, top-p, min-p,
// temperature, then a seeded draw.
type SamplerParams struct {
	Temperature float32
	TopK        int     // 0: off
	TopP        float32 // 0 or 1: off
	MinP        float32 // 0: off
	// RepeatPenalty (1: off), FrequencyPenalty and PresencePenalty (0: off)
	// apply to the last PenaltyLastN tokens (0 means 64).
	RepeatPenalty    float32
	FrequencyPenalty float32
	PresencePenalty  float32
	PenaltyLastN     int
	Seed             uint32
}

// Validate reports the first out-of-range field.
func (p SamplerParams) Validate() error {
	bad := func(field string, v any, want string) error {
		return fmt.Errorf("sampler: %s = %v, want %s", field, v, want)
	}
	switch {
	case math.IsNaN(float64(p.Temperature)) || p.Temperature < 0:
		return bad("temperature", p.Temperature, ">= 0")
	case p.TopK < 0:
		return bad("top_k", p.TopK, ">= 0")
	case !(p.TopP >= 0 && p.TopP <= 1):
		return bad("top_p", p.TopP, "in [0, 1]")
	case !(p.MinP >= 0 && p.MinP <= 1):
		return bad("min_p", p.MinP, "in [0, 1]")
	case math.IsNaN(float64(p.RepeatPenalty)) || p.RepeatPenalty < 0:
		return bad("repeat_penalty", p.RepeatPenalty, ">= 0")
	case !(p.FrequencyPenalty >= -2 && p.FrequencyPenalty <= 2):
		return bad("frequency_penalty", p.FrequencyPenalty, "in [-2, 2]")
	case !(p.PresencePenalty >= -2 && p.PresencePenalty <= 2):
		return bad("presence_penalty", p.PresencePenalty, "in [-2, 2]")
	case p.PenaltyLastN < 0:
		return bad("penalty_last_n", p.PenaltyLastN, ">= 0")
	}
	return nil
}

// Sampler picks the next token from a context's logits. It keeps the state
// of its penalties and random generator; use one per sequence.
type Sampler struct {
	ptr *C.struct_llama_sampler
}

// NewSampler builds a sampler chain.
func NewSampler(p SamplerParams) (*Sampler, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	ensureInit()
	chain := C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
	add := func(s *C.struct_llama_sampler) { C.llama_sampler_chain_add(chain, s) }
	if p.RepeatPenalty == 0 {
		p.RepeatPenalty = 1
	}
	if p.RepeatPenalty != 1 || p.FrequencyPenalty != 0 || p.PresencePenalty != 0 {
		lastN := p.PenaltyLastN
		if lastN == 0 {
			lastN = 64
		}
		add(C.llama_sampler_init_penalties(C.int32_t(lastN), C.float(p.RepeatPenalty), C.float(p.FrequencyPenalty), C.float(p.PresencePenalty)))
	}
	if p.Temperature <= 0 {
		add(C.llama_sampler_init_greedy())
		return &Sampler{ptr: chain}, nil
	}
	if p.TopK > 0 {
		add(C.llama_sampler_init_top_k(C.int32_t(p.TopK)))
	}
	if p.TopP > 0 && p.TopP < 1 {
		add(C.llama_sampler_init_top_p(C.float(p.TopP), 1))
	}
	if p.MinP > 0 {
		add(C.llama_sampler_init_min_p(C.float(p.MinP), 1))
	}
	add(C.llama_sampler_init_temp(C.float(p.Temperature)))
	add(C.llama_sampler_init_dist(C.uint32_t(p.Seed)))
	return &Sampler{ptr: chain}, nil
}

// Sample picks a token from the logits of batch index idx of c's last
// decode and records it in the sampler's history.
func (s *Sampler) Sample(c *Context, idx int) (Token, error) {
	if s.ptr == nil {
		return 0, ErrClosed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr == nil {
		return 0, ErrClosed
	}
	if C.llama_get_logits_ith(c.ptr, C.int32_t(idx)) == nil {
		return 0, fmt.Errorf("sample: batch index %d has no logits", idx)
	}
	return Token(C.llama_sampler_sample(s.ptr, c.ptr, C.int32_t(idx))), nil
}

// Accept records a token that was not drawn by Sample (e.g. prompt tokens)
// in the penalty history.
func (s *Sampler) Accept(tok Token) {
	if s.ptr != nil {
		C.llama_sampler_accept(s.ptr, C.llama_token(tok))
	}
}

// Reset clears the history and reseeds as at creation.
func (s *Sampler) Reset() {
	if s.ptr != nil {
		C.llama_sampler_reset(s.ptr)
	}
}

// Close frees the sampler; Close after Close is a no-op.
func (s *Sampler) Close() {
	if s.ptr != nil {
		C.llama_sampler_free(s.ptr)
		s.ptr = nil
	}
}
