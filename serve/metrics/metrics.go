// Package metrics holds the Prometheus collectors of the IAPT server: HTTP
// requests, tokens in and out, the scheduler's queue, slots and batches, and
// prefill/decode latencies. Each Metrics has its own registry, so that
// several servers (in tests) never collide on the global one.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the server's collectors. The "model" label is a served model
// id: the base model's or "<base>:<adapter>".
type Metrics struct {
	// Registry holds every collector below plus the Go and process ones.
	Registry *prometheus.Registry
	// Requests counts finished HTTP requests by endpoint, model and status.
	Requests *prometheus.CounterVec
	// PromptTokens and CompletionTokens count tokens in and out by model.
	PromptTokens     *prometheus.CounterVec
	CompletionTokens *prometheus.CounterVec
	// Finished counts generations by model and how they ended: "stop",
	// "length", "cancelled" (client gone), "timeout", "shutdown", "error".
	Finished *prometheus.CounterVec
	// QueueLength is the number of requests waiting for a slot.
	QueueLength prometheus.Gauge
	// ActiveSequences is the number of slots generating.
	ActiveSequences prometheus.Gauge
	// BatchSize is the number of sequences in each decode step.
	BatchSize prometheus.Histogram
	// PrefillSeconds is the prefill time of a prompt, by model.
	PrefillSeconds *prometheus.HistogramVec
	// DecodeStepSeconds is the time of one batched decode step.
	DecodeStepSeconds prometheus.Histogram
	// TimeToFirstToken is the time from submission (queueing included) to
	// the first generated token, by model.
	TimeToFirstToken *prometheus.HistogramVec
	// AdaptersLoaded is the number of adapters being served.
	AdaptersLoaded prometheus.Gauge
}

// New creates the collectors and registers them on a new registry.
func New() *Metrics {
	latency := prometheus.ExponentialBuckets(0.0005, 2, 16) // 0.5 ms .. 16 s
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iapt_http_requests_total", Help: "HTTP requests by endpoint, model and status code.",
		}, []string{"endpoint", "model", "code"}),
		PromptTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iapt_prompt_tokens_total", Help: "Prompt tokens prefilled, by model.",
		}, []string{"model"}),
		CompletionTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iapt_completion_tokens_total", Help: "Tokens generated, by model.",
		}, []string{"model"}),
		Finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iapt_generations_total", Help: "Generations by model and outcome (stop, length, cancelled, timeout, shutdown, error).",
		}, []string{"model", "outcome"}),
		QueueLength: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "iapt_queue_length", Help: "Requests waiting for a slot.",
		}),
		ActiveSequences: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "iapt_active_sequences", Help: "Slots currently generating.",
		}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "iapt_decode_batch_size", Help: "Sequences advanced by one decode step.",
			Buckets: prometheus.LinearBuckets(1, 1, 16),
		}),
		PrefillSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "iapt_prefill_seconds", Help: "Prefill time of one prompt (soft tokens included), by model.",
			Buckets: latency,
		}, []string{"model"}),
		DecodeStepSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "iapt_decode_step_seconds", Help: "Time of one batched decode step.",
			Buckets: latency,
		}),
		TimeToFirstToken: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "iapt_time_to_first_token_seconds", Help: "Submission to first generated token, queueing included, by model.",
			Buckets: latency,
		}, []string{"model"}),
		AdaptersLoaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "iapt_adapters_loaded", Help: "IAPT adapters being served.",
		}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Requests, m.PromptTokens, m.CompletionTokens, m.Finished,
		m.QueueLength, m.ActiveSequences, m.BatchSize,
		m.PrefillSeconds, m.DecodeStepSeconds, m.TimeToFirstToken, m.AdaptersLoaded,
	)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
