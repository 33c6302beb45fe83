package api

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/iapt-go/iapt/serve/registry"
)

// modelObject is an entry of GET /v1/models.
type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	// Parent is the base model of an adapter.
	Parent string `json:"parent,omitempty"`
}

// adapterObject is an entry of GET /v1/adapters.
type adapterObject struct {
	ID             string `json:"id"`
	Object         string `json:"object"`
	Name           string `json:"name"`
	Path           string `json:"path"`
	SoftTokens     int    `json:"soft_tokens"`
	Bottleneck     int    `json:"bottleneck"`
	Params         uint64 `json:"params"`
	PromptTemplate string `json:"prompt_template,omitempty"`
	InFlight       int    `json:"in_flight"`
	Created        int64  `json:"created"`
}

// adapterID is the model id of an adapter.
func (s *Server) adapterID(name string) string { return s.cfg.ModelID + ":" + name }

// models lists the base model, then the adapters by name.
func (s *Server) models(b *Backend) []modelObject {
	out := []modelObject{{ID: s.cfg.ModelID, Object: "model", Created: s.created.Load(), OwnedBy: "iapt"}}
	for _, a := range b.Adapters.List() {
		out = append(out, modelObject{ID: s.adapterID(a.Name), Object: "model", Created: a.Loaded.Unix(), OwnedBy: "iapt", Parent: s.cfg.ModelID})
	}
	return out
}

func (s *Server) listModels(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"object": "list", "data": s.models(s.backend.Load())})
}

func (s *Server) getModel(c *gin.Context) {
	id := c.Param("id")
	for _, m := range s.models(s.backend.Load()) {
		if m.ID == id {
			c.JSON(http.StatusOK, m)
			return
		}
	}
	abort(c, errUnknownModel(id))
}

func errUnknownModel(id string) *apiError {
	return newError(http.StatusNotFound, "invalid_request_error", "model", "model_not_found", "model %q does not exist (see GET /v1/models)", id)
}

// resolve finds the model of a request: the base model (nil lease) or an
// adapter, leased until the caller releases it.
func (s *Server) resolve(b *Backend, id string) (*registry.Lease, *apiError) {
	if id == s.cfg.ModelID {
		return nil, nil
	}
	name, ok := strings.CutPrefix(id, s.cfg.ModelID+":")
	if !ok {
		return nil, errUnknownModel(id)
	}
	lease, err := b.Adapters.Acquire(name)
	if err != nil {
		return nil, errUnknownModel(id)
	}
	return lease, nil
}

func (s *Server) adapterObject(a registry.Info) adapterObject {
	return adapterObject{
		ID: s.adapterID(a.Name), Object: "adapter", Name: a.Name, Path: a.Path,
		SoftTokens: a.SoftTokens, Bottleneck: a.Bottleneck, Params: a.Params,
		PromptTemplate: a.Template, InFlight: a.InFlight, Created: a.Loaded.Unix(),
	}
}

func (s *Server) listAdapters(c *gin.Context) {
	list := s.backend.Load().Adapters.List()
	data := make([]adapterObject, len(list))
	for i, a := range list {
		data[i] = s.adapterObject(a)
	}
	c.JSON(http.StatusOK, gin.H{"object": "list", "data": data})
}

// loadRequest is the body of POST /v1/adapters.
type loadRequest struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

func (s *Server) loadAdapter(c *gin.Context) {
	var req loadRequest
	body, e := readBody(c)
	if e != nil {
		abort(c, e)
		return
	}
	if err := json.Unmarshal(body, &req); err != nil {
		abort(c, jsonError(err))
		return
	}
	if req.Path == "" {
		abort(c, invalid("path", "path is required: an adapter GGUF, absolute or relative to the adapters folder"))
		return
	}
	if req.Name != "" {
		if err := registry.CheckName(req.Name); err != nil {
			abort(c, invalid("name", "%v", err))
			return
		}
	}
	info, err := s.backend.Load().Adapters.Load(req.Name, req.Path)
	if err != nil {
		e := fromError(err, "")
		if e.status == http.StatusBadRequest {
			e = invalid("path", "%v", err)
		}
		abort(c, e)
		return
	}
	c.JSON(http.StatusCreated, s.adapterObject(info))
}

func (s *Server) removeAdapter(c *gin.Context) {
	name := c.Param("name")
	if err := s.backend.Load().Adapters.Remove(name); err != nil {
		abort(c, fromError(err, ""))
		return
	}
	c.JSON(http.StatusOK, gin.H{"id": s.adapterID(name), "object": "adapter", "name": name, "deleted": true})
}
