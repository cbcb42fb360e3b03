package llmtest

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
)

// NewOpenAI starts a fake OpenAI Chat Completions API serving POST
// /v1/chat/completions (SSE when the body has "stream":true, a
// chat.completion object otherwise) and GET /v1/models[/{id}], each also
// without the /v1 prefix. The Responses API (/v1/responses) is not served.
func NewOpenAI(turns ...Turn) *Server {
	return newServer(openaiAPI{fingerprint: randomHex("fp_", 10)}, turnSteps(turns))
}

type openaiAPI struct {
	fingerprint string // one per server, like one deployment
}

func (openaiAPI) name() string { return "openai" }

func (openaiAPI) baseURL(root string) string { return root + "/v1" }

func (openaiAPI) defaultModels() []string {
	return []string{"gpt-4o", "gpt-4o-mini", "gpt-4.1"}
}

func (openaiAPI) route(method, path string) (endpoint, string) {
	path = strings.TrimPrefix(path, "/v1")
	switch {
	case method == http.MethodPost && path == "/chat/completions":
		return epChat, ""
	case method == http.MethodGet && path == "/models":
		return epModels, ""
	case method == http.MethodGet && strings.HasPrefix(path, "/models/"):
		return epModels, strings.TrimPrefix(path, "/models/")
	}
	return epUnknown, ""
}

func (openaiAPI) authorized(h http.Header, key string) (bool, string) {
	presented := bearer(h)
	return presented == key, presented
}

func (o openaiAPI) writeAuthError(w http.ResponseWriter, presented string) {
	if presented == "" {
		o.writeError(w, ErrorReply{
			Status:  http.StatusUnauthorized,
			Type:    "invalid_request_error",
			Message: "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
		})
		return
	}
	masked := presented
	if len(masked) > 8 {
		masked = masked[:4] + strings.Repeat("*", len(masked)-8) + masked[len(masked)-4:]
	}
	o.writeError(w, ErrorReply{
		Status:  http.StatusUnauthorized,
		Type:    "invalid_request_error",
		Code:    "invalid_api_key",
		Message: fmt.Sprintf("Incorrect API key provided: %s. You can find your API key at https://platform.openai.com/account/api-keys.", masked),
	})
}

var openaiErrorTypes = map[int][2]string{ // status: type, code
	400: {"invalid_request_error", ""},
	401: {"invalid_request_error", "invalid_api_key"},
	403: {"invalid_request_error", "unsupported_country_region_territory"},
	404: {"invalid_request_error", "model_not_found"},
	429: {"requests", "rate_limit_exceeded"},
	500: {"server_error", ""},
	503: {"server_error", ""},
}

func (openaiAPI) writeError(w http.ResponseWriter, e ErrorReply) {
	status := statusOr500(e.Status)
	def, ok := openaiErrorTypes[status]
	if !ok {
		def = [2]string{"server_error", ""}
	}
	typ, code := e.Type, e.Code
	if typ == "" {
		typ = def[0]
		if code == "" {
			code = def[1]
		}
	}
	var codeVal any
	if code != "" {
		codeVal = code
	}
	writeJSON(w, status, http.Header{"X-Request-Id": {randomHex("req_", 32)}}, e.Header, obj{
		{"error", obj{{"message", e.Message}, {"type", typ}, {"param", nil}, {"code", codeVal}}},
	})
}

func (openaiAPI) writeModels(w http.ResponseWriter, ids []string, one string) {
	model := func(id string) obj {
		return obj{{"id", id}, {"object", "model"}, {"created", 1715367049}, {"owned_by", "system"}}
	}
	if one != "" {
		for _, id := range ids {
			if id == one {
				writeJSON(w, http.StatusOK, nil, nil, model(id))
				return
			}
		}
		openaiAPI{}.writeError(w, ErrorReply{
			Status:  http.StatusNotFound,
			Message: fmt.Sprintf("The model '%s' does not exist", one),
		})
		return
	}
	data := make([]any, len(ids))
	for i, id := range ids {
		data[i] = model(id)
	}
	writeJSON(w, http.StatusOK, nil, nil, obj{{"object", "list"}, {"data", data}})
}

// openaiTurn is a Turn with its ids and counts settled.
type openaiTurn struct {
	Turn
	id, model, fingerprint string
	created                int64
	in, out                int64
	tools                  []ToolCall
}

func (o openaiAPI) prepare(req turnRequest, t Turn) openaiTurn {
	ot := openaiTurn{
		Turn:        t,
		id:          randomID("chatcmpl-", 29),
		model:       req.model("gpt-4o"),
		fingerprint: o.fingerprint,
		created:     req.timeNow.Unix(),
	}
	ot.in, ot.out = usage(t, req.size, false)
	for _, tc := range t.ToolCalls {
		if tc.ID == "" {
			tc.ID = randomID("call_", 24)
		}
		tc.Input = toolInput(tc)
		ot.tools = append(ot.tools, tc)
	}
	if ot.StopReason == "" {
		ot.StopReason = "stop"
		if len(ot.tools) > 0 {
			ot.StopReason = "tool_calls"
		}
	}
	return ot
}

// usage is prompt_tokens including the cached part, as OpenAI counts.
func (t openaiTurn) usage() obj {
	return obj{
		{"prompt_tokens", t.in + t.CachedInputTokens},
		{"completion_tokens", t.out},
		{"total_tokens", t.in + t.CachedInputTokens + t.out},
		{"prompt_tokens_details", obj{{"cached_tokens", t.CachedInputTokens}, {"audio_tokens", 0}}},
		{"completion_tokens_details", obj{
			{"reasoning_tokens", 0}, {"audio_tokens", 0},
			{"accepted_prediction_tokens", 0}, {"rejected_prediction_tokens", 0},
		}},
	}
}

func (o openaiAPI) writeTurn(w http.ResponseWriter, r *http.Request, req turnRequest, t Turn) {
	ot := o.prepare(req, t)
	if !req.stream() {
		o.writeCompletion(w, r, req, ot)
		return
	}
	opts, _ := req.json["stream_options"].(map[string]any)
	includeUsage, _ := opts["include_usage"].(bool)
	obfuscate := true // on unless stream_options.include_obfuscation is false
	if v, ok := opts["include_obfuscation"].(bool); ok {
		obfuscate = v
	}

	w.Header().Set("X-Request-Id", randomHex("req_", 32))
	s := newSSE(w, r, req.stop, &ot.Turn)
	chunk := func(choices []any, usage any) {
		c := obj{
			{"id", ot.id},
			{"object", "chat.completion.chunk"},
			{"created", ot.created},
			{"model", ot.model},
			{"service_tier", "default"},
			{"system_fingerprint", ot.fingerprint},
			{"choices", choices},
		}
		// Usage is null on every chunk but the last, and absent altogether
		// unless the request asked for it.
		if includeUsage {
			c = append(c, field{"usage", usage})
		}
		if obfuscate {
			c = append(c, field{"obfuscation", randomID("", rand.IntN(16))})
		}
		s.send("", marshal(c))
	}
	choice := func(delta obj, finish any) []any {
		return []any{obj{{"index", 0}, {"delta", delta}, {"logprobs", nil}, {"finish_reason", finish}}}
	}
	toolStart := func(i int) obj {
		tc := ot.tools[i]
		return obj{{"tool_calls", []any{obj{
			{"index", i}, {"id", tc.ID}, {"type", "function"},
			{"function", obj{{"name", tc.Name}, {"arguments", ""}}},
		}}}}
	}
	s.fail = func(message, typ string) {
		if typ == "" {
			typ = "server_error"
		}
		s.send("", marshal(obj{{"error", obj{{"message", message}, {"type", typ}, {"param", nil}, {"code", nil}}}}))
	}

	// Both first-chunk shapes occur in real tool-call streams: a lone call
	// rides in the role chunk, parallel calls follow a bare role chunk.
	firstTool := 0
	switch {
	case ot.Text != "" || len(ot.tools) == 0:
		chunk(choice(obj{{"role", "assistant"}, {"content", ""}, {"refusal", nil}}, nil), nil)
	case len(ot.tools) == 1:
		role := append(obj{{"role", "assistant"}, {"content", nil}}, toolStart(0)...)
		chunk(choice(append(role, field{"refusal", nil}), nil), nil)
		firstTool = 1
	default:
		chunk(choice(obj{{"role", "assistant"}, {"content", nil}}, nil), nil)
	}
	for _, c := range chunks(ot.Text, ot.ChunkSize) {
		if !s.delta(true, func() { chunk(choice(obj{{"content", c}}, nil), nil) }) {
			return
		}
	}
	for i, tc := range ot.tools {
		if i >= firstTool {
			chunk(choice(toolStart(i), nil), nil)
		}
		for _, f := range argFragments(tc.Input) {
			args := obj{{"tool_calls", []any{obj{{"index", i}, {"function", obj{{"arguments", f}}}}}}}
			if !s.delta(ot.Text == "", func() { chunk(choice(args, nil), nil) }) {
				return
			}
		}
	}
	if !s.checkpoint() {
		return
	}
	chunk(choice(obj{}, ot.StopReason), nil)
	if includeUsage {
		chunk([]any{}, ot.usage())
	}
	s.send("", []byte("[DONE]"))
}

// writeCompletion answers a non-streaming request with the whole completion.
func (o openaiAPI) writeCompletion(w http.ResponseWriter, r *http.Request, req turnRequest, ot openaiTurn) {
	if !waitGate(r, req.stop, ot.Gate) {
		return
	}
	if ot.Hangup {
		panic(http.ErrAbortHandler)
	}
	if ot.StreamError != "" {
		o.writeError(w, ErrorReply{Status: http.StatusInternalServerError, Type: ot.StreamErrorType, Message: ot.StreamError})
		return
	}
	msg := obj{{"role", "assistant"}, {"content", nil}}
	if ot.Text != "" {
		msg[1].val = ot.Text
	}
	if len(ot.tools) > 0 {
		calls := make([]any, len(ot.tools))
		for i, tc := range ot.tools {
			calls[i] = obj{{"id", tc.ID}, {"type", "function"}, {"function", obj{{"name", tc.Name}, {"arguments", tc.Input}}}}
		}
		msg = append(msg, field{"tool_calls", calls})
	}
	msg = append(msg, field{"refusal", nil}, field{"annotations", []any{}})
	writeJSON(w, http.StatusOK, http.Header{"X-Request-Id": {randomHex("req_", 32)}}, nil, obj{
		{"id", ot.id},
		{"object", "chat.completion"},
		{"created", ot.created},
		{"model", ot.model},
		{"choices", []any{obj{{"index", 0}, {"message", msg}, {"logprobs", nil}, {"finish_reason", ot.StopReason}}}},
		{"usage", ot.usage()},
		{"service_tier", "default"},
		{"system_fingerprint", ot.fingerprint},
	})
}

func randomHex(prefix string, n int) string {
	const hex = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = hex[rand.IntN(len(hex))]
	}
	return prefix + string(b)
}
