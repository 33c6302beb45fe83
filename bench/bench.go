// Package bench measures the runtime: prompt processing and generation
// speed of base models, and the cost of IAPT adapters at prefill and in
// multi-tenant batched decoding. Figures are printed by `iapt bench`.
package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/iapt-go/iapt/adapterfile"
	"github.com/iapt-go/iapt/bridge"
)

// benchText is English prose to tokenize into prompts of any length.
const benchText = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. One day, she found a big red ball under a tree. She ran to her mom and said, look what I found! Her mom smiled and they played together until the sun went down. "

// Prompt returns a prompt of exactly n tokens (BOS included).
func Prompt(m *bridge.Model, n int) ([]bridge.Token, error) {
	text := benchText
	for {
		toks, err := m.Tokenize(text, true, false)
		if err != nil {
			return nil, err
		}
		if len(toks) >= n {
			return toks[:n], nil
		}
		text += benchText
	}
}

// median of durations (sorted copy).
func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// ModelSpeed is one row of the base model benchmark.
type ModelSpeed struct {
	Model          string
	Threads        int
	PromptTokens   int
	PromptTokPerS  float64 // prefill of PromptTokens tokens, median of runs
	GenTokens      int
	GenTokPerS     float64 // single-sequence greedy decoding
	BatchedGenTokS float64 // 8 sequences decoded together, aggregate
}

// MeasureModel measures prefill and generation speed of a model.
func MeasureModel(m *bridge.Model, threads, promptTokens, genTokens, runs int) (ModelSpeed, error) {
	res := ModelSpeed{Model: filepath.Base(m.Info().Path), Threads: threads, PromptTokens: promptTokens, GenTokens: genTokens}
	c, err := m.NewContext(bridge.ContextParams{NCtx: 8 * m.Info().CtxTrain, NSeqMax: 8, NBatch: promptTokens, Threads: threads})
	if err != nil {
		return res, err
	}
	defer c.Close()
	prompt, err := Prompt(m, promptTokens)
	if err != nil {
		return res, err
	}
	var pp []time.Duration
	for r := 0; r < runs+1; r++ { // the first run warms up
		c.RemoveTokens(-1, -1, -1)
		start := time.Now()
		if _, err := c.Prefill(0, prompt, nil, false); err != nil {
			return res, err
		}
		if r > 0 {
			pp = append(pp, time.Since(start))
		}
	}
	res.PromptTokPerS = float64(promptTokens) / median(pp).Seconds()
	var tg []time.Duration
	short := prompt[:min(8, len(prompt))]
	for r := 0; r < runs; r++ {
		out, err := c.Predict(short, bridge.PredictOptions{MaxTokens: genTokens + 1, IgnoreEOG: true})
		if err != nil {
			return res, err
		}
		tg = append(tg, out.GenTime)
	}
	res.GenTokPerS = float64(genTokens) / median(tg).Seconds()
	d, err := DecodeBatch(c, make([]*bridge.Adapter, 8), short, genTokens)
	if err != nil {
		return res, err
	}
	res.BatchedGenTokS = float64(8*genTokens) / d.Seconds()
	return res, nil
}

// DecodeBatch prefills one sequence per adapter (nil: none) with prompt,
// then decodes steps tokens for all of them together, one batch per step,
// and returns the decode time. The context needs len(adapters) sequences.
func DecodeBatch(c *bridge.Context, adapters []*bridge.Adapter, prompt []bridge.Token, steps int) (time.Duration, error) {
	if err := c.RemoveTokens(-1, -1, -1); err != nil {
		return 0, err
	}
	n := len(adapters)
	pos := make([]int, n)
	last := make([]bridge.Token, n)
	smp, err := bridge.NewSampler(bridge.SamplerParams{})
	if err != nil {
		return 0, err
	}
	defer smp.Close()
	for i, a := range adapters {
		pf, err := c.Prefill(i, prompt, a, false)
		if err != nil {
			return 0, err
		}
		if last[i], err = smp.Sample(c, pf.LastIndex); err != nil {
			return 0, err
		}
		pos[i] = pf.NextPos
	}
	b := bridge.NewBatch(n, 1)
	defer b.Close()
	start := time.Now()
	for s := 0; s < steps; s++ {
		b.Clear()
		for i := range adapters {
			if _, err := b.Add(last[i], pos[i], []int{i}, true); err != nil {
				return 0, err
			}
			pos[i]++
		}
		if err := c.Decode(b); err != nil {
			return 0, err
		}
		for i := range adapters {
			if last[i], err = smp.Sample(c, i); err != nil {
				return 0, err
			}
		}
	}
	return time.Since(start), nil
}

// AdapterCost is the IAPT benchmark: prefill with and without an adapter,
// and multi-tenant decoding.
type AdapterCost struct {
	Prefill []PrefillCost
	// Decode speed (aggregate tokens/s) of Tenants sequences with Tenants
	// different adapters, and of as many sequences without adapters.
	Tenants           int
	DecodeAdapterTokS float64
	DecodeBaseTokS    float64
}

// PrefillCost compares one prompt length.
type PrefillCost struct {
	PromptTokens int
	Base, IAPT   time.Duration
}

// Overhead is the adapter's extra prefill time as a fraction of the base.
func (p PrefillCost) Overhead() float64 { return p.IAPT.Seconds()/p.Base.Seconds() - 1 }

// MeasureAdapters runs the IAPT benchmark with random adapters of shape c
// (m soft tokens, bottleneck r), written to a temporary folder.
func MeasureAdapters(m *bridge.Model, c adapterfile.Config, threads, tenants, steps, runs int, promptLens []int) (AdapterCost, error) {
	res := AdapterCost{Tenants: tenants}
	dir, err := os.MkdirTemp("", "iapt-bench")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	adapters := make([]*bridge.Adapter, tenants)
	for i := range adapters {
		a, err := adapterfile.Random(c, int64(i+1), 0.5)
		if err != nil {
			return res, err
		}
		p := filepath.Join(dir, fmt.Sprintf("a%d.gguf", i))
		if err := a.Write(p); err != nil {
			return res, err
		}
		if adapters[i], err = m.LoadAdapter(p); err != nil {
			return res, err
		}
		defer adapters[i].Close()
	}
	nctx := m.Info().CtxTrain
	ctx, err := m.NewContext(bridge.ContextParams{NCtx: tenants * nctx, NSeqMax: tenants, NBatch: nctx, NUbatch: nctx, Threads: threads})
	if err != nil {
		return res, err
	}
	defer ctx.Close()
	for _, n := range promptLens {
		prompt, err := Prompt(m, n)
		if err != nil {
			return res, err
		}
		var base, iapt []time.Duration
		for r := 0; r < runs+1; r++ {
			for _, a := range []*bridge.Adapter{nil, adapters[0]} {
				ctx.RemoveTokens(-1, -1, -1)
				start := time.Now()
				if _, err := ctx.Prefill(0, prompt, a, false); err != nil {
					return res, err
				}
				if r == 0 {
					continue
				}
				if a == nil {
					base = append(base, time.Since(start))
				} else {
					iapt = append(iapt, time.Since(start))
				}
			}
		}
		res.Prefill = append(res.Prefill, PrefillCost{PromptTokens: n, Base: median(base), IAPT: median(iapt)})
	}
	prompt, err := Prompt(m, 16)
	if err != nil {
		return res, err
	}
	var withA, without []time.Duration
	for r := 0; r < runs; r++ {
		d, err := DecodeBatch(ctx, adapters, prompt, steps)
		if err != nil {
			return res, err
		}
		withA = append(withA, d)
		if d, err = DecodeBatch(ctx, make([]*bridge.Adapter, tenants), prompt, steps); err != nil {
			return res, err
		}
		without = append(without, d)
	}
	res.DecodeAdapterTokS = float64(tenants*steps) / median(withA).Seconds()
	res.DecodeBaseTokS = float64(tenants*steps) / median(without).Seconds()
	return res, nil
}
