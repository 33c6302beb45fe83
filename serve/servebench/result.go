// Package servebench measures serving throughput and latency: concurrent
// streaming clients against an OpenAI-compatible server (Load), and, for
// comparison, the same generation work done directly with the bridge:
// batched across sequences (Raw) or with native LoRA adapters served one
// adapter at a time (LoRASerial).
package servebench

import (
	"slices"
	"time"
)

// Result is the outcome of one load.
type Result struct {
	Requests int
	// Tokens counts the generated tokens of all requests.
	Tokens int
	// Wall is the time from the first request to the last token.
	Wall time.Duration
	// TTFT holds each request's time from submission to its first token.
	TTFT []time.Duration
}

// Add merges another run of the same load into r.
func (r *Result) Add(o Result) {
	r.Requests += o.Requests
	r.Tokens += o.Tokens
	r.Wall += o.Wall
	r.TTFT = append(r.TTFT, o.TTFT...)
}

// TokensPerSecond is the aggregate generation speed.
func (r Result) TokensPerSecond() float64 {
	if r.Wall <= 0 {
		return 0
	}
	return float64(r.Tokens) / r.Wall.Seconds()
}

// TTFTPercentile returns the p-th percentile (0 < p <= 100, nearest rank)
// of the times to first token, or 0 without requests.
func (r Result) TTFTPercentile(p float64) time.Duration {
	if len(r.TTFT) == 0 {
		return 0
	}
	s := slices.Clone(r.TTFT)
	slices.Sort(s)
	rank := int(p/100*float64(len(s))+0.999999) - 1
	return s[min(max(rank, 0), len(s)-1)]
}
