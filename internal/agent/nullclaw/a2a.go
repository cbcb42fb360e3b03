// Package nullclaw drives the nullclaw agent (github.com/nullclaw/nullclaw, a
// static Zig binary) inside a session's VM through its gateway's A2A
// (Agent-to-Agent protocol v0.3.0) JSON-RPC endpoint, and turns what it
// streams into ExeClaw's session events.
//
// The wire format here is the one nullclaw's src/a2a.zig writes; NOTES.md in
// this directory says what was read in nullclaw's source and docs, and what is
// inferred from the A2A specification.
//
// Everything the gateway sends is treated as untrusted: lines, events, ids and
// texts are bounded, and every event is checked before it is handed on.
package nullclaw

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// TaskState is an A2A task state, as nullclaw writes it (TaskState.jsonName
// in src/a2a.zig).
type TaskState string

// Task states.
const (
	StateSubmitted     TaskState = "submitted"
	StateWorking       TaskState = "working"
	StateInputRequired TaskState = "input-required"
	StateAuthRequired  TaskState = "auth-required"
	StateCompleted     TaskState = "completed"
	StateCanceled      TaskState = "canceled"
	StateFailed        TaskState = "failed"
	StateRejected      TaskState = "rejected"
	StateUnknown       TaskState = "unknown"
)

func (s TaskState) valid() bool {
	switch s {
	case StateSubmitted, StateWorking, StateInputRequired, StateAuthRequired,
		StateCompleted, StateCanceled, StateFailed, StateRejected, StateUnknown:
		return true
	}
	return false
}

// Terminal reports whether no further work happens on a task in this state
// (nullclaw's isTerminalState: completed, failed, canceled, rejected).
func (s TaskState) Terminal() bool {
	switch s {
	case StateCompleted, StateCanceled, StateFailed, StateRejected:
		return true
	}
	return false
}

// Interrupted reports whether the agent stopped to ask for something (A2A's
// input-required and auth-required). nullclaw never enters these states.
func (s TaskState) Interrupted() bool {
	return s == StateInputRequired || s == StateAuthRequired
}

// JSON-RPC error codes nullclaw answers with (docs/en/gateway-api.md, "Error
// Codes"; src/a2a.zig).
const (
	CodeParseError           = -32700
	CodeInvalidRequest       = -32600
	CodeMethodNotFound       = -32601
	CodeInvalidParams        = -32602
	CodeInternalError        = -32603
	CodeTaskNotFound         = -32001
	CodeTaskNotCancelable    = -32002
	CodePushNotSupported     = -32003
	CodeContentTypeUnsupport = -32005
)

// Part is one piece of an A2A message or artifact. Kind is "text" (Text
// set), "data" (Data holds a JSON object) or "file" (File holds the file
// object, uninterpreted).
type Part struct {
	Kind     string          `json:"kind"`
	Text     string          `json:"text,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
	File     json.RawMessage `json:"file,omitempty"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// Message is an A2A message. nullclaw's status messages carry only role and
// parts; full messages (history, or a Message result) also carry kind and
// messageId.
type Message struct {
	Kind      string          `json:"kind,omitempty"`
	MessageID string          `json:"messageId,omitempty"`
	Role      string          `json:"role"`
	Parts     []Part          `json:"parts"`
	ContextID string          `json:"contextId,omitempty"`
	TaskID    string          `json:"taskId,omitempty"`
	Metadata  json.RawMessage `json:"metadata,omitempty"`
}

// Text is the concatenation of the message's text parts.
func (m *Message) Text() string {
	if m == nil {
		return ""
	}
	return partsText(m.Parts)
}

func partsText(parts []Part) string {
	var b strings.Builder
	for _, p := range parts {
		if p.Kind == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String()
}

// TaskStatus is a task's state, with an optional message from the agent.
type TaskStatus struct {
	State     TaskState `json:"state"`
	Message   *Message  `json:"message,omitempty"`
	Timestamp string    `json:"timestamp,omitempty"`
}

// Artifact is output of a task. nullclaw streams its reply as one artifact,
// "artifact-<taskId>", with text parts.
type Artifact struct {
	ArtifactID  string          `json:"artifactId"`
	Name        string          `json:"name,omitempty"`
	Description string          `json:"description,omitempty"`
	Parts       []Part          `json:"parts"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
}

// Task is an A2A task (kind "task").
type Task struct {
	Kind      string          `json:"kind"`
	ID        string          `json:"id"`
	ContextID string          `json:"contextId"`
	Status    TaskStatus      `json:"status"`
	Artifacts []Artifact      `json:"artifacts,omitempty"`
	History   []Message       `json:"history,omitempty"`
	Metadata  json.RawMessage `json:"metadata,omitempty"`
}

// TaskStatusUpdateEvent is a streamed change of task state (kind
// "status-update"). Final marks the last event of the stream.
type TaskStatusUpdateEvent struct {
	Kind      string          `json:"kind"`
	TaskID    string          `json:"taskId"`
	ContextID string          `json:"contextId"`
	Status    TaskStatus      `json:"status"`
	Final     bool            `json:"final"`
	Metadata  json.RawMessage `json:"metadata,omitempty"`
}

// TaskArtifactUpdateEvent is streamed output (kind "artifact-update"). With
// Append the parts continue the artifact sent before under the same id;
// without it they replace it. LastChunk marks the artifact complete.
type TaskArtifactUpdateEvent struct {
	Kind      string          `json:"kind"`
	TaskID    string          `json:"taskId"`
	ContextID string          `json:"contextId"`
	Artifact  Artifact        `json:"artifact"`
	Append    bool            `json:"append,omitempty"`
	LastChunk bool            `json:"lastChunk,omitempty"`
	Metadata  json.RawMessage `json:"metadata,omitempty"`
}

// EventKind names what a streamed result holds.
type EventKind string

// Event kinds (the "kind" discriminator of A2A v0.3.0 results).
const (
	KindTask           EventKind = "task"
	KindStatusUpdate   EventKind = "status-update"
	KindArtifactUpdate EventKind = "artifact-update"
	KindMessage        EventKind = "message"
)

// Event is one validated result of a message/stream response. Exactly the
// field that Kind names is set.
type Event struct {
	Kind           EventKind
	Task           *Task
	StatusUpdate   *TaskStatusUpdateEvent
	ArtifactUpdate *TaskArtifactUpdateEvent
	Message        *Message
}

// TaskID is the id of the task the event belongs to ("" for a Message
// without one).
func (e Event) TaskID() string {
	switch e.Kind {
	case KindTask:
		return e.Task.ID
	case KindStatusUpdate:
		return e.StatusUpdate.TaskID
	case KindArtifactUpdate:
		return e.ArtifactUpdate.TaskID
	case KindMessage:
		return e.Message.TaskID
	}
	return ""
}

// Final reports whether the event ends the stream: a final status update, a
// Task already in a terminal or interrupted state, or a Message result.
func (e Event) Final() bool {
	switch e.Kind {
	case KindStatusUpdate:
		return e.StatusUpdate.Final
	case KindTask:
		return e.Task.Status.State.Terminal() || e.Task.Status.State.Interrupted()
	case KindMessage:
		return true
	}
	return false
}

// Limits bound what the client accepts from the gateway. Zero fields take the
// defaults of DefaultLimits.
type Limits struct {
	MaxRequestBytes  int   // one JSON-RPC request body (nullclaw's MAX_BODY_SIZE is 64 KiB)
	MaxLineBytes     int   // one SSE line
	MaxEventBytes    int   // the data of one SSE event
	MaxStreamBytes   int64 // everything read from one stream
	MaxEvents        int   // events in one stream
	MaxResponseBytes int   // a plain JSON answer (tasks/cancel, tasks/get, HTTP errors)
	MaxIDBytes       int   // task, context, artifact and message ids
	MaxParts         int   // parts of one message or artifact
	MaxArtifacts     int   // artifacts of one task
	MaxHistory       int   // history messages of one task
	MaxErrorBytes    int   // error messages are cut to this length
}

// DefaultLimits are the limits a zero Limits stands for.
var DefaultLimits = Limits{
	MaxRequestBytes:  64 << 10,
	MaxLineBytes:     1 << 20,
	MaxEventBytes:    4 << 20,
	MaxStreamBytes:   256 << 20,
	MaxEvents:        1 << 20,
	MaxResponseBytes: 4 << 20,
	MaxIDBytes:       256,
	MaxParts:         64,
	MaxArtifacts:     64,
	MaxHistory:       256,
	MaxErrorBytes:    2048,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	pick := func(v, def int) int {
		if v > 0 {
			return v
		}
		return def
	}
	l.MaxRequestBytes = pick(l.MaxRequestBytes, d.MaxRequestBytes)
	l.MaxLineBytes = pick(l.MaxLineBytes, d.MaxLineBytes)
	l.MaxEventBytes = pick(l.MaxEventBytes, d.MaxEventBytes)
	if l.MaxStreamBytes <= 0 {
		l.MaxStreamBytes = d.MaxStreamBytes
	}
	l.MaxEvents = pick(l.MaxEvents, d.MaxEvents)
	l.MaxResponseBytes = pick(l.MaxResponseBytes, d.MaxResponseBytes)
	l.MaxIDBytes = pick(l.MaxIDBytes, d.MaxIDBytes)
	l.MaxParts = pick(l.MaxParts, d.MaxParts)
	l.MaxArtifacts = pick(l.MaxArtifacts, d.MaxArtifacts)
	l.MaxHistory = pick(l.MaxHistory, d.MaxHistory)
	l.MaxErrorBytes = pick(l.MaxErrorBytes, d.MaxErrorBytes)
	return l
}

// Errors.
var (
	// ErrProtocol is wrapped by every error about something the gateway sent
	// that breaks the protocol.
	ErrProtocol = errors.New("nullclaw: protocol violation")
	// ErrStreamEnded: the stream closed before the task reached a final state.
	ErrStreamEnded = errors.New("nullclaw: stream ended before the task finished")
	// ErrTooLarge: a line, event, stream or answer passed its limit.
	ErrTooLarge = errors.New("nullclaw: response exceeds limit")
	// ErrIdle: nothing arrived for the client's IdleTimeout.
	ErrIdle = errors.New("nullclaw: stream idle for too long")
	// ErrRequest: the request itself cannot be sent (bad argument).
	ErrRequest = errors.New("nullclaw: invalid request")
)

// RPCError is a JSON-RPC error object the gateway answered with, in a plain
// answer or as an event of a stream (nullclaw reports a failed streaming turn
// this way: -32603 "Agent processing failed").
type RPCError struct {
	Code    int
	Message string
	Data    json.RawMessage
}

func (e *RPCError) Error() string {
	return fmt.Sprintf("nullclaw: JSON-RPC error %d: %s", e.Code, e.Message)
}

// HTTPError is a non-200 answer of the gateway (nullclaw answers
// {"error":"..."} with 401 unauthorized, 404 "a2a not enabled", 413, 429
// "rate limited", 503 ...).
type HTTPError struct {
	StatusCode int
	Message    string
}

func (e *HTTPError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("nullclaw gateway: HTTP %d", e.StatusCode)
	}
	return fmt.Sprintf("nullclaw gateway: HTTP %d: %s", e.StatusCode, e.Message)
}

// IsNotCancelable reports whether err says the task had already finished
// (TaskNotCancelableError) or was gone (TaskNotFoundError).
func IsNotCancelable(err error) bool {
	var re *RPCError
	return errors.As(err, &re) && (re.Code == CodeTaskNotCancelable || re.Code == CodeTaskNotFound)
}

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// Client talks to one nullclaw gateway's /a2a endpoint.
type Client struct {
	endpoint string
	baseErr  error
	hc       *http.Client
	token    string

	// Limits bound what is accepted; set before the first call.
	Limits Limits
	// IdleTimeout ends a stream when nothing at all arrives for this long; 0
	// waits for ever (the caller's context still applies). nullclaw sends
	// nothing while a tool runs, so keep it longer than the longest command.
	IdleTimeout time.Duration

	seq atomic.Uint64
}

// NewClient returns a client for the gateway at baseURL (for example
// "http://127.0.0.1:3000"; a URL already ending in /a2a is used as is). token
// is sent as "Authorization: Bearer <token>" when not empty. A nil
// httpClient uses one without an overall timeout, as streams last a turn.
func NewClient(baseURL string, httpClient *http.Client, token string) *Client {
	c := &Client{hc: httpClient, token: token}
	if c.hc == nil {
		c.hc = &http.Client{}
	}
	u, err := url.Parse(strings.TrimSpace(baseURL))
	switch {
	case err != nil:
		c.baseErr = fmt.Errorf("%w: base URL: %v", ErrRequest, err)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		c.baseErr = fmt.Errorf("%w: base URL %q is not an http(s) URL", ErrRequest, baseURL)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		c.baseErr = fmt.Errorf("%w: base URL %q has a query, fragment or user", ErrRequest, baseURL)
	default:
		u.Path = strings.TrimRight(u.Path, "/")
		if !strings.HasSuffix(u.Path, "/a2a") {
			u.Path += "/a2a"
		}
		c.endpoint = u.String()
	}
	if strings.ContainsAny(token, "\r\n") {
		c.baseErr = fmt.Errorf("%w: token has a line break", ErrRequest)
	}
	return c
}

// Endpoint is the /a2a URL requests go to.
func (c *Client) Endpoint() string { return c.endpoint }

func (c *Client) limits() Limits { return c.Limits.withDefaults() }

func (c *Client) nextID() string {
	return fmt.Sprintf("execlaw-%d-%s", c.seq.Add(1), randHex(4))
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type rpcRequest struct {
	JSONRPC string `json:"jsonrpc"`
	ID      string `json:"id"`
	Method  string `json:"method"`
	Params  any    `json:"params"`
}

type sendParams struct {
	Message Message `json:"message"`
}

type idParams struct {
	ID string `json:"id"`
}

// encodeRequest marshals without HTML escaping: nullclaw reads string fields
// of the request without JSON-unescaping them (extractObjectStringField in
// src/a2a.zig), so every escape it is sent reaches the model verbatim; this
// keeps those to the ones JSON requires.
func encodeRequest(req rpcRequest, max int) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(req); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRequest, err)
	}
	b := bytes.TrimRight(buf.Bytes(), "\n")
	if len(b) > max {
		return nil, fmt.Errorf("%w: request of %d bytes exceeds the gateway's %d", ErrRequest, len(b), max)
	}
	return b, nil
}

// ValidContextID reports whether s can be used as an A2A contextId with
// nullclaw: 1 to 128 of [A-Za-z0-9._:-]. nullclaw keys conversation history
// by it and does not unescape it, so only plain characters are allowed.
func ValidContextID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

func (c *Client) post(ctx context.Context, body []byte, accept string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRequest, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", accept)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("nullclaw: %w", err)
	}
	return resp, nil
}

// httpError reads a bounded {"error": "..."} body of a non-200 answer.
func (c *Client) httpError(resp *http.Response) error {
	lim := c.limits()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, int64(lim.MaxErrorBytes)*2))
	var body struct {
		Error string `json:"error"`
	}
	msg := ""
	if json.Unmarshal(b, &body) == nil {
		msg = body.Error
	}
	return &HTTPError{StatusCode: resp.StatusCode, Message: cleanText(msg, lim.MaxErrorBytes)}
}

// cleanText makes an untrusted string safe to show: valid UTF-8, no control
// characters but newline and tab, at most max bytes.
func cleanText(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// Stream sends text as a user message with message/stream and calls on with
// every event of the task, in order, until a final event arrives. contextID
// ties turns into one conversation (nullclaw keeps history per contextId);
// when empty nullclaw starts a new one. Stream returns nil after a final
// event, the error on returned, an *RPCError the stream carried, an
// *HTTPError, or an error wrapping ErrProtocol, ErrTooLarge, ErrIdle or
// ErrStreamEnded.
func (c *Client) Stream(ctx context.Context, contextID, text string, on func(Event) error) error {
	if c.baseErr != nil {
		return c.baseErr
	}
	if on == nil {
		return fmt.Errorf("%w: no event callback", ErrRequest)
	}
	if contextID != "" && !ValidContextID(contextID) {
		return fmt.Errorf("%w: context id %q", ErrRequest, contextID)
	}
	if text == "" || !utf8.ValidString(text) {
		return fmt.Errorf("%w: message text is empty or not UTF-8", ErrRequest)
	}
	lim := c.limits()
	id := c.nextID()
	body, err := encodeRequest(rpcRequest{
		JSONRPC: "2.0",
		ID:      id,
		Method:  "message/stream",
		Params: sendParams{Message: Message{
			Kind:      "message",
			MessageID: "msg-" + randHex(12),
			Role:      "user",
			Parts:     []Part{{Kind: "text", Text: text}},
			ContextID: contextID,
		}},
	}, lim.MaxRequestBytes)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var idle *idleWatch
	if c.IdleTimeout > 0 {
		idle = newIdleWatch(c.IdleTimeout, cancel)
		defer idle.stop()
	}
	resp, err := c.post(ctx, body, "text/event-stream")
	if err != nil {
		if idle != nil && idle.fired() {
			return ErrIdle
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c.httpError(resp)
	}

	st := &streamState{lim: lim, id: id, contextID: contextID, on: on}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch ct {
	case "text/event-stream":
	case "application/json":
		// Some A2A servers answer a streaming call with one plain response.
		b, err := readBounded(resp.Body, lim.MaxResponseBytes)
		if err != nil {
			return err
		}
		if err := st.handleData(b); err != nil {
			return err
		}
		if !st.done {
			return ErrStreamEnded
		}
		return nil
	default:
		return protoErr("content type %q is not text/event-stream", resp.Header.Get("Content-Type"))
	}

	sr := newSSEReader(resp.Body, lim)
	for {
		data, err := sr.next(idle)
		if err != nil {
			if idle != nil && idle.fired() {
				return ErrIdle
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return ErrStreamEnded
			}
			if ctx.Err() != nil && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrProtocol) {
				return fmt.Errorf("nullclaw: %w", context.Cause(ctx))
			}
			return err
		}
		if err := st.handleData(data); err != nil {
			return err
		}
		if st.done {
			return nil
		}
	}
}

// streamState checks the events of one stream against each other.
type streamState struct {
	lim       Limits
	id        string // our JSON-RPC id
	contextID string // requested context, "" for any
	on        func(Event) error

	taskID     string
	taskCtx    string
	seenTask   bool
	events     int
	done       bool
	lastStatus TaskState
}

func (st *streamState) handleData(data []byte) error {
	st.events++
	if st.events > st.lim.MaxEvents {
		return fmt.Errorf("%w: more than %d events", ErrTooLarge, st.lim.MaxEvents)
	}
	ev, err := decodeResponse(data, st.id, st.lim)
	if err != nil {
		return err
	}
	if err := st.check(ev); err != nil {
		return err
	}
	if ev.Final() {
		st.done = true
	}
	return st.on(ev)
}

func (st *streamState) check(ev Event) error {
	if !st.seenTask {
		switch ev.Kind {
		case KindTask:
			if st.contextID != "" && ev.Task.ContextID != st.contextID {
				return protoErr("task context %q, asked for %q", ev.Task.ContextID, st.contextID)
			}
			st.seenTask, st.taskID, st.taskCtx = true, ev.Task.ID, ev.Task.ContextID
			return nil
		case KindMessage:
			// A Message result is the whole answer (A2A: the stream then ends).
			if st.contextID != "" && ev.Message.ContextID != "" && ev.Message.ContextID != st.contextID {
				return protoErr("message context %q, asked for %q", ev.Message.ContextID, st.contextID)
			}
			return nil
		default:
			return protoErr("stream starts with %s, not a task", ev.Kind)
		}
	}
	var taskID, ctxID string
	switch ev.Kind {
	case KindTask:
		taskID, ctxID = ev.Task.ID, ev.Task.ContextID
	case KindStatusUpdate:
		taskID, ctxID = ev.StatusUpdate.TaskID, ev.StatusUpdate.ContextID
	case KindArtifactUpdate:
		taskID, ctxID = ev.ArtifactUpdate.TaskID, ev.ArtifactUpdate.ContextID
	case KindMessage:
		taskID, ctxID = ev.Message.TaskID, ev.Message.ContextID
		if taskID == "" {
			taskID = st.taskID
		}
		if ctxID == "" {
			ctxID = st.taskCtx
		}
	}
	if taskID != st.taskID || ctxID != st.taskCtx {
		return protoErr("event for task %q/%q in the stream of %q/%q", taskID, ctxID, st.taskID, st.taskCtx)
	}
	return nil
}

type rpcEnvelope struct {
	JSONRPC *string         `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

// decodeResponse validates one JSON-RPC response and the event it carries.
func decodeResponse(data []byte, wantID string, lim Limits) (Event, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return Event{}, protoErr("event is not a JSON object")
	}
	var env rpcEnvelope
	if err := json.Unmarshal(data, &env); err != nil {
		return Event{}, protoErr("event JSON: %v", err)
	}
	if env.JSONRPC == nil || *env.JSONRPC != "2.0" {
		return Event{}, protoErr(`response is not JSON-RPC "2.0"`)
	}
	hasResult := len(env.Result) > 0 && string(env.Result) != "null"
	hasError := len(env.Error) > 0 && string(env.Error) != "null"
	if hasResult == hasError {
		return Event{}, protoErr("response must hold exactly one of result and error")
	}
	idNull := len(env.ID) == 0 || string(env.ID) == "null"
	if !(hasError && idNull) { // errors about unreadable requests may carry a null id
		var got string
		if idNull || json.Unmarshal(env.ID, &got) != nil || got != wantID {
			return Event{}, protoErr("response id %s does not answer request %q", clip(string(env.ID), 80), wantID)
		}
	}
	if hasError {
		var e struct {
			Code    *int            `json:"code"`
			Message *string         `json:"message"`
			Data    json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(env.Error, &e); err != nil || e.Code == nil || e.Message == nil {
			return Event{}, protoErr("malformed JSON-RPC error object")
		}
		re := &RPCError{Code: *e.Code, Message: cleanText(*e.Message, lim.MaxErrorBytes)}
		if len(e.Data) <= lim.MaxErrorBytes {
			re.Data = e.Data
		}
		return Event{}, re
	}
	return decodeResult(env.Result, lim)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func decodeResult(raw json.RawMessage, lim Limits) (Event, error) {
	if len(raw) == 0 || raw[0] != '{' {
		return Event{}, protoErr("result is not an object")
	}
	var head struct {
		Kind string `json:"kind"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return Event{}, protoErr("result: %v", err)
	}
	v := validator{lim: lim}
	switch EventKind(head.Kind) {
	case KindTask:
		var t Task
		if err := json.Unmarshal(raw, &t); err != nil {
			return Event{}, protoErr("task: %v", err)
		}
		v.task(&t)
		return Event{Kind: KindTask, Task: &t}, v.err
	case KindStatusUpdate:
		var s TaskStatusUpdateEvent
		if err := json.Unmarshal(raw, &s); err != nil {
			return Event{}, protoErr("status-update: %v", err)
		}
		v.id("taskId", s.TaskID)
		v.id("contextId", s.ContextID)
		v.status(&s.Status)
		return Event{Kind: KindStatusUpdate, StatusUpdate: &s}, v.err
	case KindArtifactUpdate:
		var a TaskArtifactUpdateEvent
		if err := json.Unmarshal(raw, &a); err != nil {
			return Event{}, protoErr("artifact-update: %v", err)
		}
		v.id("taskId", a.TaskID)
		v.id("contextId", a.ContextID)
		v.artifact(&a.Artifact)
		return Event{Kind: KindArtifactUpdate, ArtifactUpdate: &a}, v.err
	case KindMessage:
		var m Message
		if err := json.Unmarshal(raw, &m); err != nil {
			return Event{}, protoErr("message: %v", err)
		}
		v.id("messageId", m.MessageID)
		v.message(&m)
		if m.TaskID != "" {
			v.id("taskId", m.TaskID)
		}
		if m.ContextID != "" {
			v.id("contextId", m.ContextID)
		}
		return Event{Kind: KindMessage, Message: &m}, v.err
	case "":
		return Event{}, protoErr("result has no kind")
	default:
		return Event{}, protoErr("result of unknown kind %q", clip(head.Kind, 40))
	}
}

// validator records the first thing wrong with a decoded result.
type validator struct {
	lim Limits
	err error
}

func (v *validator) fail(format string, args ...any) {
	if v.err == nil {
		v.err = protoErr(format, args...)
	}
}

func (v *validator) id(field, s string) {
	switch {
	case s == "":
		v.fail("%s is missing", field)
	case len(s) > v.lim.MaxIDBytes:
		v.fail("%s is longer than %d bytes", field, v.lim.MaxIDBytes)
	case !v.validID(s):
		v.fail("%s has a control or invalid character", field)
	}
}

// validID: 1 to MaxIDBytes of UTF-8 without control characters.
func (v *validator) validID(s string) bool {
	if s == "" || len(s) > v.lim.MaxIDBytes || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return false
		}
	}
	return true
}

func (v *validator) task(t *Task) {
	v.id("id", t.ID)
	v.id("contextId", t.ContextID)
	v.status(&t.Status)
	if len(t.Artifacts) > v.lim.MaxArtifacts {
		v.fail("task has %d artifacts, more than %d", len(t.Artifacts), v.lim.MaxArtifacts)
		return
	}
	for i := range t.Artifacts {
		v.artifact(&t.Artifacts[i])
	}
	if len(t.History) > v.lim.MaxHistory {
		v.fail("task has %d history messages, more than %d", len(t.History), v.lim.MaxHistory)
		return
	}
	for i := range t.History {
		v.message(&t.History[i])
	}
}

func (v *validator) status(s *TaskStatus) {
	if !s.State.valid() {
		v.fail("unknown task state %q", clip(string(s.State), 40))
	}
	if s.Message != nil {
		v.message(s.Message)
	}
}

func (v *validator) message(m *Message) {
	if m.Kind != "" && m.Kind != "message" {
		v.fail("message of kind %q", clip(m.Kind, 40))
	}
	if m.Role != "agent" && m.Role != "user" {
		v.fail("message role %q", clip(m.Role, 40))
	}
	v.parts(m.Parts)
}

func (v *validator) artifact(a *Artifact) {
	v.id("artifactId", a.ArtifactID)
	v.parts(a.Parts)
}

func (v *validator) parts(ps []Part) {
	if len(ps) > v.lim.MaxParts {
		v.fail("%d parts, more than %d", len(ps), v.lim.MaxParts)
		return
	}
	for _, p := range ps {
		switch p.Kind {
		case "text":
		case "data":
			if len(p.Data) == 0 || p.Data[0] != '{' {
				v.fail("data part without an object")
			}
		case "file":
			if len(p.File) == 0 || p.File[0] != '{' {
				v.fail("file part without an object")
			}
		default:
			v.fail("part of unknown kind %q", clip(p.Kind, 40))
		}
	}
}

// sseReader reads the data of server-sent events with bounded lines.
type sseReader struct {
	br    *bufio.Reader
	lim   Limits
	total int64
}

func newSSEReader(r io.Reader, lim Limits) *sseReader {
	return &sseReader{br: bufio.NewReaderSize(r, 64<<10), lim: lim}
}

// line returns the next line without its end (\n or \r\n).
func (s *sseReader) line() ([]byte, error) {
	var acc []byte
	for {
		frag, err := s.br.ReadSlice('\n')
		s.total += int64(len(frag))
		if s.total > s.lim.MaxStreamBytes {
			return nil, fmt.Errorf("%w: stream longer than %d bytes", ErrTooLarge, s.lim.MaxStreamBytes)
		}
		if len(acc)+len(frag) > s.lim.MaxLineBytes+2 {
			return nil, fmt.Errorf("%w: SSE line longer than %d bytes", ErrTooLarge, s.lim.MaxLineBytes)
		}
		switch {
		case err == nil:
			if acc == nil {
				acc = frag
			} else {
				acc = append(acc, frag...)
			}
			acc = acc[:len(acc)-1]
			if n := len(acc); n > 0 && acc[n-1] == '\r' {
				acc = acc[:n-1]
			}
			return acc, nil
		case errors.Is(err, bufio.ErrBufferFull):
			acc = append(acc, frag...)
		default:
			// A line cut off by the end of the stream is dropped with its
			// event, as the SSE specification says.
			return nil, err
		}
	}
}

// next returns the data of the next event that has any.
func (s *sseReader) next(idle *idleWatch) ([]byte, error) {
	var data []byte
	has := false
	for {
		line, err := s.line()
		if err != nil {
			return nil, err
		}
		if idle != nil {
			idle.touch()
		}
		if len(line) == 0 {
			if has {
				return data, nil
			}
			continue
		}
		if line[0] == ':' {
			continue // comment, a keep-alive
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		if string(field) != "data" {
			continue // event, id, retry: not used by nullclaw
		}
		if len(data)+len(value)+1 > s.lim.MaxEventBytes {
			return nil, fmt.Errorf("%w: SSE event larger than %d bytes", ErrTooLarge, s.lim.MaxEventBytes)
		}
		if has {
			data = append(data, '\n')
		}
		data = append(data, value...)
		has = true
	}
}

// idleWatch cancels a request when it is not touched for a while.
type idleWatch struct {
	mu     sync.Mutex
	d      time.Duration
	t      *time.Timer
	isFire bool
}

func newIdleWatch(d time.Duration, cancel context.CancelFunc) *idleWatch {
	w := &idleWatch{d: d}
	w.t = time.AfterFunc(d, func() {
		w.mu.Lock()
		w.isFire = true
		w.mu.Unlock()
		cancel()
	})
	return w
}

func (w *idleWatch) touch() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.isFire {
		w.t.Reset(w.d)
	}
}

func (w *idleWatch) fired() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.isFire
}

func (w *idleWatch) stop() { w.t.Stop() }

func readBounded(r io.Reader, max int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, fmt.Errorf("nullclaw: %w", err)
	}
	if len(b) > max {
		return nil, fmt.Errorf("%w: answer longer than %d bytes", ErrTooLarge, max)
	}
	return b, nil
}

// call sends a non-streaming JSON-RPC request and returns the validated task
// it answers with.
func (c *Client) callTask(ctx context.Context, method, taskID string) (*Task, error) {
	if c.baseErr != nil {
		return nil, c.baseErr
	}
	lim := c.limits()
	if v := (validator{lim: lim}); !v.validID(taskID) {
		return nil, fmt.Errorf("%w: task id %q", ErrRequest, clip(taskID, 80))
	}
	id := c.nextID()
	body, err := encodeRequest(rpcRequest{JSONRPC: "2.0", ID: id, Method: method, Params: idParams{ID: taskID}}, lim.MaxRequestBytes)
	if err != nil {
		return nil, err
	}
	resp, err := c.post(ctx, body, "application/json")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, c.httpError(resp)
	}
	b, err := readBounded(resp.Body, lim.MaxResponseBytes)
	if err != nil {
		return nil, err
	}
	ev, err := decodeResponse(b, id, lim)
	if err != nil {
		return nil, err
	}
	if ev.Kind != KindTask {
		return nil, protoErr("%s answered with %s, not a task", method, ev.Kind)
	}
	if ev.Task.ID != taskID {
		return nil, protoErr("%s for %q answered with task %q", method, taskID, ev.Task.ID)
	}
	return ev.Task, nil
}

// Cancel asks the gateway to cancel a task (tasks/cancel). nullclaw marks
// the task canceled, interrupts the running turn, and the open stream ends
// with a final "canceled" status update. A task that already finished gives
// an error for which IsNotCancelable is true.
func (c *Client) Cancel(ctx context.Context, taskID string) error {
	t, err := c.callTask(ctx, "tasks/cancel", taskID)
	if err != nil {
		return err
	}
	if t.Status.State != StateCanceled {
		return protoErr("tasks/cancel answered with state %q", t.Status.State)
	}
	return nil
}

// GetTask fetches a task (tasks/get), with its reply artifact once finished.
func (c *Client) GetTask(ctx context.Context, taskID string) (*Task, error) {
	return c.callTask(ctx, "tasks/get", taskID)
}

// Health checks the gateway's GET /health (no auth), which nullclaw answers
// with 200 {"status":"ok"} or {"status":"degraded"}.
func (c *Client) Health(ctx context.Context) error {
	if c.baseErr != nil {
		return c.baseErr
	}
	u := strings.TrimSuffix(c.endpoint, "/a2a") + "/health"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRequest, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("nullclaw: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return &HTTPError{StatusCode: resp.StatusCode}
	}
	return nil
}
