// Package llmtest runs fake LLM provider servers for tests: Anthropic's
// Messages API and OpenAI's Chat Completions API, streaming scripted turns
// in the same wire format as the real services (checked field for field
// against recorded real streams in testdata/recorded), or replaying a
// recorded cassette verbatim.
//
// Point a fantasy provider at Server.BaseURL:
//
//	s := llmtest.NewAnthropic(llmtest.Turn{Text: "hi"})
//	defer s.Close()
//	p, _ := anthropic.New(anthropic.WithAPIKey("k"), anthropic.WithBaseURL(s.BaseURL()))
package llmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// ToolCall is one tool call the model makes in a Turn.
type ToolCall struct {
	ID    string // generated in the provider's style ("toolu_…", "call_…") if empty
	Name  string
	Input string // raw JSON text, sent as-is (so it may be deliberately malformed); "{}" if empty
}

// ErrorReply makes the server answer with an HTTP error instead of a
// stream, in the provider's real error JSON shape.
type ErrorReply struct {
	Status  int    // default 500
	Type    string // provider error type; defaults per status (e.g. "rate_limit_error" / "requests" for 429)
	Message string
	Code    string      // OpenAI only: the "code" field (null if empty; defaults per status)
	Header  http.Header // extra response headers, e.g. "Retry-After-Ms"
}

// Turn is one scripted model response, consumed by one chat request.
type Turn struct {
	// Thinking is sent as an Anthropic thinking block (with a
	// signature_delta) before the text. OpenAI's chat completions API has no
	// reasoning stream, so it is ignored there.
	Thinking  string
	Signature string // Anthropic thinking signature; generated if empty

	Text      string // streamed as several deltas
	ToolCalls []ToolCall

	// Error answers the request with an HTTP error instead of a stream.
	Error *ErrorReply

	// StreamError fails the stream part-way (after the first text delta, or
	// the first delta of any kind when Text is empty), the way each API
	// reports in-band failures on a 200 stream: Anthropic sends an
	// `event: error` ({"type":"error","error":{...}}), OpenAI a
	// `data: {"error":{...}}` chunk; both then end the body without the
	// normal terminator.
	StreamError string
	// StreamErrorType is the error type in that event; default
	// "overloaded_error" (Anthropic) / "server_error" (OpenAI), which
	// fantasy classifies as transient.
	StreamErrorType string
	// Hangup drops the connection at the same point instead, without a
	// terminating chunk, like a proxy or load balancer cutting the stream:
	// the client sees an unexpected EOF.
	Hangup bool

	// StopReason overrides the derived stop reason, in the provider's own
	// vocabulary (Anthropic stop_reason "max_tokens", OpenAI finish_reason
	// "length", …). By default it is tool_use/tool_calls when there are
	// tool calls, else end_turn/stop.
	StopReason string

	// Usage reported. InputTokens excludes CachedInputTokens: Anthropic's
	// input_tokens is sent as is with cache_read_input_tokens, OpenAI's
	// prompt_tokens is InputTokens+CachedInputTokens with cached_tokens, so
	// fantasy.Usage.InputTokens and CacheReadTokens come out the same for
	// both. Zero means a plausible estimate from the request and reply size.
	InputTokens, OutputTokens int64
	CachedInputTokens         int64

	ChunkSize int           // runes per text/thinking delta; default cycles 3, 4, 5
	Delay     time.Duration // pause between deltas

	// Gate, if non-nil: after the first text delta (or the first delta of
	// any kind when Text is empty) the server flushes and waits until Gate
	// is closed, the client goes away, or the server closes, before sending
	// the rest. Tests use it to observe a half-finished stream or to cancel
	// mid-turn deterministically.
	Gate <-chan struct{}
}

// Request is one HTTP request the server received.
type Request struct {
	Method, Path string
	Header       http.Header
	Body         []byte
	JSON         map[string]any // Body decoded, nil if it is not a JSON object
}

// Server is a fake provider endpoint. It is safe for concurrent use.
type Server struct {
	ts      *httptest.Server
	dialect dialect
	done    chan struct{} // closed by Close, so gated or delayed handlers let go
	once    sync.Once

	mu         sync.Mutex
	queue      []step
	requests   []Request
	models     []string
	key        string
	unscripted []string
	also       []*http.Server // ServeOn's
}

// step is one queued reply: a scripted turn, or a cassette response that
// is written back byte for byte.
type step struct {
	turn   Turn
	replay *recordedReply
}

// dialect is what differs between the providers.
type dialect interface {
	name() string
	// route classifies a request; id is the model id for a single-model GET.
	route(method, path string) (ep endpoint, id string)
	baseURL(root string) string
	authorized(h http.Header, key string) (ok bool, presented string)
	writeAuthError(w http.ResponseWriter, presented string)
	writeError(w http.ResponseWriter, e ErrorReply)
	writeModels(w http.ResponseWriter, ids []string, one string)
	writeTurn(w http.ResponseWriter, r *http.Request, req turnRequest, t Turn)
	defaultModels() []string
}

type endpoint int

const (
	epUnknown endpoint = iota
	epChat
	epModels
)

// turnRequest is what a dialect needs from the chat request.
type turnRequest struct {
	json    map[string]any
	size    int           // body length, for the default input-token estimate
	stop    chan struct{} // the server's done channel
	timeNow time.Time
}

func (r turnRequest) model(fallback string) string {
	if m, ok := r.json["model"].(string); ok && m != "" {
		return m
	}
	return fallback
}

func (r turnRequest) stream() bool {
	b, _ := r.json["stream"].(bool)
	return b
}

func newServer(d dialect, steps []step) *Server {
	s := &Server{
		dialect: d,
		done:    make(chan struct{}),
		queue:   steps,
		models:  d.defaultModels(),
	}
	s.ts = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// URL is the server's root, http://127.0.0.1:port.
func (s *Server) URL() string { return s.ts.URL }

// BaseURL is what to pass as the provider base URL in fantasy
// (anthropic.WithBaseURL / openai.WithBaseURL). The Anthropic SDK appends
// "v1/messages" to its base URL, so that is the root URL; the OpenAI SDK
// appends "chat/completions" and its default base is
// "https://api.openai.com/v1", so that is root+"/v1" (root alone works
// too: /chat/completions and /models are served as well).
func (s *Server) BaseURL() string { return s.dialect.baseURL(s.ts.URL) }

// Enqueue appends scripted turns; each chat request consumes one.
func (s *Server) Enqueue(turns ...Turn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range turns {
		s.queue = append(s.queue, step{turn: t})
	}
}

// Pending reports how many queued replies are not consumed yet.
func (s *Server) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// SetModels replaces the ids the models endpoint lists.
func (s *Server) SetModels(ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.models = slices.Clone(ids)
}

// RequireKey makes requests without exactly this API key (Anthropic
// x-api-key or bearer token, OpenAI bearer token) fail with the provider's
// real 401 reply. Unauthorized requests do not consume a turn.
func (s *Server) RequireKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.key = key
}

// Requests returns a copy of every request received so far, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	for i, r := range s.requests {
		out[i] = Request{
			Method: r.Method,
			Path:   r.Path,
			Header: r.Header.Clone(),
			Body:   slices.Clone(r.Body),
		}
		// Decoding again gives the caller a map nobody else holds.
		out[i].JSON = decodeObject(r.Body)
	}
	return out
}

// Attach ties the server to a test: it is closed at cleanup, and the test
// fails if any chat request found no scripted turn left. The 500 such a
// request gets is retryable, so through a fantasy.Agent with default
// retries it only surfaces after 5+10+20s of backoff, as a RetryError;
// Attach names the stray request instead.
func (s *Server) Attach(t testing.TB) *Server {
	t.Helper()
	t.Cleanup(func() {
		s.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, u := range s.unscripted {
			t.Errorf("llmtest: %s request with no scripted turn left: %s", s.dialect.name(), u)
		}
	})
	return s
}

// Close shuts the server down. Handlers still waiting on a Gate or Delay
// give up, so Close does not hang on a test that forgot to open a gate.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.done)
		s.ts.Close()
		s.mu.Lock()
		also := s.also
		s.mu.Unlock()
		for _, srv := range also {
			srv.Close()
		}
	})
}

// ServeOn serves the same fake, with the same script, on ln as well (a
// listener in a network namespace of the test's, where the server under
// test runs) and returns the base URL to reach it there.
func (s *Server) ServeOn(ln net.Listener) string {
	srv := &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	s.also = append(s.also, srv)
	s.mu.Unlock()
	go srv.Serve(ln)
	return s.dialect.baseURL("http://" + ln.Addr().String())
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.requests = append(s.requests, Request{
		Method: r.Method,
		Path:   r.URL.Path,
		Header: r.Header.Clone(),
		Body:   body,
	})
	key := s.key
	models := slices.Clone(s.models)
	s.mu.Unlock()

	ep, id := s.dialect.route(r.Method, r.URL.Path)
	if ep == epUnknown {
		s.dialect.writeError(w, ErrorReply{
			Status:  http.StatusNotFound,
			Message: fmt.Sprintf("llmtest: %s fake does not serve %s %s", s.dialect.name(), r.Method, r.URL.Path),
		})
		return
	}
	if key != "" {
		if ok, presented := s.dialect.authorized(r.Header, key); !ok {
			s.dialect.writeAuthError(w, presented)
			return
		}
	}
	if ep == epModels {
		s.dialect.writeModels(w, models, id)
		return
	}

	req := turnRequest{json: decodeObject(body), size: len(body), stop: s.done, timeNow: time.Now()}
	if req.json == nil {
		s.dialect.writeError(w, ErrorReply{Status: http.StatusBadRequest, Message: "llmtest: request body is not a JSON object"})
		return
	}
	st, ok := s.next()
	if !ok {
		s.mu.Lock()
		s.unscripted = append(s.unscripted, fmt.Sprintf("%s %s %.200s", r.Method, r.URL.Path, body))
		s.mu.Unlock()
		s.dialect.writeError(w, ErrorReply{Status: http.StatusInternalServerError, Message: "llmtest: no scripted turn left"})
		return
	}
	switch {
	case st.replay != nil:
		st.replay.write(w, s.done, r)
	case st.turn.Error != nil:
		s.dialect.writeError(w, *st.turn.Error)
	default:
		s.dialect.writeTurn(w, r, req, st.turn)
	}
}

func (s *Server) next() (step, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return step{}, false
	}
	st := s.queue[0]
	s.queue = s.queue[1:]
	return st, true
}

func decodeObject(body []byte) map[string]any {
	var m map[string]any
	if json.Unmarshal(body, &m) != nil {
		return nil
	}
	return m
}

// bearer extracts the token of an "Authorization: Bearer …" header.
func bearer(h http.Header) string {
	v := h.Get("Authorization")
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return v[7:]
	}
	return ""
}

func statusOr500(status int) int {
	if status == 0 {
		return http.StatusInternalServerError
	}
	return status
}

// writeJSON writes a JSON reply with the fake's default headers, then the
// script's, which win.
func writeJSON(w http.ResponseWriter, status int, defaults, extra http.Header, body obj) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	for k, vs := range defaults {
		h[http.CanonicalHeaderKey(k)] = vs
	}
	for k, vs := range extra {
		h[http.CanonicalHeaderKey(k)] = vs
	}
	w.WriteHeader(status)
	_, _ = w.Write(marshal(body))
}
