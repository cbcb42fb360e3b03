// Package nullclawtest is a stand-in for nullclaw's gateway: the /a2a
// JSON-RPC endpoint of github.com/nullclaw/nullclaw (src/gateway.zig,
// src/a2a.zig), byte for byte where it matters, with scripted turns.
//
// What it reproduces:
//   - POST /a2a with "Authorization: Bearer <token>" (401 {"error":"unauthorized"}
//     otherwise), 405 for other methods, 413 over 64 KiB, 400 "empty body";
//   - message/stream: an SSE response written straight to the connection
//     (HTTP/1.1 200, Content-Type text/event-stream, no length, closed at the
//     end), events as "data: <json>\n\n": first the Task in state submitted,
//     then the script's artifact updates (append, never lastChunk), tool
//     hints (working status "Calling tool: NAME"), and a final status update,
//     or a JSON-RPC error -32603 "Agent processing failed";
//   - tasks/cancel: canceled Task, -32001 not found, -32002 terminal; a turn
//     that was cancelled ends with a final "canceled" update however it ends;
//   - tasks/get, tasks/resubscribe, GET /health, GET /.well-known/agent-card.json.
//
// Every request is recorded, and anything a well-behaved client should not
// send (beyond what nullclaw itself rejects) is recorded as a violation.
//
// This is the one implementation of the wire format: New serves it in the
// test process with scripted turns, and the stand-in executable
// (./standin) serves the same Server on nullclaw's command line and config,
// with turns driven by real model calls.
//
// RawServer (raw.go) is the other kind of gateway: fixed raw bytes, for the
// broken and hostile answers that Server never gives.
package nullclawtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// MaxBodySize is nullclaw's default request body limit (gateway.MAX_BODY_SIZE).
const MaxBodySize = 65536

// Request is one request the stand-in received.
type Request struct {
	HTTPMethod  string
	Path        string
	Auth        string // the Authorization header
	ContentType string
	Body        []byte
	// RPCMethod, RPCID (raw JSON) and Params, when the body was JSON-RPC.
	RPCMethod string
	RPCID     json.RawMessage
	Params    json.RawMessage
}

// Server is the stand-in gateway. Set its exported fields before it serves.
type Server struct {
	// URL is the gateway's base URL (the client appends /a2a); set by New.
	URL   string
	Token string
	// Script runs the turns no Enqueue'd script is waiting for. The default
	// streams "ok" and completes.
	Script func(*Turn)
	// Authorize, when set, decides whether an /a2a request's Authorization
	// header is accepted, instead of comparing it with "Bearer "+Token.
	Authorize func(authorization string) bool
	// A2ADisabled answers /a2a with 404 {"error":"a2a not enabled"}, as
	// nullclaw does without a2a.enabled in its config.
	A2ADisabled bool
	// OnViolation, when set, is told each violation as it is recorded.
	OnViolation func(string)

	ts       *httptest.Server
	stopped  chan struct{}
	stopOnce sync.Once

	mu         sync.Mutex
	next       int
	tasks      map[string]*task
	queue      []func(*Turn)
	requests   []Request
	violations []string
	turns      []*Turn
}

type task struct {
	id, contextID string
	state         string
	updated       time.Time
	userText      string
	agentText     string
	canceled      chan struct{}
}

// New starts a stand-in on a loopback port that requires token (none when
// empty, as a gateway with pairing off), and closes it when the test ends.
func New(t testing.TB, token string) *Server {
	s := NewHandler(token)
	s.ts = httptest.NewServer(s)
	s.URL = s.ts.URL
	t.Cleanup(s.Close)
	return s
}

// NewHandler returns a stand-in that serves wherever its ServeHTTP is
// mounted (the stand-in executable puts it on nullclaw's host and port).
func NewHandler(token string) *Server {
	return &Server{Token: token, tasks: map[string]*task{}, stopped: make(chan struct{})}
}

// ServeHTTP answers one request as nullclaw's gateway does. message/stream
// and tasks/resubscribe take over the connection (HTTP/1 only).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.serve(w, r) }

// Close stops the stand-in; running scripts see Stopped.
func (s *Server) Close() {
	s.stopOnce.Do(func() { close(s.stopped) })
	if s.ts != nil {
		s.ts.Close()
	}
}

func (s *Server) authorized(auth string) bool {
	if s.Authorize != nil {
		return s.Authorize(auth)
	}
	return s.Token == "" || auth == "Bearer "+s.Token
}

// Enqueue queues the script of the next message/stream turn.
func (s *Server) Enqueue(script func(*Turn)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, script)
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Violations returns what clients sent that they should not have.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

// Turns returns the message/stream turns run so far.
func (s *Server) Turns() []*Turn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Turn(nil), s.turns...)
}

// TaskState returns the state of a task the stand-in knows.
func (s *Server) TaskState(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tasks[id]
	if !ok {
		return "", false
	}
	return t.state, true
}

func (s *Server) record(r Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r)
}

func (s *Server) violate(format string, args ...any) {
	v := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.violations = append(s.violations, v)
	s.mu.Unlock()
	if s.OnViolation != nil {
		s.OnViolation(v)
	}
}

// esc escapes like nullclaw's jsonEscapeInto: quote, backslash, \n \r \t \b
// \f, other control bytes as \u00XX; everything else (non-ASCII, <, >, &)
// as is.
func esc(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case 0x08:
			b.WriteString(`\b`)
		case 0x0c:
			b.WriteString(`\f`)
		default:
			if c < 0x20 {
				fmt.Fprintf(&b, `\u%04x`, c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	return b.String()
}

func timestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

func rpcResult(id, result string) string {
	return `{"jsonrpc":"2.0","id":` + id + `,"result":` + result + `}`
}

func rpcError(id string, code int, msg string) string {
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"error":{"code":%d,"message":"%s"}}`, id, code, esc(msg))
}

// taskJSON is buildTaskJson: artifacts and history only once there is agent
// text.
func taskJSON(t *task, history int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"id":"%s","kind":"task","contextId":"%s","status":{"state":"%s","timestamp":"%s"},"metadata":{}`,
		esc(t.id), esc(t.contextID), t.state, timestamp(t.updated))
	if t.agentText != "" {
		fmt.Fprintf(&b, `,"artifacts":[{"artifactId":"artifact-%s","parts":[{"kind":"text","text":"%s"}]}]`, esc(t.id), esc(t.agentText))
		msg := func(role, prefix, text string) string {
			return fmt.Sprintf(`{"kind":"message","role":"%s","messageId":"msg-%s-%s","taskId":"%s","contextId":"%s","parts":[{"kind":"text","text":"%s"}]}`,
				role, prefix, esc(t.id), esc(t.id), esc(t.contextID), esc(text))
		}
		if history >= 2 {
			b.WriteString(`,"history":[` + msg("user", "user", t.userText) + `,` + msg("agent", "agent", t.agentText) + `]`)
		} else if history == 1 {
			b.WriteString(`,"history":[` + msg("agent", "agent", t.agentText) + `]`)
		}
	}
	b.WriteByte('}')
	return b.String()
}

func statusUpdate(id string, t *task, state, message string, final bool) string {
	msg := ""
	if message != "" {
		msg = `,"message":{"role":"agent","parts":[{"kind":"text","text":"` + esc(message) + `"}]}`
	}
	return rpcResult(id, fmt.Sprintf(`{"kind":"status-update","taskId":"%s","contextId":"%s","status":{"state":"%s","timestamp":"%s"%s},"final":%t}`,
		esc(t.id), esc(t.contextID), state, timestamp(time.Now()), msg, final))
}

func terminal(state string) bool {
	switch state {
	case "completed", "failed", "canceled", "rejected":
		return true
	}
	return false
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Connection", "close")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	rec := Request{HTTPMethod: r.Method, Path: r.URL.Path, Auth: r.Header.Get("Authorization"), ContentType: r.Header.Get("Content-Type")}
	body, _ := io.ReadAll(io.LimitReader(r.Body, MaxBodySize+1))
	rec.Body = body
	var env struct {
		JSONRPC *string         `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Method  *string         `json:"method"`
		Params  json.RawMessage `json:"params"`
	}
	envErr := json.Unmarshal(body, &env)
	if envErr == nil {
		rec.RPCID, rec.Params = env.ID, env.Params
		if env.Method != nil {
			rec.RPCMethod = *env.Method
		}
	}
	// Recorded before any answer is written, so a client that has its
	// answer finds its request recorded.
	s.record(rec)

	switch r.URL.Path {
	case "/health":
		writeJSON(w, 200, `{"status":"ok"}`)
		return
	case "/.well-known/agent-card.json", "/.well-known/agent.json":
		writeJSON(w, 200, `{"name":"NullClaw","description":"AI assistant","protocolVersion":"0.3.0","version":"1.0.0","url":"/a2a","supportedInterfaces":[{"url":"/a2a","protocolBinding":"JSONRPC","protocolVersion":"0.3.0"}],"preferredTransport":"JSONRPC","provider":{"organization":"NullClaw","url":"https://github.com/nullclaw/nullclaw"},"capabilities":{"streaming":true},"securitySchemes":{"bearerAuth":{"type":"http","scheme":"bearer","description":"Use a pairing token from /pair as the bearer token."}},"security":[{"bearerAuth":[]}],"defaultInputModes":["text/plain"],"defaultOutputModes":["text/plain"],"skills":[{"id":"chat","name":"General Chat","description":"General-purpose AI assistant","tags":["chat","general"]}]}`)
		return
	case "/a2a":
		if s.A2ADisabled {
			writeJSON(w, 404, `{"error":"a2a not enabled"}`)
			return
		}
	default:
		writeJSON(w, 404, `{"error":"not found"}`)
		return
	}

	if r.Method != http.MethodPost {
		s.violate("%s /a2a", r.Method)
		writeJSON(w, 405, `{"error":"method not allowed"}`)
		return
	}
	if !s.authorized(rec.Auth) {
		s.violate("bad or missing bearer token %q", rec.Auth)
		writeJSON(w, 401, `{"error":"unauthorized"}`)
		return
	}
	if r.ContentLength > MaxBodySize || len(body) > MaxBodySize {
		s.violate("body over %d bytes", MaxBodySize)
		writeJSON(w, 413, `{"error":"request too large"}`)
		return
	}
	if r.ContentLength < 0 {
		// nullclaw reads a body only by Content-Length.
		s.violate("request without Content-Length")
		writeJSON(w, 400, `{"error":"empty body"}`)
		return
	}
	if len(body) == 0 {
		s.violate("empty body")
		writeJSON(w, 400, `{"error":"empty body"}`)
		return
	}
	if ct := strings.ToLower(rec.ContentType); !strings.HasPrefix(ct, "application/json") {
		s.violate("content type %q", rec.ContentType)
	}
	if bytes.Contains(body, []byte(`\u003c`)) || bytes.Contains(body, []byte(`\u003e`)) || bytes.Contains(body, []byte(`\u0026`)) {
		s.violate("HTML-escaped JSON: nullclaw passes the escapes to the model verbatim")
	}

	if envErr != nil {
		s.violate("body is not a JSON object: %v", envErr)
		writeJSON(w, 200, rpcError("null", -32600, "Missing method"))
		return
	}
	id := "null"
	if len(env.ID) > 0 {
		id = string(env.ID)
	}
	if env.JSONRPC == nil || *env.JSONRPC != "2.0" {
		s.violate(`jsonrpc is not "2.0"`)
	}
	if len(env.ID) == 0 || (env.ID[0] != '"' && (env.ID[0] < '0' || env.ID[0] > '9')) {
		s.violate("id %s is not a string or number", env.ID)
	}
	if env.Method == nil {
		s.violate("no method")
		writeJSON(w, 200, rpcError(id, -32600, "Missing method"))
		return
	}
	if len(env.Params) == 0 || env.Params[0] != '{' {
		s.violate("params is not an object")
	}

	switch *env.Method {
	case "message/stream", "SendStreamingMessage":
		s.stream(w, id, env.Params)
	case "tasks/cancel", "CancelTask":
		s.cancel(w, id, env.Params)
	case "tasks/get", "GetTask":
		s.get(w, id, env.Params)
	case "tasks/resubscribe", "SubscribeToTask":
		s.resubscribe(w, id, env.Params)
	default:
		s.violate("method %q", *env.Method)
		writeJSON(w, 200, rpcError(id, -32601, "Method not found"))
	}
}

type sseConn struct {
	conn   net.Conn
	bw     *bufio.ReadWriter
	mu     sync.Mutex
	broken bool
}

func hijackSSE(w http.ResponseWriter) (*sseConn, error) {
	conn, bw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	c := &sseConn{conn: conn, bw: bw}
	c.raw("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: keep-alive\r\n\r\n")
	return c, nil
}

func (c *sseConn) raw(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken {
		return
	}
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.bw.WriteString(s); err != nil {
		c.broken = true
		return
	}
	if err := c.bw.Flush(); err != nil {
		c.broken = true
	}
}

func (c *sseConn) event(json string) { c.raw("data: " + json + "\n\n") }

func (c *sseConn) close() { c.conn.Close() }

// writeSseError is nullclaw's pre-stream failure: a 200 SSE response with one
// JSON-RPC error.
func writeSseError(w http.ResponseWriter, id string, code int, msg string) {
	c, err := hijackSSE(w)
	if err != nil {
		return
	}
	c.event(rpcError(id, code, msg))
	c.close()
}

// rawString is a JSON string field as nullclaw reads it: the bytes between
// the quotes, escapes left in.
func rawString(raw json.RawMessage) (string, bool) {
	t := bytes.TrimSpace(raw)
	if len(t) < 2 || t[0] != '"' || t[len(t)-1] != '"' {
		return "", false
	}
	return string(t[1 : len(t)-1]), true
}

func (s *Server) stream(w http.ResponseWriter, id string, params json.RawMessage) {
	var p struct {
		Message *struct {
			Kind      *string                      `json:"kind"`
			MessageID json.RawMessage              `json:"messageId"`
			Role      *string                      `json:"role"`
			ContextID json.RawMessage              `json:"contextId"`
			Parts     []map[string]json.RawMessage `json:"parts"`
		} `json:"message"`
	}
	if err := json.Unmarshal(params, &p); err != nil || p.Message == nil {
		s.violate("message/stream without params.message")
		writeSseError(w, id, -32602, "Missing message text")
		return
	}
	m := p.Message
	var raw, decoded []string
	for i, part := range m.Parts {
		var kind string
		if json.Unmarshal(part["kind"], &kind) != nil || kind != "text" {
			s.violate("part %d is not kind text", i)
		}
		r, ok := rawString(part["text"])
		if !ok {
			s.violate("part %d has no text string", i)
			continue
		}
		var d string
		json.Unmarshal(part["text"], &d)
		raw, decoded = append(raw, r), append(decoded, d)
	}
	if len(raw) == 0 {
		s.violate("message without text")
		writeSseError(w, id, -32602, "Missing message text")
		return
	}
	if _, ok := rawString(m.MessageID); !ok || len(bytes.TrimSpace(m.MessageID)) <= 2 {
		s.violate("message without messageId")
		writeSseError(w, id, -32602, "Missing messageId")
		return
	}
	if m.Role == nil || *m.Role != "user" {
		s.violate("message role is not user")
	}
	if m.Kind != nil && *m.Kind != "message" {
		s.violate("message kind %q", *m.Kind)
	}
	contextID, hasCtx := rawString(m.ContextID)
	if len(m.ContextID) > 0 && !hasCtx {
		s.violate("contextId is not a string")
	}
	if hasCtx && strings.Contains(contextID, `\`) {
		s.violate("contextId has escapes, which nullclaw keeps verbatim")
	}

	s.mu.Lock()
	s.next++
	n := s.next
	if !hasCtx {
		contextID = fmt.Sprintf("ctx-%d", n)
	}
	tk := &task{
		id: fmt.Sprintf("task-%d", n), contextID: contextID, state: "submitted", updated: time.Now(),
		userText: strings.Join(raw, " "), canceled: make(chan struct{}),
	}
	s.tasks[tk.id] = tk
	script := s.Script
	if len(s.queue) > 0 {
		script, s.queue = s.queue[0], s.queue[1:]
	}
	s.mu.Unlock()
	if script == nil {
		script = func(t *Turn) { t.Chunk("ok"); t.Complete() }
	}

	c, err := hijackSSE(w)
	if err != nil {
		s.violate("cannot hijack: %v", err)
		return
	}
	defer c.close()
	s.mu.Lock()
	initial := rpcResult(id, taskJSON(tk, 2))
	if tk.state == "submitted" {
		tk.state = "working"
	}
	s.mu.Unlock()
	c.event(initial)

	t := &Turn{
		TaskID: tk.id, ContextID: tk.contextID,
		Text: strings.Join(decoded, " "), RawText: tk.userText,
		srv: s, c: c, id: id, tk: tk, gone: make(chan struct{}),
	}
	s.mu.Lock()
	s.turns = append(s.turns, t)
	s.mu.Unlock()
	go t.watch()
	script(t)
}

// Turn is one message/stream call, driven by a script.
type Turn struct {
	TaskID    string
	ContextID string
	// Text is the user's message; RawText is what nullclaw's agent gets: the
	// JSON string contents without unescaping, text parts joined by spaces.
	Text    string
	RawText string

	srv  *Server
	c    *sseConn
	id   string
	tk   *task
	gone chan struct{}
	text strings.Builder
	done bool
}

// watch notices the client closing the connection.
func (t *Turn) watch() {
	var b [1]byte
	for {
		if _, err := t.c.bw.Read(b[:]); err != nil {
			close(t.gone)
			return
		}
	}
}

// Canceled is closed when tasks/cancel reaches this turn's task.
func (t *Turn) Canceled() <-chan struct{} { return t.tk.canceled }

// Gone is closed when the client has closed the connection.
func (t *Turn) Gone() <-chan struct{} { return t.gone }

// Stopped is closed when the stand-in shuts down.
func (t *Turn) Stopped() <-chan struct{} { return t.srv.stopped }

// WaitCanceled waits up to d for tasks/cancel, and reports whether it came.
func (t *Turn) WaitCanceled(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-t.tk.canceled:
		return true
	case <-t.gone:
	case <-t.srv.stopped:
	case <-timer.C:
	}
	return false
}

// Chunk streams reply text as nullclaw's SSE sink does: an artifact update
// of artifact-<task> with append true and lastChunk false.
func (t *Turn) Chunk(text string) {
	if text == "" {
		return
	}
	t.text.WriteString(text)
	t.c.event(rpcResult(t.id, fmt.Sprintf(`{"kind":"artifact-update","taskId":"%s","contextId":"%s","artifact":{"artifactId":"artifact-%s","parts":[{"kind":"text","text":"%s"}]},"append":true,"lastChunk":false}`,
		esc(t.tk.id), esc(t.tk.contextID), esc(t.tk.id), esc(text))))
}

// ToolHint is nullclaw's progress hint when its agent starts a tool.
func (t *Turn) ToolHint(name string) {
	t.c.event(statusUpdate(t.id, t.tk, "working", "Calling tool: "+name, false))
}

// Complete ends the turn as nullclaw's finalizeTask(.completed) does: the
// task completes, unless it was cancelled, and a final status update follows.
func (t *Turn) Complete() { t.finish("completed") }

// Fail ends the turn as a failed agent turn: the task fails and the stream
// gets a JSON-RPC error -32603 "Agent processing failed"; a cancelled task
// instead ends with a final "canceled" update.
func (t *Turn) Fail() {
	if t.done {
		return
	}
	t.done = true
	s := t.srv
	s.mu.Lock()
	canceled := t.tk.state == "canceled"
	if !canceled {
		t.tk.state, t.tk.updated = "failed", time.Now()
	}
	s.mu.Unlock()
	if canceled {
		t.c.event(statusUpdate(t.id, t.tk, "canceled", "", true))
		return
	}
	t.c.event(rpcError(t.id, -32603, "Agent processing failed"))
}

// SetReply sets the task's final reply without streaming it, as a turn whose
// provider did not stream: tasks/get then returns it as the artifact.
func (t *Turn) SetReply(text string) {
	t.text.Reset()
	t.text.WriteString(text)
}

func (t *Turn) finish(state string) {
	if t.done {
		return
	}
	t.done = true
	s := t.srv
	s.mu.Lock()
	if t.tk.state != "canceled" {
		t.tk.state, t.tk.updated = state, time.Now()
		t.tk.agentText = t.text.String()
	}
	final := t.tk.state
	s.mu.Unlock()
	t.c.event(statusUpdate(t.id, t.tk, final, "", true))
}

// Status writes a status update of any state (for protocol edge cases
// nullclaw itself does not produce).
func (t *Turn) Status(state, message string, final bool) {
	t.c.event(statusUpdate(t.id, t.tk, state, message, final))
}

// Raw writes bytes to the stream as they are.
func (t *Turn) Raw(s string) { t.c.raw(s) }

// Event writes one "data:" line with the given JSON as it is.
func (t *Turn) Event(json string) { t.c.event(json) }

// RPCID is the request's JSON-RPC id as raw JSON.
func (t *Turn) RPCID() string { return t.id }

func (s *Server) taskParam(params json.RawMessage) (*task, string) {
	var p struct {
		ID json.RawMessage `json:"id"`
	}
	json.Unmarshal(params, &p)
	id, ok := rawString(p.ID)
	if !ok {
		return nil, ""
	}
	return s.tasks[id], id
}

func (s *Server) cancel(w http.ResponseWriter, id string, params json.RawMessage) {
	s.mu.Lock()
	tk, tid := s.taskParam(params)
	switch {
	case tid == "":
		s.mu.Unlock()
		s.violate("tasks/cancel without params.id")
		writeJSON(w, 200, rpcError(id, -32602, "Missing task id"))
	case tk == nil:
		s.mu.Unlock()
		writeJSON(w, 200, rpcError(id, -32001, "Task not found"))
	case terminal(tk.state):
		s.mu.Unlock()
		writeJSON(w, 200, rpcError(id, -32002, "Task already in terminal state"))
	default:
		tk.state, tk.updated = "canceled", time.Now()
		close(tk.canceled)
		body := rpcResult(id, taskJSON(tk, 2))
		s.mu.Unlock()
		writeJSON(w, 200, body)
	}
}

func (s *Server) get(w http.ResponseWriter, id string, params json.RawMessage) {
	s.mu.Lock()
	tk, tid := s.taskParam(params)
	if tid == "" {
		s.mu.Unlock()
		s.violate("tasks/get without params.id")
		writeJSON(w, 200, rpcError(id, -32602, "Missing task id"))
		return
	}
	if tk == nil {
		s.mu.Unlock()
		writeJSON(w, 200, rpcError(id, -32001, "Task not found"))
		return
	}
	body := rpcResult(id, taskJSON(tk, 2))
	s.mu.Unlock()
	writeJSON(w, 200, body)
}

func (s *Server) resubscribe(w http.ResponseWriter, id string, params json.RawMessage) {
	s.mu.Lock()
	tk, tid := s.taskParam(params)
	if tk == nil {
		s.mu.Unlock()
		if tid == "" {
			writeSseError(w, id, -32602, "Missing task id")
		} else {
			writeSseError(w, id, -32001, "Task not found")
		}
		return
	}
	ev := statusUpdate(id, tk, tk.state, "", terminal(tk.state))
	s.mu.Unlock()
	c, err := hijackSSE(w)
	if err != nil {
		return
	}
	c.event(ev)
	c.close()
}
