// Package claudecode runs Anthropic's Claude Code CLI inside a session's
// sandbox as the session's agent, and maps what it prints (its stream-json
// output) onto ExeClaw's events. Its model traffic goes through the host's
// credential proxy, so the VM only ever holds a per-session token.
package claudecode

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/execlaw/execlaw/internal/event"
)

// Bounds on what Claude Code may make us keep or forward. The CLI runs in
// the VM, where the agent may have replaced it: its output is as untrusted
// as anything else from the guest. Per turn, the mapper keeps at most
// maxOpenBlocks blocks of at most maxMessageText each and forwards at most
// maxTurnText of text and maxTurnTools tool calls; past a bound, what
// follows is dropped and one error_event says so.
const (
	maxLineBytes   = 4 << 20
	maxToolOutput  = 32 << 10
	maxToolInput   = 64 << 10
	maxMessageText = 1 << 20
	maxOpenBlocks  = 8
	maxTurnText    = 8 << 20
	maxTurnTools   = 256
)

// line is one stream-json object Claude Code prints. Only the fields the
// mapping uses are decoded; everything else is ignored.
type line struct {
	Type    string          `json:"type"`
	Subtype string          `json:"subtype"`
	Event   json.RawMessage `json:"event"`   // stream_event: a raw Messages API stream event
	Message json.RawMessage `json:"message"` // assistant / user
	IsError bool            `json:"is_error"`
	Result  string          `json:"result"`
	// Parent tool use: set on the events of a sub-agent (Task tool).
	ParentToolUseID *string `json:"parent_tool_use_id"`
	// SessionID is Claude Code's conversation (on its init and result lines).
	SessionID string `json:"session_id"`
}

type apiEvent struct {
	Type         string `json:"type"`
	Index        int    `json:"index"`
	ContentBlock struct {
		Type string `json:"type"`
	} `json:"content_block"`
	Delta struct {
		Type     string `json:"type"`
		Text     string `json:"text"`
		Thinking string `json:"thinking"`
	} `json:"delta"`
}

type contentBlock struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	Thinking  string          `json:"thinking"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
	IsError   bool            `json:"is_error"`
}

type apiMessage struct {
	Content []contentBlock `json:"content"`
}

// Mapper turns Claude Code's output lines into events, one turn at a time.
type Mapper struct {
	emit event.Emitter
	ctx  context.Context

	// Blocks streamed with --include-partial-messages, by index. Once the
	// stream is seen, the text in assistant messages (the same text again,
	// sometimes before the stream's block ends) is not emitted twice.
	open      map[int]*streamBlock
	sawStream bool
	tools     map[string]toolCall

	// What the turn has forwarded, against the per-turn bounds, and which
	// bounds it has already been told about.
	text, toolCalls int
	warned          map[string]bool

	sessionID string // the conversation, as the CLI last said
}

// SessionID is Claude Code's conversation id, once a line has said it.
func (m *Mapper) SessionID() string { return m.sessionID }

type streamBlock struct {
	id       string
	thinking bool
	text     strings.Builder
}

type toolCall struct {
	name  string
	start time.Time
}

// NewMapper returns a mapper writing to emit.
func NewMapper(ctx context.Context, emit event.Emitter) *Mapper {
	return &Mapper{emit: emit, ctx: ctx, open: map[int]*streamBlock{}, tools: map[string]toolCall{}, warned: map[string]bool{}}
}

// Result is how a turn ended, from Claude Code's result line.
type Result struct {
	IsError bool
	Subtype string
	Text    string
}

// describe is an error result as the user reads it.
func (r *Result) describe() string {
	msg := "Claude Code ended the turn with an error"
	if r.Subtype != "" {
		msg += " (" + r.Subtype + ")"
	}
	if r.Text != "" {
		msg += ": " + r.Text
	}
	return msg
}

// Line maps one output line. It returns a non-nil Result when the line ends
// the turn.
func (m *Mapper) Line(raw []byte) (*Result, error) {
	if len(raw) > maxLineBytes {
		return nil, fmt.Errorf("claude code printed a line of %d bytes", len(raw))
	}
	var l line
	if err := json.Unmarshal(raw, &l); err != nil {
		// Not JSON (a warning printed to stdout): not ours to map.
		return nil, nil
	}
	if l.SessionID != "" && len(l.SessionID) <= 64 {
		m.sessionID = l.SessionID
	}
	if l.ParentToolUseID != nil && *l.ParentToolUseID != "" {
		// A sub-agent's own traffic: its outcome arrives as the Task tool's result.
		return nil, nil
	}
	switch l.Type {
	case "stream_event":
		m.sawStream = true
		return nil, m.streamEvent(l.Event)
	case "assistant":
		return nil, m.assistant(l.Message)
	case "user":
		return nil, m.user(l.Message)
	case "result":
		if err := m.flush(); err != nil {
			return nil, err
		}
		return &Result{IsError: l.IsError, Subtype: clip(l.Subtype, 64), Text: clip(l.Result, 4<<10)}, nil
	}
	return nil, nil
}

func (m *Mapper) streamEvent(raw json.RawMessage) error {
	var e apiEvent
	if json.Unmarshal(raw, &e) != nil {
		return nil
	}
	switch e.Type {
	case "content_block_start":
		switch e.ContentBlock.Type {
		case "text", "thinking":
			if prev, ok := m.open[e.Index]; ok {
				// Started again without a stop: what it had is complete.
				delete(m.open, e.Index)
				if err := m.complete(prev); err != nil {
					return err
				}
			}
			if len(m.open) >= maxOpenBlocks {
				return m.overLimit("blocks", fmt.Sprintf("Claude Code opened more than %d text blocks at once; the rest of its output in this turn is not shown", maxOpenBlocks))
			}
			m.open[e.Index] = &streamBlock{id: newID(), thinking: e.ContentBlock.Type == "thinking"}
		}
	case "content_block_delta":
		b, ok := m.open[e.Index]
		if !ok {
			return nil
		}
		text, typ := e.Delta.Text, event.MessageDelta
		if b.thinking {
			text, typ = e.Delta.Thinking, event.ThinkingDelta
		}
		if text == "" || b.text.Len()+len(text) > maxMessageText {
			return nil
		}
		if !m.takeText(len(text)) {
			return m.overLimit("text", fmt.Sprintf("Claude Code's answer passed %d MiB in one turn; the rest is not shown", maxTurnText>>20))
		}
		text = strings.ToValidUTF8(text, "\uFFFD")
		b.text.WriteString(text)
		return m.emit.Emit(m.ctx, typ, event.DeltaData{MessageID: b.id, Text: text})
	case "content_block_stop":
		b, ok := m.open[e.Index]
		if !ok {
			return nil
		}
		delete(m.open, e.Index)
		return m.complete(b)
	}
	return nil
}

// takeText counts n bytes of text against the turn's bound; false when it
// would pass it.
func (m *Mapper) takeText(n int) bool {
	if m.text+n > maxTurnText {
		return false
	}
	m.text += n
	return true
}

// overLimit tells the user, once per bound and turn, that output is being
// dropped.
func (m *Mapper) overLimit(bound, msg string) error {
	if m.warned[bound] {
		return nil
	}
	m.warned[bound] = true
	return m.emit.Emit(m.ctx, event.Error, event.ErrorData{Message: msg})
}

func (m *Mapper) complete(b *streamBlock) error {
	if b.text.Len() == 0 {
		return nil
	}
	typ := event.Message
	if b.thinking {
		typ = event.Thinking
	}
	return m.emit.Emit(m.ctx, typ, event.MessageData{MessageID: b.id, Role: "assistant", Content: b.text.String()})
}

// flush completes blocks a stream left open (a cut-off turn).
func (m *Mapper) flush() error {
	for i, b := range m.open {
		delete(m.open, i)
		if err := m.complete(b); err != nil {
			return err
		}
	}
	return nil
}

func (m *Mapper) assistant(raw json.RawMessage) error {
	var msg apiMessage
	if json.Unmarshal(raw, &msg) != nil {
		return nil
	}
	for _, c := range msg.Content {
		switch c.Type {
		case "text", "thinking":
			if m.sawStream {
				continue // streamed already
			}
			text := c.Text
			typ := event.Message
			if c.Type == "thinking" {
				text, typ = c.Thinking, event.Thinking
			}
			if text == "" {
				continue
			}
			text = clip(text, maxMessageText)
			if !m.takeText(len(text)) {
				if err := m.overLimit("text", fmt.Sprintf("Claude Code's answer passed %d MiB in one turn; the rest is not shown", maxTurnText>>20)); err != nil {
					return err
				}
				continue
			}
			if err := m.emit.Emit(m.ctx, typ, event.MessageData{MessageID: newID(), Role: "assistant", Content: text}); err != nil {
				return err
			}
		case "tool_use":
			if c.ID == "" || len(c.ID) > 128 {
				continue
			}
			if m.toolCalls >= maxTurnTools {
				if err := m.overLimit("tools", fmt.Sprintf("Claude Code made more than %d tool calls in one turn; the rest are not shown", maxTurnTools)); err != nil {
					return err
				}
				continue
			}
			m.toolCalls++
			m.tools[c.ID] = toolCall{name: clip(c.Name, 128), start: time.Now()}
			if err := m.emit.Emit(m.ctx, event.ToolCall, event.ToolCallData{ID: c.ID, Name: clip(c.Name, 128), Input: boundedJSON(c.Input)}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *Mapper) user(raw json.RawMessage) error {
	var msg apiMessage
	if json.Unmarshal(raw, &msg) != nil {
		return nil // a plain string: our own message echoed
	}
	for _, c := range msg.Content {
		if c.Type != "tool_result" {
			continue
		}
		call, ok := m.tools[c.ToolUseID]
		if !ok {
			continue
		}
		delete(m.tools, c.ToolUseID)
		out := toolOutput(c.Content)
		if err := m.emit.Emit(m.ctx, event.ToolResult, event.ToolResultData{
			ID: c.ToolUseID, Name: call.name, Output: out, IsError: c.IsError,
			DurationMs: time.Since(call.start).Milliseconds(), Truncated: len(out) >= maxToolOutput,
		}); err != nil {
			return err
		}
	}
	return nil
}

// toolOutput is a tool result's content: a string, or text blocks.
func toolOutput(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return clip(s, maxToolOutput)
	}
	var blocks []contentBlock
	if json.Unmarshal(raw, &blocks) != nil {
		return ""
	}
	var b strings.Builder
	for _, c := range blocks {
		switch c.Type {
		case "text":
			b.WriteString(c.Text)
		case "image":
			b.WriteString("[image]")
		}
		if b.Len() > maxToolOutput {
			break
		}
	}
	return clip(b.String(), maxToolOutput)
}

// PendingTools closes tool calls left without a result when a turn ends early.
func (m *Mapper) PendingTools(reason string) error {
	for id, call := range m.tools {
		delete(m.tools, id)
		if err := m.emit.Emit(m.ctx, event.ToolResult, event.ToolResultData{
			ID: id, Name: call.name, IsError: true, Output: reason, DurationMs: time.Since(call.start).Milliseconds(),
		}); err != nil {
			return err
		}
	}
	return m.flush()
}

func boundedJSON(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || len(raw) > maxToolInput || !json.Valid(raw) || !utf8.Valid(raw) {
		b, _ := json.Marshal(map[string]string{"invalidInput": clip(string(raw), 1024)})
		return b
	}
	return raw
}

func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "\n[... cut ...]"
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return "msg_" + hex.EncodeToString(b[:])
}
