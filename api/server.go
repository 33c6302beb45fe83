// Package api is the OpenAI-compatible HTTP API of the IAPT server (gin):
// chat and text completions, streaming or not, over a base model and every
// IAPT adapter loaded on it, plus adapter management, health and metrics.
//
// Model ids: the base model's id (its file name without ".gguf", or one
// given in Config), and "<base id>:<adapter name>" for each adapter, where
// the adapter name defaults to the file name without ".iapt.gguf" or
// ".gguf" (package registry).
//
// Routes:
//
//	GET    /health                  200 when the model is loaded, else 503
//	GET    /metrics                 Prometheus metrics
//	GET    /v1/models               base model and adapters
//	GET    /v1/models/{id}
//	POST   /v1/chat/completions     messages rendered by package prompt: with the
//	                                adapter's template, else the model's chat
//	                                template, else prompt.DefaultTemplate
//	POST   /v1/completions          a plain prompt
//	GET    /v1/adapters             loaded adapters
//	POST   /v1/adapters             {"name": ..., "path": ...} (admin)
//	DELETE /v1/adapters/{name}      (admin)
//
// With API keys configured, /v1 requires "Authorization: Bearer <key>". With
// an admin key, loading and removing adapters require it (it is accepted as
// an API key too); without one, whoever may use /v1 may manage adapters.
//
// max_tokens (or max_completion_tokens) larger than the room left in a
// slot's context is clamped to it, and the completion ends with
// finish_reason "length"; absent, the completion may fill the context.
// temperature defaults to 1 and top_p to 1, as in OpenAI's API; a request
// without seed gets a random one. prompt_tokens counts the prompt's text
// tokens, not the adapter's soft tokens.
package api

import (
	"crypto/subtle"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/iapt-go/iapt/bridge"
	"github.com/iapt-go/iapt/serve"
	"github.com/iapt-go/iapt/serve/metrics"
	"github.com/iapt-go/iapt/serve/registry"
)

// Config configures the API.
type Config struct {
	// ModelID is the base model's id.
	ModelID string
	// APIKeys, when any, are the accepted bearer tokens of /v1.
	APIKeys []string
	// AdminKey, when set, is required to load and remove adapters.
	AdminKey string
	// RequestTimeout bounds a generation, queueing included (0: none).
	RequestTimeout time.Duration
}

// Backend is what the API serves once the model is loaded.
type Backend struct {
	Model     *bridge.Model
	Scheduler *serve.Scheduler
	Adapters  *registry.Registry
}

// Server is the HTTP API; it is an http.Handler.
type Server struct {
	cfg     Config
	m       *metrics.Metrics
	router  *gin.Engine
	backend atomic.Pointer[Backend]
	created atomic.Int64 // unix time the backend was attached
}

// New builds the API. Until Ready is called, /health and /v1 answer 503.
// It puts gin in release mode (gin's mode is process-wide).
func New(cfg Config, m *metrics.Metrics) *Server {
	gin.SetMode(gin.ReleaseMode)
	s := &Server{cfg: cfg, m: m, router: gin.New()}
	r := s.router
	r.HandleMethodNotAllowed = true
	r.Use(gin.CustomRecovery(func(c *gin.Context, _ any) {
		abort(c, newError(http.StatusInternalServerError, "server_error", "", "", "internal error"))
	}), s.countRequests)
	r.NoRoute(func(c *gin.Context) {
		abort(c, newError(http.StatusNotFound, "invalid_request_error", "", "not_found", "no route %s %s", c.Request.Method, c.Request.URL.Path))
	})
	r.NoMethod(func(c *gin.Context) {
		abort(c, newError(http.StatusMethodNotAllowed, "invalid_request_error", "", "method_not_allowed", "method %s is not allowed on %s", c.Request.Method, c.Request.URL.Path))
	})
	r.GET("/health", s.health)
	r.GET("/metrics", gin.WrapH(m.Handler()))
	v1 := r.Group("/v1", s.authenticate, s.requireBackend)
	v1.GET("/models", s.listModels)
	v1.GET("/models/:id", s.getModel)
	v1.POST("/chat/completions", s.chatCompletions)
	v1.POST("/completions", s.completions)
	v1.GET("/adapters", s.listAdapters)
	v1.POST("/adapters", s.requireAdmin, s.loadAdapter)
	v1.DELETE("/adapters/:name", s.requireAdmin, s.removeAdapter)
	return s
}

// Ready attaches the loaded model: from now on the API serves it.
func (s *Server) Ready(b *Backend) {
	s.created.Store(time.Now().Unix())
	s.backend.Store(b)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// modelKey is the gin context key of the served model id, for metrics.
const modelKey = "iapt.model"

// countRequests records every request in the metrics.
func (s *Server) countRequests(c *gin.Context) {
	c.Next()
	endpoint := c.FullPath()
	if endpoint == "" {
		endpoint = "unmatched"
	}
	s.m.Requests.WithLabelValues(endpoint, c.GetString(modelKey), strconv.Itoa(c.Writer.Status())).Inc()
}

func (s *Server) health(c *gin.Context) {
	b := s.backend.Load()
	if b == nil {
		c.JSON(http.StatusServiceUnavailable, gin.H{"status": "loading"})
		return
	}
	st := b.Scheduler.Stats()
	c.JSON(http.StatusOK, gin.H{"status": "ok", "model": s.cfg.ModelID, "slots": st.Slots, "active": st.Active, "queued": st.Queued})
}

// requireBackend answers 503 while the model is loading.
func (s *Server) requireBackend(c *gin.Context) {
	if s.backend.Load() == nil {
		abort(c, newError(http.StatusServiceUnavailable, "server_error", "", "loading", "the model is still loading"))
	}
}

// bearer returns the token of the Authorization header.
func bearer(c *gin.Context) (string, bool) {
	token, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer ")
	return strings.TrimSpace(token), ok && strings.TrimSpace(token) != ""
}

// keyIn reports whether token is one of keys, in constant time per key.
func keyIn(token string, keys ...string) bool {
	found := false
	for _, k := range keys {
		if k != "" && subtle.ConstantTimeCompare([]byte(token), []byte(k)) == 1 {
			found = true
		}
	}
	return found
}

// authenticate checks the API key when API keys are configured (the admin
// key counts as one).
func (s *Server) authenticate(c *gin.Context) {
	if len(s.cfg.APIKeys) == 0 {
		return
	}
	token, ok := bearer(c)
	if !ok {
		abort(c, errMissingKey())
		return
	}
	if !keyIn(token, append([]string{s.cfg.AdminKey}, s.cfg.APIKeys...)...) {
		abort(c, errWrongKey())
	}
}

// requireAdmin checks the admin key when one is configured: 401 without a
// known key, 403 with an API key that is not the admin key.
func (s *Server) requireAdmin(c *gin.Context) {
	if s.cfg.AdminKey == "" {
		return
	}
	token, ok := bearer(c)
	switch {
	case !ok:
		abort(c, errMissingKey())
	case keyIn(token, s.cfg.AdminKey):
	case keyIn(token, s.cfg.APIKeys...):
		abort(c, newError(http.StatusForbidden, "invalid_request_error", "", "admin_key_required", "managing adapters requires the admin key"))
	default:
		abort(c, errWrongKey())
	}
}

func errMissingKey() *apiError {
	return newError(http.StatusUnauthorized, "invalid_request_error", "", "invalid_api_key", "missing API key: send the header \"Authorization: Bearer <key>\"")
}

func errWrongKey() *apiError {
	return newError(http.StatusUnauthorized, "invalid_request_error", "", "invalid_api_key", "invalid API key")
}
