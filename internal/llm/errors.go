package llm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/execlaw/execlaw/internal/egress"
)

// An endpoint's error answer reaches users as a message (a model list's
// warning, an error_event, the credential proxy's answer to an agent). The
// endpoint is one the user named, so its answer may be anything: a page of
// a service on the host's network, say. Only the message of a JSON error is
// shown, bounded and on one line; of any other answer only the status.

// MaxErrorMessage bounds a message taken from an endpoint's error answer.
const MaxErrorMessage = 500

// maxErrorAnswer is how much of an error answer is read to find its message.
const maxErrorAnswer = 64 << 10

// NoErrorMessage stands in for an error answer without a JSON message.
const NoErrorMessage = "no JSON error message in the answer (body not shown)"

// APIError is what an error answer says, when it is JSON in one of the
// shapes providers use: {"error":{"message","type","code"}} (OpenAI,
// Anthropic, llama.cpp), {"error":"..."} (Ollama, LM Studio), or
// {"message","type","code"} (vLLM). Every field is cleaned: Message by
// CleanMessage, Type and Code reduced to identifiers.
type APIError struct {
	Message string
	Type    string
	Code    string
}

// ParseError reads an error answer's body. ok is false when it is not JSON
// in a known shape with a message.
func ParseError(body []byte) (e APIError, ok bool) {
	var top struct {
		Error   json.RawMessage `json:"error"`
		Message any             `json:"message"`
		Type    any             `json:"type"`
		Code    any             `json:"code"`
	}
	if json.Unmarshal(bytes.TrimSpace(body), &top) != nil {
		return APIError{}, false
	}
	var inner struct {
		Message any `json:"message"`
		Type    any `json:"type"`
		Code    any `json:"code"`
	}
	var s string
	switch {
	case len(top.Error) > 0 && json.Unmarshal(top.Error, &inner) == nil && str(inner.Message) != "":
		e = APIError{Message: str(inner.Message), Type: ident(inner.Type), Code: ident(inner.Code)}
	case len(top.Error) > 0 && json.Unmarshal(top.Error, &s) == nil && s != "":
		e = APIError{Message: s, Type: ident(top.Type), Code: ident(top.Code)}
	default:
		e = APIError{Message: str(top.Message), Type: ident(top.Type), Code: ident(top.Code)}
	}
	e.Message = CleanMessage(e.Message)
	return e, e.Message != ""
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// ident keeps a type or code that is a short identifier ("rate_limit_error",
// "context_length_exceeded", 404).
func ident(v any) string {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case float64:
		if x != float64(int64(x)) {
			return ""
		}
		s = strconv.FormatInt(int64(x), 10)
	default:
		return ""
	}
	if len(s) > 64 {
		return ""
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("_-.:", c)) {
			return ""
		}
	}
	return s
}

// CleanMessage makes text from an endpoint fit for a message: valid UTF-8,
// no control characters, whitespace runs as one space, at most
// MaxErrorMessage bytes (cut at a character, with an ellipsis).
func CleanMessage(s string) string {
	return clip(s, MaxErrorMessage)
}

func clip(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// ErrorAnswerMessage is the message to show for an error answer: its JSON
// message, or NoErrorMessage.
func ErrorAnswerMessage(body []byte) string {
	if e, ok := ParseError(body); ok {
		return e.Message
	}
	return NoErrorMessage
}

// errorGuard is the last step of every provider response: an error answer
// (4xx, 5xx) is replaced by a JSON error carrying only its cleaned message,
// type and code, or NoErrorMessage, in the shape both SDKs read
// ({"type":"error","error":{...}}). So neither the SDK's error text, which
// quotes the body, nor anything built from it can carry what the endpoint
// sent besides that message. Status and headers (Retry-After...) are kept.
type errorGuard struct{ next http.RoundTripper }

func (g errorGuard) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := g.next.RoundTrip(r)
	if err != nil || resp.StatusCode < 400 {
		return resp, err
	}
	raw, rerr := io.ReadAll(io.LimitReader(resp.Body, maxErrorAnswer+1))
	resp.Body.Close()
	e, ok := APIError{}, false
	if rerr == nil && len(raw) <= maxErrorAnswer {
		e, ok = ParseError(raw)
	}
	if !ok {
		e = APIError{Message: NoErrorMessage}
	}
	inner := map[string]string{"message": e.Message}
	if e.Type != "" {
		inner["type"] = e.Type
	}
	if e.Code != "" {
		inner["code"] = e.Code
	}
	body, _ := json.Marshal(map[string]any{"type": "error", "error": inner})
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Uncompressed = true
	resp.Header = resp.Header.Clone()
	resp.Header.Del("Content-Encoding")
	resp.Header.Set("Content-Type", "application/json")
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return resp, nil
}

// Policy reports the outbound policy the wrapped transport dials through.
func (g errorGuard) Policy() *egress.Policy { return egress.PolicyOf(g.next) }

// CloseIdleConnections passes on to the wrapped transport.
func (g errorGuard) CloseIdleConnections() {
	if c, ok := g.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// statusText is an endpoint's status for a message: the code and Go's text
// for it, never the endpoint's own reason phrase.
func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return fmt.Sprintf("HTTP %d %s", code, t)
	}
	return fmt.Sprintf("HTTP %d", code)
}
