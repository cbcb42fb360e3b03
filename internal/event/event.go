// Package event names the events of a session's stream and the shapes of their
// data, exactly as the API contract (docs/api.md) writes them. The agent
// produces them, the session manager stores and fans them out, the API streams
// them and renders transcripts from them.
package event

import (
	"context"
	"encoding/json"
)

// Event types.
const (
	Status        = "status"
	UserMessage   = "user_message"
	MessageDelta  = "message_delta"
	Message       = "message"
	ThinkingDelta = "thinking_delta"
	Thinking      = "thinking"
	ToolCall      = "tool_call"
	ToolResult    = "tool_result"
	AgentBusy     = "agent_busy"
	AgentIdle     = "agent_idle"
	Usage         = "usage"
	Exit          = "exit"
	Error         = "error_event"
	// Paused and Resumed (extensions): a session's sandbox was saved and
	// stopped, or started again, and how.
	Paused  = "paused"
	Resumed = "resumed"
)

// Kinds of pause and resume.
const (
	// ResumeSnapshot: the whole VM was saved, and restored: processes the
	// agent started run on.
	ResumeSnapshot = "snapshot"
	// ResumeCold: the sandbox boots afresh on the session's disk: files are
	// kept, processes are not.
	ResumeCold = "cold"
)

// Emitter appends an event to a session's log and delivers it to live readers.
// data is marshalled to JSON.
type Emitter interface {
	Emit(ctx context.Context, typ string, data any) error
}

// StatusData reports a state change, or a boot phase while booting.
type StatusData struct {
	State   string  `json:"state"`
	Uptime  float64 `json:"uptime"`
	Phase   string  `json:"phase,omitempty"`
	Message string  `json:"message,omitempty"`
}

// UserMessageData is what the user sent.
type UserMessageData struct {
	MessageID string `json:"messageId"`
	Content   string `json:"content"`
}

// DeltaData is a piece of streamed text (message_delta, thinking_delta).
type DeltaData struct {
	MessageID string `json:"messageId"`
	Text      string `json:"text"`
}

// MessageData is a complete text block (message, thinking).
type MessageData struct {
	MessageID string `json:"messageId"`
	Role      string `json:"role"`
	Content   string `json:"content"`
}

// ToolCallData is a tool call the model made.
type ToolCallData struct {
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

// ToolResultData is what a tool call returned.
type ToolResultData struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Output     string `json:"output"`
	IsError    bool   `json:"isError"`
	ExitCode   *int   `json:"exitCode,omitempty"`
	DurationMs int64  `json:"durationMs"`
	Truncated  bool   `json:"truncated,omitempty"`
}

// UsageTotals is a running count of tokens and cost.
type UsageTotals struct {
	InputTokens  int64   `json:"inputTokens"`
	OutputTokens int64   `json:"outputTokens"`
	CostUSD      float64 `json:"costUsd"`
}

// UsageData is the usage of one model call plus the session's running total.
type UsageData struct {
	InputTokens  int64       `json:"inputTokens"`
	OutputTokens int64       `json:"outputTokens"`
	CostUSD      float64     `json:"costUsd"`
	Total        UsageTotals `json:"total"`
}

// ExitData says the session's sandbox is gone.
type ExitData struct {
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

// ErrorData is a problem the user should read.
type ErrorData struct {
	Message string `json:"message"`
	// Kind classifies the problem, beyond the contract, for metrics:
	// ErrorKindProvider, ErrorKindProviderRetry, or empty.
	Kind string `json:"kind,omitempty"`
}

// Kinds of error_event.
const (
	// ErrorKindProvider is a model call that failed for good: the turn ended.
	ErrorKindProvider = "provider"
	// ErrorKindProviderRetry is a model call that failed and is tried again.
	ErrorKindProviderRetry = "provider_retry"
)

// Empty is the data of agent_busy and agent_idle.
type Empty struct{}

// PausedData says how a session was paused: its whole VM saved (snapshot,
// Bytes on disk), or its sandbox stopped with its disk kept (cold, Reason
// saying why), taking Ms.
type PausedData struct {
	Kind   string `json:"kind"`
	Reason string `json:"reason,omitempty"`
	Bytes  int64  `json:"bytes,omitempty"`
	Ms     int64  `json:"ms"`
}

// ResumedData says how a paused session came back: restored from its
// snapshot, or booted afresh on its disk (cold; Reason says why), taking Ms.
type ResumedData struct {
	Kind   string `json:"kind"`
	Reason string `json:"reason,omitempty"`
	Ms     int64  `json:"ms"`
}
