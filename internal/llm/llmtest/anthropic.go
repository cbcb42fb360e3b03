package llmtest

import (
	"encoding/base64"
	"math/rand/v2"
	"net/http"
	"strings"
)

// NewAnthropic starts a fake Anthropic Messages API serving POST
// /v1/messages (SSE when the body has "stream":true, a JSON message
// otherwise) and GET /v1/models[/{id}].
func NewAnthropic(turns ...Turn) *Server {
	return newServer(anthropicAPI{}, turnSteps(turns))
}

func turnSteps(turns []Turn) []step {
	steps := make([]step, len(turns))
	for i, t := range turns {
		steps[i] = step{turn: t}
	}
	return steps
}

type anthropicAPI struct{}

func (anthropicAPI) name() string { return "anthropic" }

func (anthropicAPI) baseURL(root string) string { return root }

func (anthropicAPI) defaultModels() []string {
	return []string{"claude-sonnet-4-20250514", "claude-opus-4-1-20250805", "claude-3-5-haiku-20241022"}
}

func (anthropicAPI) route(method, path string) (endpoint, string) {
	switch {
	case method == http.MethodPost && path == "/v1/messages":
		return epChat, ""
	case method == http.MethodGet && path == "/v1/models":
		return epModels, ""
	case method == http.MethodGet && strings.HasPrefix(path, "/v1/models/"):
		return epModels, strings.TrimPrefix(path, "/v1/models/")
	}
	return epUnknown, ""
}

// authorized accepts the API key (x-api-key) or an OAuth-style bearer
// token, the two credentials the SDK can send.
func (anthropicAPI) authorized(h http.Header, key string) (bool, string) {
	presented := h.Get("X-Api-Key")
	if presented == "" {
		presented = bearer(h)
	}
	return presented == key, presented
}

func (a anthropicAPI) writeAuthError(w http.ResponseWriter, presented string) {
	msg := "invalid x-api-key"
	if presented == "" {
		msg = "x-api-key header is required"
	}
	a.writeError(w, ErrorReply{Status: http.StatusUnauthorized, Type: "authentication_error", Message: msg})
}

var anthropicErrorTypes = map[int]string{
	400: "invalid_request_error",
	401: "authentication_error",
	402: "billing_error",
	403: "permission_error",
	404: "not_found_error",
	413: "request_too_large",
	429: "rate_limit_error",
	500: "api_error",
	504: "timeout_error",
	529: "overloaded_error",
}

func (anthropicAPI) writeError(w http.ResponseWriter, e ErrorReply) {
	status := statusOr500(e.Status)
	typ := e.Type
	if typ == "" {
		typ = anthropicErrorTypes[status]
	}
	if typ == "" {
		typ = "api_error"
	}
	reqID := randomID("req_011C", 20)
	writeJSON(w, status, http.Header{"Request-Id": {reqID}}, e.Header, obj{
		{"type", "error"},
		{"error", obj{{"type", typ}, {"message", e.Message}}},
		{"request_id", reqID},
	})
}

func (anthropicAPI) writeModels(w http.ResponseWriter, ids []string, one string) {
	model := func(id string) obj {
		return obj{
			{"type", "model"},
			{"id", id},
			{"display_name", id},
			{"created_at", "2025-05-14T00:00:00Z"},
		}
	}
	if one != "" {
		for _, id := range ids {
			if id == one {
				writeJSON(w, http.StatusOK, nil, nil, model(id))
				return
			}
		}
		anthropicAPI{}.writeError(w, ErrorReply{Status: http.StatusNotFound, Message: "model: " + one})
		return
	}
	data := make([]any, len(ids))
	for i, id := range ids {
		data[i] = model(id)
	}
	var first, last any
	if len(ids) > 0 {
		first, last = ids[0], ids[len(ids)-1]
	}
	writeJSON(w, http.StatusOK, nil, nil, obj{
		{"data", data},
		{"has_more", false},
		{"first_id", first},
		{"last_id", last},
	})
}

// anthropicTurn is a Turn with its ids and counts settled.
type anthropicTurn struct {
	Turn
	model, msgID string
	in, out      int64
	tools        []ToolCall
}

func (anthropicAPI) prepare(req turnRequest, t Turn) anthropicTurn {
	at := anthropicTurn{Turn: t, model: req.model("claude-sonnet-4-20250514"), msgID: randomID("msg_01", 22)}
	at.in, at.out = usage(t, req.size, true)
	for _, tc := range t.ToolCalls {
		if tc.ID == "" {
			tc.ID = randomID("toolu_01", 22)
		}
		tc.Input = toolInput(tc)
		at.tools = append(at.tools, tc)
	}
	if at.Thinking != "" && at.Signature == "" {
		sig := make([]byte, 240)
		for i := range sig {
			sig[i] = byte(rand.IntN(256))
		}
		at.Signature = base64.StdEncoding.EncodeToString(sig)
	}
	if at.StopReason == "" {
		at.StopReason = "end_turn"
		if len(at.tools) > 0 {
			at.StopReason = "tool_use"
		}
	}
	return at
}

func (t anthropicTurn) usage(outputTokens int64, start bool) obj {
	u := obj{
		{"input_tokens", t.in},
		{"cache_creation_input_tokens", 0},
		{"cache_read_input_tokens", t.CachedInputTokens},
	}
	if start {
		u = append(u, field{"cache_creation", obj{{"ephemeral_5m_input_tokens", 0}, {"ephemeral_1h_input_tokens", 0}}})
	}
	u = append(u, field{"output_tokens", outputTokens})
	if start {
		u = append(u, field{"service_tier", "standard"}, field{"inference_geo", "not_available"})
	}
	return u
}

func (t anthropicTurn) message(content []any, stopReason any, usage obj) obj {
	return obj{
		{"model", t.model},
		{"id", t.msgID},
		{"type", "message"},
		{"role", "assistant"},
		{"content", content},
		{"stop_reason", stopReason},
		{"stop_sequence", nil},
		{"usage", usage},
	}
}

func (a anthropicAPI) writeTurn(w http.ResponseWriter, r *http.Request, req turnRequest, t Turn) {
	at := a.prepare(req, t)
	if !req.stream() {
		a.writeMessage(w, r, req, at)
		return
	}
	w.Header().Set("Request-Id", randomID("req_011C", 20))
	s := newSSE(w, r, req.stop, &at.Turn)
	// Real streams pad each data line with up to ~16 spaces.
	event := func(name string, data obj) {
		s.send(name, append(marshal(data), strings.Repeat(" ", rand.IntN(16))...))
	}
	s.fail = func(message, typ string) {
		if typ == "" {
			typ = "overloaded_error"
		}
		event("error", obj{{"type", "error"}, {"error", obj{{"type", typ}, {"message", message}}}})
	}

	event("message_start", obj{
		{"type", "message_start"},
		{"message", at.message([]any{}, nil, at.usage(min(at.out, 4), true))},
	})
	index, pinged := 0, false
	start := func(block obj) {
		event("content_block_start", obj{{"type", "content_block_start"}, {"index", index}, {"content_block", block}})
		if !pinged {
			// The real API pings once, right after the first block opens.
			s.send("ping", []byte(`{"type": "ping"}`))
			pinged = true
		}
	}
	delta := func(d obj) {
		event("content_block_delta", obj{{"type", "content_block_delta"}, {"index", index}, {"delta", d}})
	}
	stop := func() {
		event("content_block_stop", obj{{"type", "content_block_stop"}, {"index", index}})
		index++
	}

	if at.Thinking != "" {
		start(obj{{"type", "thinking"}, {"thinking", ""}, {"signature", ""}})
		for _, c := range chunks(at.Thinking, at.ChunkSize) {
			if !s.delta(at.Text == "", func() { delta(obj{{"type", "thinking_delta"}, {"thinking", c}}) }) {
				return
			}
		}
		// The thinking always ends with an empty delta before the signature.
		delta(obj{{"type", "thinking_delta"}, {"thinking", ""}})
		delta(obj{{"type", "signature_delta"}, {"signature", at.Signature}})
		stop()
	}
	if at.Text != "" {
		start(obj{{"type", "text"}, {"text", ""}})
		for _, c := range chunks(at.Text, at.ChunkSize) {
			if !s.delta(true, func() { delta(obj{{"type", "text_delta"}, {"text", c}}) }) {
				return
			}
		}
		stop()
	}
	for _, tc := range at.tools {
		start(obj{
			{"type", "tool_use"}, {"id", tc.ID}, {"name", tc.Name},
			{"input", obj{}}, {"caller", obj{{"type", "direct"}}},
		})
		// Every tool_use block opens with an empty partial_json.
		delta(obj{{"type", "input_json_delta"}, {"partial_json", ""}})
		for _, f := range argFragments(tc.Input) {
			if !s.delta(at.Text == "", func() { delta(obj{{"type", "input_json_delta"}, {"partial_json", f}}) }) {
				return
			}
		}
		stop()
	}
	if !pinged {
		s.send("ping", []byte(`{"type": "ping"}`))
	}
	if !s.checkpoint() {
		return
	}
	event("message_delta", obj{
		{"type", "message_delta"},
		{"delta", obj{{"stop_reason", at.StopReason}, {"stop_sequence", nil}}},
		{"usage", at.usage(at.out, false)},
	})
	event("message_stop", obj{{"type", "message_stop"}})
}

// writeMessage answers a non-streaming request with the whole message.
func (a anthropicAPI) writeMessage(w http.ResponseWriter, r *http.Request, req turnRequest, at anthropicTurn) {
	if !waitGate(r, req.stop, at.Gate) {
		return
	}
	if at.Hangup {
		panic(http.ErrAbortHandler)
	}
	if at.StreamError != "" {
		// Without a stream to break, the failure is an HTTP error.
		e := ErrorReply{Status: 529, Type: at.StreamErrorType, Message: at.StreamError}
		for status, typ := range anthropicErrorTypes {
			if typ == e.Type {
				e.Status = status
			}
		}
		a.writeError(w, e)
		return
	}
	content := []any{}
	if at.Thinking != "" {
		content = append(content, obj{{"type", "thinking"}, {"thinking", at.Thinking}, {"signature", at.Signature}})
	}
	if at.Text != "" {
		content = append(content, obj{{"type", "text"}, {"text", at.Text}})
	}
	for _, tc := range at.tools {
		content = append(content, obj{
			{"type", "tool_use"}, {"id", tc.ID}, {"name", tc.Name},
			{"input", rawJSON(tc.Input)}, {"caller", obj{{"type", "direct"}}},
		})
	}
	writeJSON(w, http.StatusOK, http.Header{"Request-Id": {randomID("req_011C", 20)}}, nil,
		at.message(content, at.StopReason, at.usage(at.out, true)))
}
