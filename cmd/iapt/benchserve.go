package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/iapt-go/iapt/adapterfile"
	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/serve/servebench"
	"github.com/spf13/cobra"
)

// benchServeOptions are the flags of `iapt bench serve`.
type benchServeOptions struct {
	modelPath, url, apiKey, prompt, clients    string
	threads, maxTokens, rounds, tenants, runs  int
	softTokens, bottleneck, loraRank, parallel int
}

// benchRow is one line of the table.
type benchRow struct {
	load    string
	clients int
	res     servebench.Result
	raw     *servebench.Result // the same work straight on the bridge
}

// remoteModels lists the ids of a server's models: its base model and its
// adapters ("<base>:<name>").
func remoteModels(url, key string) (base string, adapters []string, err error) {
	req, err := http.NewRequest("GET", strings.TrimSuffix(url, "/")+"/v1/models", nil)
	if err != nil {
		return "", nil, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != http.StatusOK {
		return "", nil, fmt.Errorf("GET %s/v1/models: status %d, %v", url, resp.StatusCode, err)
	}
	for _, m := range list.Data {
		if strings.Contains(m.ID, ":") {
			adapters = append(adapters, m.ID)
		} else if base == "" {
			base = m.ID
		}
	}
	return base, adapters, nil
}

// benchServe runs the loads and prints the table.
func benchServe(o benchServeOptions) error {
	levels, err := parseInts(o.clients)
	if err != nil {
		return fmt.Errorf("--clients: %w", err)
	}
	if o.maxTokens < 1 || o.rounds < 1 || o.tenants < 1 || o.runs < 1 {
		return fmt.Errorf("--max-tokens, --rounds, --runs and --tenants must be >= 1")
	}
	if o.threads == 0 {
		o.threads = max(1, runtime.NumCPU()-1) // as the server's default
	}
	tmp, err := os.MkdirTemp("", "iapt-bench-serve-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	local := o.url == ""
	var model *bridge.Model
	var iaptParams uint64
	adapterDir := filepath.Join(tmp, "iapt")
	if local {
		if model, err = bridge.LoadModel(o.modelPath, bridge.ModelParams{}); err != nil {
			return err
		}
		defer model.Close()
		if iaptParams, err = writeIAPTAdapters(model, adapterDir, o); err != nil {
			return err
		}
		parallel := o.parallel
		if parallel == 0 {
			parallel = max(slices.Max(levels), o.tenants)
		}
		s, err := startServer(serveOptions{
			modelPath: o.modelPath, adaptersDir: adapterDir, addr: "127.0.0.1:0",
			parallel: parallel, threads: o.threads, queue: 64,
		}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			return err
		}
		defer s.shutdown(context.Background())
		o.url = "http://" + s.addr
	}
	base, adapters, err := remoteModels(o.url, o.apiKey)
	if err != nil {
		return err
	}
	ctx := context.Background()
	load := func(models []string) (servebench.Result, error) {
		return servebench.Load(ctx, servebench.LoadConfig{
			URL: o.url, APIKey: o.apiKey, Models: models, Rounds: o.rounds, Prompt: o.prompt, MaxTokens: o.maxTokens,
		})
	}
	// Warm up: page in the weights, first allocations.
	if _, err := servebench.Load(ctx, servebench.LoadConfig{URL: o.url, APIKey: o.apiKey, Models: []string{base}, Rounds: 1, Prompt: o.prompt, MaxTokens: 16}); err != nil {
		return err
	}
	var prompt []bridge.Token
	if local {
		if prompt, err = model.Tokenize(o.prompt, true, false); err != nil {
			return err
		}
	}
	// measure runs the HTTP load on models, then the same work straight on
	// the bridge (in-process only), --runs times in turn, so that a drift
	// of the machine's speed affects both alike.
	measure := func(name string, models []string, adapters []*bridge.Adapter) (benchRow, error) {
		row := benchRow{load: name, clients: len(models)}
		if local {
			row.raw = &servebench.Result{}
		}
		for range o.runs {
			res, err := load(models)
			if err != nil {
				return row, err
			}
			row.res.Add(res)
			if !local {
				continue
			}
			perRequest := int(math.Round(float64(res.Tokens) / float64(res.Requests)))
			r, err := servebench.Raw(model, adapters, servebench.DirectConfig{Prompt: prompt, Tokens: max(perRequest, 1), Rounds: o.rounds, Threads: o.threads})
			if err != nil {
				return row, err
			}
			row.raw.Add(r)
		}
		return row, nil
	}
	var rows []benchRow
	for _, n := range levels {
		row, err := measure("base model", slices.Repeat([]string{base}, n), make([]*bridge.Adapter, n))
		if err != nil {
			return err
		}
		rows = append(rows, row)
	}
	if len(adapters) >= o.tenants {
		var loaded []*bridge.Adapter
		defer func() {
			for _, a := range loaded {
				a.Close()
			}
		}()
		if local {
			for _, id := range adapters[:o.tenants] {
				a, err := model.LoadAdapter(filepath.Join(adapterDir, strings.TrimPrefix(id, base+":")+".iapt.gguf"))
				if err != nil {
					return err
				}
				loaded = append(loaded, a)
			}
		}
		row, err := measure(fmt.Sprintf("IAPT, %d adapters", o.tenants), adapters[:o.tenants], loaded)
		if err != nil {
			return err
		}
		rows = append(rows, row)
	} else {
		fmt.Printf("(the server has %d adapters, fewer than --tenants %d: no multi-tenant IAPT row)\n", len(adapters), o.tenants)
	}
	var loraParams int
	if local {
		res, params, err := loraLoad(model, filepath.Join(tmp, "lora"), prompt, o)
		if err != nil {
			return err
		}
		loraParams = params
		rows = append(rows, benchRow{fmt.Sprintf("LoRA, %d adapters *", o.tenants), o.tenants, res, nil})
	}
	printBench(o, iaptParams, loraParams, rows)
	return nil
}

// writeIAPTAdapters writes --tenants random IAPT adapters t0.. into dir and
// returns the parameters of one.
func writeIAPTAdapters(m *bridge.Model, dir string, o benchServeOptions) (uint64, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	info := m.Info()
	cfg := adapterfile.Config{Arch: info.Architecture, Embd: info.Embd, Layers: info.Layers, SoftTokens: o.softTokens, Bottleneck: o.bottleneck, Share: "none"}
	var params uint64
	for i := range o.tenants {
		a, err := adapterfile.Random(cfg, int64(i+1), 0.5)
		if err != nil {
			return 0, err
		}
		if err := a.Write(filepath.Join(dir, fmt.Sprintf("t%d.iapt.gguf", i))); err != nil {
			return 0, err
		}
		params = uint64(a.NumParams())
	}
	return params, nil
}

// loraLoad writes --tenants random native LoRA adapters (attn_q and attn_v)
// and serves one request per adapter and round, one adapter at a time.
func loraLoad(m *bridge.Model, dir string, prompt []bridge.Token, o benchServeOptions) (servebench.Result, int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return servebench.Result{}, 0, err
	}
	info := m.Info()
	cfg := adapterfile.LoRAConfig{Arch: info.Architecture, Embd: info.Embd, Layers: info.Layers, Rank: o.loraRank,
		Targets: []string{"attn_q", "attn_v"}, Alpha: float32(o.loraRank)}
	var loras []*bridge.LoRA
	defer func() {
		for _, l := range loras {
			l.Close()
		}
	}()
	for i := range o.tenants {
		path := filepath.Join(dir, fmt.Sprintf("l%d.gguf", i))
		if err := adapterfile.WriteRandomLoRA(path, cfg, int64(i+1), 0.05); err != nil {
			return servebench.Result{}, 0, err
		}
		l, err := m.LoadLoRA(path)
		if err != nil {
			return servebench.Result{}, 0, err
		}
		loras = append(loras, l)
	}
	var res servebench.Result
	for range o.runs {
		r, err := servebench.LoRASerial(m, loras, servebench.DirectConfig{Prompt: prompt, Tokens: o.maxTokens, Rounds: o.rounds, Threads: o.threads})
		if err != nil {
			return res, 0, err
		}
		res.Add(r)
	}
	return res, cfg.Layers * len(cfg.Targets) * 2 * cfg.Embd * cfg.Rank, nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", d.Seconds()*1e3) }

func printBench(o benchServeOptions, iaptParams uint64, loraParams int, rows []benchRow) {
	fmt.Printf("iapt bench serve: %s, %d threads, up to %d tokens per request, %d requests per client, %d runs, streaming\n",
		o.url, o.threads, o.maxTokens, o.rounds, o.runs)
	if iaptParams > 0 {
		fmt.Printf("IAPT adapters: %d soft tokens, bottleneck %d (%d params); LoRA: rank %d on attn_q, attn_v (%d params)\n",
			o.softTokens, o.bottleneck, iaptParams, o.loraRank, loraParams)
	}
	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "load\tclients\trequests\ttokens\ttok/s\tTTFT p50 ms\tTTFT p95 ms\tbridge raw tok/s\tserver/raw\t\n")
	for _, r := range rows {
		rawTokS, ratio := "-", "-"
		if r.raw != nil {
			rawTokS = fmt.Sprintf("%.1f", r.raw.TokensPerSecond())
			ratio = fmt.Sprintf("%.1f%%", 100*r.res.TokensPerSecond()/r.raw.TokensPerSecond())
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%.1f\t%s\t%s\t%s\t%s\t\n", r.load, r.clients, r.res.Requests, r.res.Tokens,
			r.res.TokensPerSecond(), ms(r.res.TTFTPercentile(50)), ms(r.res.TTFTPercentile(95)), rawTokS, ratio)
	}
	w.Flush()
	fmt.Println(`
bridge raw: the same prefills and batched decode steps straight on the bridge, without scheduler or HTTP
(goal: server within 5% of it at 1 client).`)
	if len(rows) > 0 && strings.HasPrefix(rows[len(rows)-1].load, "LoRA") {
		fmt.Println(`* native llama.cpp LoRA (Context.SetLoRA), in-process without HTTP: a LoRA applies to the whole
  context, so requests of different adapters run one at a time, first come first served.`)
	}
}

func init() {
	var o benchServeOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Measure the server: concurrent streaming clients, multi-tenant IAPT vs native LoRA",
		Long: `bench serve starts "iapt serve" in-process on loopback (or targets --url) and runs
streaming completion clients: --clients levels on the base model, then
--tenants clients on as many different random IAPT adapters. It reports
aggregate generated tokens/s and time to first token, next to the same work
done straight on the bridge (batched decode, no scheduler or HTTP), and the
same multi-tenant load on native llama.cpp LoRA adapters, which must run one
adapter at a time. With --url, only the HTTP loads run (the server's first
--tenants adapters serve the multi-tenant row).`,
		Example: `  iapt bench serve --model models/stories15M-q8_0.gguf --threads 1
  iapt bench serve --url http://127.0.0.1:8080 --clients 1,16`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return benchServe(o) },
	}
	f := cmd.Flags()
	f.StringVarP(&o.modelPath, "model", "m", "models/stories15M-q8_0.gguf", "GGUF base model (in-process server)")
	f.StringVar(&o.url, "url", "", "benchmark a running server instead, e.g. http://127.0.0.1:8080")
	f.StringVar(&o.apiKey, "api-key", "", "API key for --url")
	f.StringVar(&o.prompt, "prompt", "Once upon a time", "prompt of every request")
	f.StringVar(&o.clients, "clients", "1,4,8", "comma-separated numbers of concurrent clients on the base model")
	f.IntVarP(&o.threads, "threads", "t", 0, "CPU threads of the server and the bridge baselines (0: all cores but one)")
	f.IntVar(&o.parallel, "parallel", 0, "server slots (0: the largest load)")
	f.IntVarP(&o.maxTokens, "max-tokens", "n", 128, "tokens per request (greedy)")
	f.IntVar(&o.rounds, "rounds", 2, "requests per client, one after another")
	f.IntVar(&o.runs, "runs", 3, "repetitions of each load, alternating with its bridge baseline; figures are over all runs")
	f.IntVar(&o.tenants, "tenants", 8, "clients of the multi-tenant loads, each with its own adapter")
	f.IntVar(&o.softTokens, "soft-tokens", 4, "soft tokens of the random IAPT adapters")
	f.IntVar(&o.bottleneck, "bottleneck", 16, "bottleneck of the random IAPT adapters")
	f.IntVar(&o.loraRank, "lora-rank", 8, "rank of the random LoRA adapters (8 on attn_q and attn_v is about the size of the IAPT ones)")
	benchCmd.AddCommand(cmd)
}
