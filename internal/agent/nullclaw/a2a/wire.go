// Package a2a is the A2A protocol (Agent-to-Agent v0.3.0: JSON-RPC 2.0 over
// HTTP, streamed as server-sent events) as nullclaw's gateway speaks it: the
// wire types, the calls ExeClaw makes (message/stream, tasks/cancel,
// tasks/get, GET /health) and the checks on every answer.
//
// The wire format is the one nullclaw's src/a2a.zig writes; NOTES.md in the
// parent directory says what was read in nullclaw's source and docs, and what
// is inferred from the A2A specification.
//
// Everything the gateway sends is untrusted. Limits bounds SSE lines, events,
// whole streams, plain answers, ids, parts, artifacts, history and error
// texts; every event is validated, and checked against the task its stream
// is about, before it is handed on; error texts are cleaned before anyone
// shows them. What the events mean for a session is the caller's business.
package a2a

import (
	"encoding/json"
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

// Text is the concatenation of the message's text parts. A nil message,
// such as a status without one, has none.
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

// Text is the concatenation of the artifact's text parts.
func (a Artifact) Text() string { return partsText(a.Parts) }

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
