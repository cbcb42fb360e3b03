package credproxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/execlaw/execlaw/internal/llm"
)

// dialect is what differs between providers: where requests may go, how
// the key is presented, and how errors look to the provider's SDK.
type dialect struct {
	defaultBase string
	anthropic   bool // Anthropic's API; otherwise OpenAI's
	// routes maps "METHOD /path" the agent may use to the path appended to
	// the base URL.
	routes map[string]string
}

var (
	anthropicRoutes = map[string]string{
		"POST /v1/messages":              "/v1/messages",
		"POST /v1/messages/count_tokens": "/v1/messages/count_tokens",
		"GET /v1/models":                 "/v1/models",
	}
	// OpenAI-style base URLs end in /v1 already (https://api.openai.com/v1),
	// and SDKs are configured either with or without it, so both spellings
	// map onto the base.
	openaiRoutes = map[string]string{
		"POST /v1/chat/completions": "/chat/completions",
		"POST /chat/completions":    "/chat/completions",
		"POST /v1/responses":        "/responses",
		"POST /responses":           "/responses",
		"GET /v1/models":            "/models",
		"GET /models":               "/models",
	}
)

var dialects = map[string]dialect{
	llm.Anthropic:        {defaultBase: "https://api.anthropic.com", anthropic: true, routes: anthropicRoutes},
	llm.OpenAI:           {defaultBase: "https://api.openai.com/v1", routes: openaiRoutes},
	llm.OpenRouter:       {defaultBase: "https://openrouter.ai/api/v1", routes: openaiRoutes},
	llm.OpenAICompatible: {routes: openaiRoutes},
}

// route returns the upstream path for an allowed request.
func (d dialect) route(method, path string) (string, bool) {
	up, ok := d.routes[method+" "+path]
	return up, ok
}

// setKey presents the real key the way the provider expects it.
func (d dialect) setKey(h http.Header, key string) {
	if key == "" {
		return
	}
	if d.anthropic {
		h.Set("X-Api-Key", key)
	} else {
		h.Set("Authorization", "Bearer "+key)
	}
}

// forwardHeader reports whether a request header from the agent may go
// upstream: what shapes the request, never credentials, cookies or
// connection handling.
func forwardHeader(name string) bool {
	switch name = strings.ToLower(name); name {
	case "content-type", "accept", "user-agent", "anthropic-version", "anthropic-beta", "openai-beta":
		return true
	}
	// The SDKs' telemetry and retry headers (x-stainless-lang,
	// x-stainless-retry-count, ...).
	return strings.HasPrefix(name, "x-stainless-")
}

// errorBody is an error in the provider's shape, so that the agent's SDK
// reports the proxy's refusals like the provider's own.
func (d dialect) errorBody(status int, msg string) []byte {
	return d.errorBodyOf(status, llm.APIError{Message: msg})
}

// errorAnswer is what the agent gets for an upstream error answer: the
// provider's error shape with the upstream's JSON error message (cleaned,
// bounded), type and code, the key scrubbed in case the provider echoes it;
// for an answer without a JSON message only its status. The upstream is
// whatever the session's base URL names, so its body itself is never
// passed on. A redirect is not followed, by the agent either: its Location
// goes. h is the header sent with the answer.
func (p *Proxy) errorAnswer(status int, body []byte, h http.Header) []byte {
	e, ok := llm.ParseError(body)
	switch {
	case status >= 300 && status < 400:
		e = llm.APIError{Message: fmt.Sprintf("the endpoint redirected (HTTP %d); redirects are not followed", status)}
		h.Del("Location")
	case !ok || e.Message == llm.NoErrorMessage: // the latter from llm.HTTPClient
		e = llm.APIError{Message: fmt.Sprintf("HTTP %d from the endpoint: %s", status, llm.NoErrorMessage)}
	}
	e.Message = p.key.Scrub(e.Message)
	if p.key.Scrub(e.Type) != e.Type {
		e.Type = ""
	}
	if p.key.Scrub(e.Code) != e.Code {
		e.Code = ""
	}
	h.Del("Content-Encoding")
	h.Set("Content-Type", "application/json")
	return p.d.errorBodyOf(status, e)
}

// errorBodyOf is errorBody with the type and code e gives, where it gives
// them.
func (d dialect) errorBodyOf(status int, e llm.APIError) []byte {
	msg := e.Message
	var v any
	if d.anthropic {
		typ := "api_error"
		switch status {
		case http.StatusBadRequest, http.StatusRequestHeaderFieldsTooLarge:
			typ = "invalid_request_error"
		case http.StatusUnauthorized:
			typ = "authentication_error"
		case http.StatusForbidden:
			typ = "permission_error"
		case http.StatusNotFound:
			typ = "not_found_error"
		case http.StatusRequestEntityTooLarge:
			typ = "request_too_large"
		}
		if e.Type != "" {
			typ = e.Type
		}
		v = map[string]any{"type": "error", "error": map[string]string{"type": typ, "message": msg}}
	} else {
		typ := "invalid_request_error"
		if status >= 500 {
			typ = "server_error"
		}
		if e.Type != "" {
			typ = e.Type
		}
		var code any
		if e.Code != "" {
			code = e.Code
		}
		v = map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": code}}
	}
	b, _ := json.Marshal(v)
	return b
}
