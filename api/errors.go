package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/iapt-go/iapt/serve"
	"github.com/iapt-go/iapt/serve/registry"
)

// apiError is an error in OpenAI's shape:
// {"error":{"message":...,"type":...,"param":...,"code":...}}.
type apiError struct {
	status  int
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// newError builds an error; empty param and code become JSON null.
func newError(status int, typ, param, code, format string, args ...any) *apiError {
	e := &apiError{status: status, Message: fmt.Sprintf(format, args...), Type: typ}
	if param != "" {
		e.Param = &param
	}
	if code != "" {
		e.Code = &code
	}
	return e
}

// invalid is a 400 invalid_request_error about param.
func invalid(param, format string, args ...any) *apiError {
	return newError(http.StatusBadRequest, "invalid_request_error", param, "", format, args...)
}

// errorBody is the JSON body of an error response or stream event.
func errorBody(e *apiError) gin.H { return gin.H{"error": e} }

// abort ends the request with the error.
func abort(c *gin.Context, e *apiError) {
	if e.status == http.StatusTooManyRequests {
		c.Header("Retry-After", "1")
	}
	c.AbortWithStatusJSON(e.status, errorBody(e))
}

// fromError maps scheduler, registry and context errors to API errors;
// param names the request field that a prompt error is about.
func fromError(err error, param string) *apiError {
	switch {
	case errors.Is(err, serve.ErrQueueFull):
		return newError(http.StatusTooManyRequests, "rate_limit_error", "", "queue_full", "%v; retry later", err)
	case errors.Is(err, serve.ErrClosed):
		return newError(http.StatusServiceUnavailable, "server_error", "", "shutting_down", "%v", err)
	case errors.Is(err, serve.ErrTooLong):
		return newError(http.StatusBadRequest, "invalid_request_error", param, "context_length_exceeded", "%v", err)
	case errors.Is(err, serve.ErrInvalid), errors.Is(err, serve.ErrPrefill):
		return invalid(param, "%v", err)
	case errors.Is(err, registry.ErrNotFound):
		return newError(http.StatusNotFound, "invalid_request_error", "", "adapter_not_found", "%v", err)
	case errors.Is(err, registry.ErrExists):
		return newError(http.StatusConflict, "invalid_request_error", "name", "adapter_exists", "%v", err)
	case errors.Is(err, registry.ErrInvalid):
		return invalid("", "%v", err)
	case errors.Is(err, context.DeadlineExceeded):
		return newError(http.StatusGatewayTimeout, "timeout_error", "", "timeout", "the request timed out")
	case errors.Is(err, context.Canceled):
		// The client is gone; nobody reads this.
		return newError(499, "invalid_request_error", "", "cancelled", "the request was cancelled")
	}
	return newError(http.StatusInternalServerError, "server_error", "", "", "%v", err)
}
