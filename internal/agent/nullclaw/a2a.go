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
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
