package servebench

import (
	"fmt"
	"time"

	"github.com/iapt-go/iapt/bridge"
)

// DirectConfig is generation work done directly with the bridge: Rounds
// rounds of one request per client, each prefilling Prompt and generating
// exactly Tokens tokens greedily.
type DirectConfig struct {
	Prompt  []bridge.Token
	Tokens  int
	Rounds  int
	Threads int
	// SlotContext is the context of one sequence (0: the model's).
	SlotContext int
}

func (c DirectConfig) check(clients int) error {
	if clients < 1 || c.Tokens < 1 || c.Rounds < 1 || len(c.Prompt) == 0 {
		return fmt.Errorf("direct bench: want clients, tokens, rounds >= 1 and a prompt, got %d clients, %+v", clients, c)
	}
	return nil
}

// Raw is the server's work without the server: one sequence per adapter
// (nil: the base model), all prefilled at the start of a round (each with
// its adapter), then decoded together, one batch per step, each sampled
// greedily and turned into text. TTFT counts from the round's start.
func Raw(m *bridge.Model, adapters []*bridge.Adapter, c DirectConfig) (Result, error) {
	n := len(adapters)
	if err := c.check(n); err != nil {
		return Result{}, err
	}
	if c.SlotContext == 0 {
		c.SlotContext = m.Info().CtxTrain
	}
	ctx, err := m.NewContext(bridge.ContextParams{
		NCtx: n * c.SlotContext, NBatch: c.SlotContext, NUbatch: c.SlotContext, NSeqMax: n, Threads: c.Threads,
	})
	if err != nil {
		return Result{}, err
	}
	defer ctx.Close()
	batch := bridge.NewBatch(n, 1)
	defer batch.Close()
	var res Result
	start := time.Now()
	for range c.Rounds {
		if err := rawRound(ctx, batch, adapters, c, &res); err != nil {
			return res, err
		}
	}
	res.Wall = time.Since(start)
	return res, nil
}

// rawRound runs one round of Raw and adds it to res.
func rawRound(ctx *bridge.Context, batch *bridge.Batch, adapters []*bridge.Adapter, c DirectConfig, res *Result) error {
	m := ctx.Model()
	round := time.Now()
	n := len(adapters)
	tok := make([]bridge.Token, n)
	pos := make([]int, n)
	samplers := make([]*bridge.Sampler, n)
	defer func() {
		for _, s := range samplers {
			if s != nil {
				s.Close()
			}
		}
	}()
	for i, a := range adapters {
		var err error
		if samplers[i], err = bridge.NewSampler(bridge.SamplerParams{}); err != nil {
			return err
		}
		pf, err := ctx.Prefill(i, c.Prompt, a, false)
		if err != nil {
			return err
		}
		if tok[i], err = samplers[i].Sample(ctx, pf.LastIndex); err != nil {
			return err
		}
		if _, err := m.TokenPiece(tok[i], false); err != nil {
			return err
		}
		pos[i] = pf.NextPos
		res.TTFT = append(res.TTFT, time.Since(round))
	}
	for range c.Tokens - 1 {
		batch.Clear()
		for i := range adapters {
			if _, err := batch.Add(tok[i], pos[i], []int{i}, true); err != nil {
				return err
			}
			pos[i]++
		}
		if err := ctx.Decode(batch); err != nil {
			return err
		}
		for i := range adapters {
			var err error
			if tok[i], err = samplers[i].Sample(ctx, i); err != nil {
				return err
			}
			if _, err := m.TokenPiece(tok[i], false); err != nil {
				return err
			}
		}
	}
	res.Requests += n
	res.Tokens += n * c.Tokens
	return ctx.ClearSequences()
}

// LoRASerial serves one request per LoRA adapter and round the way
// llama.cpp's native LoRA path must when every client has its own adapter:
// one request at a time (the adapter is switched on for the whole context,
// so different adapters cannot share a batch), first come first served.
// All clients submit at the start; each submits its next request when its
// previous one ends, so TTFT includes the wait for the requests before it.
func LoRASerial(m *bridge.Model, loras []*bridge.LoRA, c DirectConfig) (Result, error) {
	if err := c.check(len(loras)); err != nil {
		return Result{}, err
	}
	if c.SlotContext == 0 {
		c.SlotContext = m.Info().CtxTrain
	}
	ctx, err := m.NewContext(bridge.ContextParams{NCtx: c.SlotContext, Threads: c.Threads})
	if err != nil {
		return Result{}, err
	}
	defer ctx.Close()
	var res Result
	start := time.Now()
	// submitted[i] is when client i's current request was submitted.
	submitted := make([]time.Time, len(loras))
	for i := range submitted {
		submitted[i] = start
	}
	for range c.Rounds {
		for i, l := range loras {
			if err := ctx.ClearLoRA(); err != nil {
				return res, err
			}
			if err := ctx.SetLoRA(l, 1); err != nil {
				return res, err
			}
			var first time.Time
			out, err := ctx.Predict(c.Prompt, bridge.PredictOptions{
				MaxTokens: c.Tokens, IgnoreEOG: true,
				OnText: func(string) bool {
					if first.IsZero() {
						first = time.Now()
					}
					return true
				},
			})
			if err != nil {
				return res, err
			}
			if first.IsZero() {
				first = time.Now()
			}
			res.TTFT = append(res.TTFT, first.Sub(submitted[i]))
			res.Requests++
			res.Tokens += len(out.Tokens)
			submitted[i] = time.Now()
		}
	}
	res.Wall = time.Since(start)
	return res, nil
}
