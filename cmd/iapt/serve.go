package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/iapt-go/iapt/api"
	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/serve"
	"github.com/iapt-go/iapt/serve/metrics"
	"github.com/iapt-go/iapt/serve/registry"
	"github.com/spf13/cobra"
)

// serveOptions are the flags of `iapt serve`.
type serveOptions struct {
	modelPath, modelID, adaptersDir, addr string
	parallel, slotCtx, queue, threads     int
	apiKeys                               []string
	apiKeyFile, adminKey                  string
	timeout                               time.Duration
}

// server is a running in-process IAPT server.
type server struct {
	http     *http.Server
	addr     string // the address it listens on
	model    *bridge.Model
	sched    *serve.Scheduler
	adapters *registry.Registry
	served   chan error // Serve's result
}

// modelID is the default id of a base model: its file name without ".gguf".
func modelID(path string) string {
	return strings.TrimSuffix(filepath.Base(path), ".gguf")
}

// readKeyFile reads API keys, one a line; blank lines and lines starting
// with '#' are skipped.
func readKeyFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--api-key-file: %w", err)
	}
	defer f.Close()
	var keys []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k := strings.TrimSpace(sc.Text()); k != "" && !strings.HasPrefix(k, "#") {
			keys = append(keys, k)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--api-key-file %s: %w", path, err)
	}
	return keys, nil
}

// keys gathers the API keys of --api-key, IAPT_API_KEY (comma-separated)
// and --api-key-file, and the admin key of --admin-key or IAPT_ADMIN_KEY.
func (o *serveOptions) keys() (apiKeys []string, admin string, err error) {
	apiKeys = append(apiKeys, o.apiKeys...)
	for _, k := range strings.Split(os.Getenv("IAPT_API_KEY"), ",") {
		if k = strings.TrimSpace(k); k != "" {
			apiKeys = append(apiKeys, k)
		}
	}
	if o.apiKeyFile != "" {
		fromFile, err := readKeyFile(o.apiKeyFile)
		if err != nil {
			return nil, "", err
		}
		apiKeys = append(apiKeys, fromFile...)
	}
	admin = o.adminKey
	if admin == "" {
		admin = os.Getenv("IAPT_ADMIN_KEY")
	}
	return apiKeys, admin, nil
}

// startServer listens, then loads the model, the scheduler and the adapters
// of the adapters folder; /health reports "loading" until they are ready.
func startServer(o serveOptions, log *slog.Logger) (*server, error) {
	apiKeys, admin, err := o.keys()
	if err != nil {
		return nil, err
	}
	id := o.modelID
	if id == "" {
		id = modelID(o.modelPath)
	}
	if strings.Contains(id, ":") {
		return nil, fmt.Errorf("--model-id %q: must not contain ':' (it separates adapter names)", id)
	}
	m := metrics.New()
	handler := api.New(api.Config{ModelID: id, APIKeys: apiKeys, AdminKey: admin, RequestTimeout: o.timeout}, m)
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return nil, fmt.Errorf("--addr: %w", err)
	}
	s := &server{http: &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}, addr: ln.Addr().String(), served: make(chan error, 1)}
	go func() { s.served <- s.http.Serve(ln) }()
	log.Info("listening", "addr", s.addr, "api_keys", len(apiKeys), "admin_key", admin != "")
	if err := s.load(o, id, handler, m, log); err != nil {
		s.shutdown(context.Background())
		return nil, err
	}
	return s, nil
}

// load loads the model, starts the scheduler, loads the adapters and
// attaches them to the API.
func (s *server) load(o serveOptions, id string, handler *api.Server, m *metrics.Metrics, log *slog.Logger) error {
	t0 := time.Now()
	model, err := bridge.LoadModel(o.modelPath, bridge.ModelParams{})
	if err != nil {
		return err
	}
	s.model = model
	s.sched, err = serve.New(model, serve.Config{Slots: o.parallel, SlotContext: o.slotCtx, Queue: o.queue, Threads: o.threads}, m)
	if err != nil {
		return err
	}
	s.adapters = registry.New(model, o.adaptersDir, func(n int) { m.AdaptersLoaded.Set(float64(n)) })
	if o.adaptersDir != "" {
		names, err := s.adapters.LoadDir()
		if err != nil {
			return err
		}
		log.Info("adapters loaded", "dir", o.adaptersDir, "names", names)
	}
	handler.Ready(&api.Backend{Model: model, Scheduler: s.sched, Adapters: s.adapters})
	cfg := s.sched.Config()
	log.Info("model loaded", "model", id, "path", o.modelPath, "slots", cfg.Slots, "slot_context", cfg.SlotContext,
		"queue", cfg.Queue, "threads", cfg.Threads, "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

// shutdown stops taking connections, lets in-flight requests finish until
// ctx ends, then cancels what is left and frees everything.
func (s *server) shutdown(ctx context.Context) error {
	errHTTP := s.http.Shutdown(ctx)
	var errSched error
	if s.sched != nil {
		// After an expired ctx this cancels the generations at once, which
		// lets their handlers return.
		errSched = s.sched.Shutdown(ctx)
	}
	if errHTTP != nil {
		s.http.Close()
	}
	if err := <-s.served; !errors.Is(err, http.ErrServerClosed) {
		errHTTP = errors.Join(errHTTP, err)
	}
	if s.adapters != nil {
		s.adapters.Close()
	}
	if s.model != nil {
		s.model.Close()
	}
	return errors.Join(errHTTP, errSched)
}

func newServeCmd() *cobra.Command {
	var (
		o        serveOptions
		grace    time.Duration
		verbose  bool
		logLevel = slog.LevelInfo
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve a base model and its IAPT adapters over an OpenAI-compatible API, batched",
		Long: `serve runs an OpenAI-compatible HTTP server (chat and text completions,
streaming or not) over one base model and any number of IAPT adapters.
Requests of different adapters decode together in one batch: each is
prefilled with its adapter into one of --parallel slots, then every decode
step advances all active slots.

Model ids (GET /v1/models): the base model is its file name without ".gguf"
(or --model-id); an adapter is "<base id>:<adapter name>", the adapter name
being the file name without ".iapt.gguf" or ".gguf", or the name given to
POST /v1/adapters.

Chat messages are rendered as in training (package prompt): with the
adapter's prompt template (adapter.iapt.prompt_template), else the model's
chat template, else the default instruction template
"### Instruction:\n{instruction}\n\n### Response:\n", where {instruction}
is the system and user messages joined by blank lines.

Each slot holds soft tokens + prompt + completion within --slot-context;
a longer prompt is refused (400), a larger max_tokens is clamped.

Endpoints: /v1/models, /v1/chat/completions, /v1/completions, /v1/adapters
(GET; POST {"name","path"} and DELETE /v1/adapters/{name} need the admin key
when one is set), /health, /metrics (Prometheus).`,
		Example: `  iapt serve --model models/stories15M-q8_0.gguf --adapters adapters/ --parallel 8
  IAPT_API_KEY=secret iapt serve --addr 0.0.0.0:8080 --admin-key admin-secret`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			bridge.SetVerbose(verbose)
			if verbose {
				logLevel = slog.LevelDebug
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel}))
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			s, err := startServer(o, log)
			if err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				log.Info("shutting down", "grace", grace)
			case err := <-s.served:
				s.served <- err // for shutdown
				log.Error("server stopped", "err", err)
			}
			stop()
			sctx, cancel := context.WithTimeout(context.Background(), grace)
			defer cancel()
			if err := s.shutdown(sctx); err != nil {
				return fmt.Errorf("shutdown: %w", err)
			}
			log.Info("stopped")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.modelPath, "model", "m", "models/stories15M-q8_0.gguf", "GGUF base model")
	f.StringVar(&o.modelID, "model-id", "", "id of the base model in the API (default: the file name without .gguf)")
	f.StringVar(&o.adaptersDir, "adapters", "", "folder of IAPT adapters: every *.gguf in it is loaded at start, and relative paths of POST /v1/adapters resolve here")
	f.StringVar(&o.addr, "addr", "127.0.0.1:8080", "address to listen on")
	f.IntVar(&o.parallel, "parallel", 4, "sequences generated in parallel (slots)")
	f.IntVar(&o.slotCtx, "slot-context", 0, "context of one slot in tokens (0: the model's training context)")
	f.IntVar(&o.queue, "queue", 64, "requests that may wait beyond the free slots; more get 429")
	f.IntVarP(&o.threads, "threads", "t", 0, "CPU threads (0: all cores but one, which serves HTTP)")
	f.StringArrayVar(&o.apiKeys, "api-key", nil, "accepted API key (repeatable; also IAPT_API_KEY, comma-separated)")
	f.StringVar(&o.apiKeyFile, "api-key-file", "", "file of accepted API keys, one a line")
	f.StringVar(&o.adminKey, "admin-key", "", "key required to load and remove adapters (also IAPT_ADMIN_KEY)")
	f.DurationVar(&o.timeout, "timeout", 10*time.Minute, "limit of one request, queueing included (0: none)")
	f.DurationVar(&grace, "shutdown-timeout", 30*time.Second, "on SIGINT/SIGTERM, time given to in-flight requests before they are cancelled")
	f.BoolVarP(&verbose, "verbose", "v", false, "debug logging, with llama.cpp's log")
	return cmd
}

func init() {
	rootCmd.AddCommand(newServeCmd())
}
