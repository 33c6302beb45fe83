package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/iapt-go/iapt/bridge"
)

// maxBodyBytes bounds a request body.
const maxBodyBytes = 4 << 20

// maxStops is OpenAI's limit on stop sequences.
const maxStops = 4

// rawRequest is the union of the fields of chat and completion requests
// that the server reads; unknown fields are ignored. Pointers tell absent
// (or null) fields from zero values.
type rawRequest struct {
	Model               *string           `json:"model"`
	Messages            []json.RawMessage `json:"messages"`
	Prompt              json.RawMessage   `json:"prompt"`
	MaxTokens           *int64            `json:"max_tokens"`
	MaxCompletionTokens *int64            `json:"max_completion_tokens"`
	Temperature         *float64          `json:"temperature"`
	TopP                *float64          `json:"top_p"`
	Stop                json.RawMessage   `json:"stop"`
	Seed                *int64            `json:"seed"`
	PresencePenalty     *float64          `json:"presence_penalty"`
	FrequencyPenalty    *float64          `json:"frequency_penalty"`
	N                   *int64            `json:"n"`
	Stream              *bool             `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	// Refused when set to something this server cannot do.
	Logprobs       json.RawMessage `json:"logprobs"`
	TopLogprobs    json.RawMessage `json:"top_logprobs"`
	Tools          json.RawMessage `json:"tools"`
	Functions      json.RawMessage `json:"functions"`
	ResponseFormat *struct {
		Type string `json:"type"`
	} `json:"response_format"`
	Echo   *bool   `json:"echo"`
	BestOf *int64  `json:"best_of"`
	Suffix *string `json:"suffix"`
}

// generation is a validated request, ready to render and submit.
type generation struct {
	model        string
	maxTokens    int // 0: up to the context
	sampling     bridge.SamplerParams
	stop         []string
	stream       bool
	includeUsage bool
	messages     []bridge.ChatMessage // chat
	prompt       string               // completions
}

// readBody reads the request body, up to maxBodyBytes.
func readBody(c *gin.Context) ([]byte, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, newError(http.StatusRequestEntityTooLarge, "invalid_request_error", "", "", "request body is larger than %d bytes", maxBodyBytes)
		}
		return nil, invalid("", "reading the request body: %v", err)
	}
	return body, nil
}

// readRequest decodes a generation request, naming the field of a type
// error.
func readRequest(c *gin.Context) (*rawRequest, *apiError) {
	body, e := readBody(c)
	if e != nil {
		return nil, e
	}
	var r rawRequest
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, jsonError(err)
	}
	return &r, nil
}

// jsonError explains a JSON decoding error.
func jsonError(err error) *apiError {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return invalid("", "invalid JSON in the request body at byte %d: %v", syn.Offset, err)
	case errors.As(err, &typ) && typ.Field == "":
		return invalid("", "the request body must be a JSON object, not a JSON %s", typ.Value)
	case errors.As(err, &typ):
		return invalid(typ.Field, "field %q: JSON %s is not a valid %s", typ.Field, typ.Value, jsonKind(typ.Type.Kind().String()))
	}
	return invalid("", "invalid JSON in the request body: %v", err)
}

// jsonKind names a Go kind of rawRequest's fields in JSON terms.
func jsonKind(kind string) string {
	switch kind {
	case "int64":
		return "integer"
	case "float64":
		return "number"
	case "bool":
		return "boolean"
	case "slice":
		return "array"
	case "struct":
		return "object"
	}
	return kind
}

// present reports whether a raw field was given and is not null.
func present(raw json.RawMessage) bool {
	return len(raw) > 0 && !bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// common validates the fields shared by both endpoints.
func (r *rawRequest) common(maxTokensField string, maxTokens *int64) (generation, *apiError) {
	var g generation
	if r.Model == nil || *r.Model == "" {
		return g, invalid("model", "model is required (see GET /v1/models)")
	}
	g.model = *r.Model
	if r.N != nil && *r.N != 1 {
		return g, invalid("n", "n = %d: this server generates one choice per request (n = 1)", *r.N)
	}
	if maxTokens != nil {
		if *maxTokens < 1 {
			return g, invalid(maxTokensField, "%s = %d, want >= 1", maxTokensField, *maxTokens)
		}
		// Larger values are clamped to the room left in the context.
		g.maxTokens = int(min(*maxTokens, 1<<30))
	}
	p := bridge.SamplerParams{Temperature: 1}
	if r.Temperature != nil {
		if !(*r.Temperature >= 0 && *r.Temperature <= 2) {
			return g, invalid("temperature", "temperature = %v, want a number in [0, 2]", *r.Temperature)
		}
		p.Temperature = float32(*r.Temperature)
	}
	if r.TopP != nil {
		if !(*r.TopP >= 0 && *r.TopP <= 1) {
			return g, invalid("top_p", "top_p = %v, want a number in [0, 1]", *r.TopP)
		}
		p.TopP = float32(*r.TopP)
		if *r.TopP == 0 {
			p.Temperature = 0 // only the most likely token is left
		}
	}
	for _, pen := range []struct {
		name string
		v    *float64
		dst  *float32
	}{{"presence_penalty", r.PresencePenalty, &p.PresencePenalty}, {"frequency_penalty", r.FrequencyPenalty, &p.FrequencyPenalty}} {
		if pen.v == nil {
			continue
		}
		if !(*pen.v >= -2 && *pen.v <= 2) {
			return g, invalid(pen.name, "%s = %v, want a number in [-2, 2]", pen.name, *pen.v)
		}
		*pen.dst = float32(*pen.v)
	}
	if r.Seed != nil {
		p.Seed = uint32(*r.Seed)
	} else {
		p.Seed = rand.Uint32()
	}
	g.sampling = p
	stop, e := parseStop(r.Stop)
	if e != nil {
		return g, e
	}
	g.stop = stop
	g.stream = r.Stream != nil && *r.Stream
	g.includeUsage = r.StreamOptions != nil && r.StreamOptions.IncludeUsage
	return g, nil
}

// parseStop reads stop: absent, null, a string or an array of strings.
func parseStop(raw json.RawMessage) ([]string, *apiError) {
	if !present(raw) {
		return nil, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		if one == "" {
			return nil, invalid("stop", "stop must not be an empty string")
		}
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, invalid("stop", "stop must be a string or an array of strings")
	}
	if len(many) > maxStops {
		return nil, invalid("stop", "stop has %d strings, at most %d are allowed", len(many), maxStops)
	}
	for i, s := range many {
		if s == "" {
			return nil, invalid(fmt.Sprintf("stop[%d]", i), "stop[%d] must not be an empty string", i)
		}
	}
	return many, nil
}

// chatMessage is one entry of messages.
type chatMessage struct {
	Role    *string         `json:"role"`
	Content json.RawMessage `json:"content"`
}

// contentPart is one entry of a message's content array.
type contentPart struct {
	Type string  `json:"type"`
	Text *string `json:"text"`
}

// chat validates a chat completion request.
func (r *rawRequest) chat() (generation, *apiError) {
	field, maxTokens := "max_tokens", r.MaxTokens
	if r.MaxCompletionTokens != nil {
		field, maxTokens = "max_completion_tokens", r.MaxCompletionTokens
	}
	g, e := r.common(field, maxTokens)
	if e != nil {
		return g, e
	}
	switch {
	case present(r.Logprobs) && string(bytes.TrimSpace(r.Logprobs)) != "false":
		return g, invalid("logprobs", "logprobs are not supported")
	case present(r.TopLogprobs):
		return g, invalid("top_logprobs", "logprobs are not supported")
	case present(r.Tools) && string(bytes.TrimSpace(r.Tools)) != "[]":
		return g, invalid("tools", "tools are not supported")
	case present(r.Functions):
		return g, invalid("functions", "functions are not supported")
	case r.ResponseFormat != nil && r.ResponseFormat.Type != "" && r.ResponseFormat.Type != "text":
		return g, invalid("response_format", "response_format %q is not supported (only \"text\")", r.ResponseFormat.Type)
	case len(r.Messages) == 0:
		return g, invalid("messages", "messages must hold at least one message")
	}
	for i, raw := range r.Messages {
		msg, e := parseMessage(i, raw)
		if e != nil {
			return g, e
		}
		g.messages = append(g.messages, msg)
	}
	return g, nil
}

// parseMessage reads messages[i]: a role among system, developer, user and
// assistant, and a content that is a string or an array of text parts.
func parseMessage(i int, raw json.RawMessage) (bridge.ChatMessage, *apiError) {
	var m chatMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return bridge.ChatMessage{}, invalid(fmt.Sprintf("messages[%d]", i), "messages[%d] must be an object with a role and a content", i)
	}
	roleField := fmt.Sprintf("messages[%d].role", i)
	if m.Role == nil {
		return bridge.ChatMessage{}, invalid(roleField, "%s is required", roleField)
	}
	role := *m.Role
	switch role {
	case "system", "user", "assistant":
	case "developer":
		role = "system"
	default:
		return bridge.ChatMessage{}, invalid(roleField, "%s = %q: want system, developer, user or assistant", roleField, role)
	}
	contentField := fmt.Sprintf("messages[%d].content", i)
	if !present(m.Content) {
		return bridge.ChatMessage{}, invalid(contentField, "%s is required", contentField)
	}
	var text string
	if err := json.Unmarshal(m.Content, &text); err == nil {
		return bridge.ChatMessage{Role: role, Content: text}, nil
	}
	var parts []contentPart
	if err := json.Unmarshal(m.Content, &parts); err != nil {
		return bridge.ChatMessage{}, invalid(contentField, "%s must be a string or an array of text parts", contentField)
	}
	var buf bytes.Buffer
	for j, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return bridge.ChatMessage{}, invalid(fmt.Sprintf("%s[%d]", contentField, j), "%s[%d] must be {\"type\":\"text\",\"text\":...}; got type %q", contentField, j, p.Type)
		}
		buf.WriteString(*p.Text)
	}
	return bridge.ChatMessage{Role: role, Content: buf.String()}, nil
}

// completion validates a (legacy) completion request.
func (r *rawRequest) completion() (generation, *apiError) {
	g, e := r.common("max_tokens", r.MaxTokens)
	if e != nil {
		return g, e
	}
	switch {
	case present(r.Logprobs):
		return g, invalid("logprobs", "logprobs are not supported")
	case r.Echo != nil && *r.Echo:
		return g, invalid("echo", "echo is not supported")
	case r.BestOf != nil && *r.BestOf != 1:
		return g, invalid("best_of", "best_of = %d: this server generates one choice per request", *r.BestOf)
	case r.Suffix != nil && *r.Suffix != "":
		return g, invalid("suffix", "suffix is not supported")
	case !present(r.Prompt):
		return g, invalid("prompt", "prompt is required")
	}
	if err := json.Unmarshal(r.Prompt, &g.prompt); err == nil {
		return g, nil
	}
	var many []string
	if err := json.Unmarshal(r.Prompt, &many); err != nil || len(many) != 1 {
		return g, invalid("prompt", "prompt must be a string or an array of exactly one string")
	}
	g.prompt = many[0]
	return g, nil
}
