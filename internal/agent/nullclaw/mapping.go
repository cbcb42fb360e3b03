package nullclaw

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/execlaw/execlaw/internal/agent/nullclaw/a2a"
	"github.com/execlaw/execlaw/internal/event"
)

// toolHintPrefix starts the text of the status update nullclaw streams when
// its agent starts a tool: "Calling tool: <tool name>" (buildProgressHintEvent
// in src/a2a.zig; the hint text is the tool name, src/agent/root.zig).
const toolHintPrefix = "Calling tool: "

// toolResultUnreported is the output given to a tool call's tool_result:
// nullclaw's A2A stream says which tool started, never its input or output.
const toolResultUnreported = "(nullclaw does not report tool input or output over A2A)"

// mapperLimits bound what one turn may put into the session log.
type mapperLimits struct {
	MaxTurnTextBytes int // assistant text per turn; the rest is dropped with a marker
	MaxToolCalls     int // tool calls per turn; later hints are dropped
	MaxToolNameBytes int // longer tool names are cut
}

// defaultMapperLimits are the limits a zero mapperLimits stands for.
var defaultMapperLimits = mapperLimits{
	MaxTurnTextBytes: 4 << 20,
	MaxToolCalls:     4096,
	MaxToolNameBytes: 128,
}

func (l mapperLimits) withDefaults() mapperLimits {
	d := defaultMapperLimits
	if l.MaxTurnTextBytes <= 0 {
		l.MaxTurnTextBytes = d.MaxTurnTextBytes
	}
	if l.MaxToolCalls <= 0 {
		l.MaxToolCalls = d.MaxToolCalls
	}
	if l.MaxToolNameBytes <= 0 {
		l.MaxToolNameBytes = d.MaxToolNameBytes
	}
	return l
}

// truncationMarker ends the assistant text of a turn that passed
// MaxTurnTextBytes.
const truncationMarker = "\n\n[output truncated by ExeClaw]"

// outcome is how a turn ended.
type outcome struct {
	TaskID    string
	ContextID string
	// State is the last state the gateway reported ("" when no task was
	// created). A turn cut short by the caller or a broken stream keeps the
	// last state seen, typically "submitted" or "working".
	State a2a.TaskState
	// Err is why the turn failed; it was already reported with error_event.
	// Nil when the task completed or was canceled.
	Err error
	// Truncated: assistant text was dropped at MaxTurnTextBytes.
	Truncated bool
}

// mapper turns the events of one nullclaw turn into ExeClaw events:
//
//   - text of artifact updates -> message_delta, and message when the text
//     block ends (at a tool call, at the end of an artifact, at the end of
//     the turn); appended chunks are deltas as they are, a replacement of an
//     artifact that extends what was sent yields only the new suffix;
//   - a "Calling tool: NAME" working status -> tool_call {name, input {}}, and
//     a tool_result when the next thing happens (nullclaw reports neither
//     input nor output, see toolResultUnreported);
//   - failed, rejected, input-required and auth-required -> error_event;
//   - a JSON-RPC error or a broken stream (passed to Finish) -> error_event.
//
// agent_busy, agent_idle, usage and status are not the mapper's: the session
// brackets the turn, and nullclaw's A2A stream carries no usage.
//
// A mapper is for one turn and one goroutine.
type mapper struct {
	em  event.Emitter
	ctx context.Context
	lim mapperLimits
	now func() time.Time

	taskID, contextID string
	state             a2a.TaskState

	block     *textBlock
	artifacts map[string]*artifactText
	textBytes int
	truncated bool

	tool      *pendingTool
	toolCalls int

	done    bool // a final event was handled
	errSent bool
	failure error
	emitErr error
}

type textBlock struct {
	id   string
	text strings.Builder
}

// artifactText is what has been emitted of one artifact, to tell a
// cumulative re-send from a replacement.
type artifactText struct{ text string }

type pendingTool struct {
	id, name string
	start    time.Time
}

// newMapper returns a mapper emitting to em. Events are emitted with a
// context that is never cancelled: the events that close a turn are written
// after its context has ended.
func newMapper(em event.Emitter, lim mapperLimits) *mapper {
	return &mapper{
		em:        em,
		ctx:       context.Background(),
		lim:       lim.withDefaults(),
		now:       time.Now,
		artifacts: map[string]*artifactText{},
	}
}

func newID(prefix string) string {
	var b [8]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func (m *mapper) emit(typ string, data any) error {
	if m.emitErr != nil {
		return m.emitErr
	}
	if err := m.em.Emit(m.ctx, typ, data); err != nil {
		m.emitErr = err
		return err
	}
	return nil
}

// Handle maps one event. It returns only an Emitter's error.
func (m *mapper) Handle(ev a2a.Event) error {
	if m.emitErr != nil {
		return m.emitErr
	}
	if m.done {
		return nil // nothing counts after the final event
	}
	switch ev.Kind {
	case a2a.KindTask:
		t := ev.Task
		m.taskID, m.contextID = t.ID, t.ContextID
		m.state = t.Status.State
		if t.Status.State.Terminal() || t.Status.State.Interrupted() {
			// A task that arrives finished (a server that does not stream):
			// its artifacts are the reply.
			for i := range t.Artifacts {
				a := &t.Artifacts[i]
				if err := m.artifactText(a.ArtifactID, a.Text(), false, true); err != nil {
					return err
				}
			}
			return m.terminal(t.Status)
		}
	case a2a.KindArtifactUpdate:
		a := ev.ArtifactUpdate
		if m.state == a2a.StateSubmitted {
			m.state = a2a.StateWorking // nullclaw moves to working without saying so
		}
		return m.artifactText(a.Artifact.ArtifactID, a.Artifact.Text(), a.Append, a.LastChunk)
	case a2a.KindStatusUpdate:
		s := ev.StatusUpdate
		m.state = s.Status.State
		if s.Status.State.Terminal() || s.Status.State.Interrupted() || s.Final {
			return m.terminal(s.Status)
		}
		if name, ok := strings.CutPrefix(s.Status.Message.Text(), toolHintPrefix); ok {
			return m.toolHint(name)
		}
	case a2a.KindMessage:
		msg := ev.Message
		if msg.Role == "agent" {
			if err := m.artifactText("message:"+msg.MessageID, msg.Text(), false, true); err != nil {
				return err
			}
		}
		m.state = a2a.StateCompleted
		m.done = true
		return m.closeAll(false, "")
	}
	return nil
}

// artifactText turns text of an artifact into deltas of the open block.
func (m *mapper) artifactText(artifactID, text string, appendTo, last bool) error {
	a := m.artifacts[artifactID]
	if a == nil {
		a = &artifactText{}
		m.artifacts[artifactID] = a
	}
	delta := text
	if !appendTo {
		if rest, ok := strings.CutPrefix(text, a.text); ok {
			delta = rest // a cumulative re-send: only what is new
		} else if a.text != "" {
			// A real replacement: what was streamed stays; the new version
			// is a new block.
			if err := m.finishBlock(); err != nil {
				return err
			}
			a.text = ""
		}
	}
	if err := m.text(a, delta); err != nil {
		return err
	}
	if last {
		return m.finishBlock()
	}
	return nil
}

func (m *mapper) text(a *artifactText, delta string) error {
	if delta == "" || m.truncated {
		return nil
	}
	if err := m.closeTool(false, ""); err != nil {
		return err
	}
	if m.block == nil {
		m.block = &textBlock{id: newID("msg_")}
	}
	room := m.lim.MaxTurnTextBytes - m.textBytes
	if len(delta) > room {
		cut := max(room, 0)
		for cut > 0 && !utf8.RuneStart(delta[cut]) {
			cut--
		}
		delta = delta[:cut] + truncationMarker
		m.truncated = true
	}
	m.textBytes += len(delta)
	m.block.text.WriteString(delta)
	if len(a.text) < m.lim.MaxTurnTextBytes {
		a.text += delta
	}
	return m.emit(event.MessageDelta, event.DeltaData{MessageID: m.block.id, Text: delta})
}

// finishBlock emits the complete text block after its deltas.
func (m *mapper) finishBlock() error {
	b := m.block
	if b == nil {
		return nil
	}
	m.block = nil
	if b.text.Len() == 0 {
		return nil
	}
	return m.emit(event.Message, event.MessageData{MessageID: b.id, Role: "assistant", Content: b.text.String()})
}

func (m *mapper) toolHint(name string) error {
	if err := m.finishBlock(); err != nil {
		return err
	}
	if err := m.closeTool(false, ""); err != nil {
		return err
	}
	if m.toolCalls >= m.lim.MaxToolCalls {
		return nil
	}
	m.toolCalls++
	name = a2a.CleanText(strings.TrimSpace(name), m.lim.MaxToolNameBytes)
	name = strings.NewReplacer("\n", " ", "\t", " ").Replace(name)
	if name == "" {
		name = "unknown"
	}
	m.tool = &pendingTool{id: newID("call_"), name: name, start: m.now()}
	return m.emit(event.ToolCall, event.ToolCallData{ID: m.tool.id, Name: name, Input: json.RawMessage(`{}`)})
}

// closeTool gives the pending tool call its result. nullclaw says nothing of
// the outcome, so a tool that ended before the next event is not an error;
// one cut off by a failed or cancelled turn is. DurationMs runs until the next
// event, an upper bound of the tool's own time.
func (m *mapper) closeTool(interrupted bool, why string) error {
	t := m.tool
	if t == nil {
		return nil
	}
	m.tool = nil
	out := toolResultUnreported
	if interrupted {
		out = "interrupted: " + why
	}
	return m.emit(event.ToolResult, event.ToolResultData{
		ID:         t.id,
		Name:       t.name,
		Output:     out,
		IsError:    interrupted,
		DurationMs: m.now().Sub(t.start).Milliseconds(),
	})
}

func (m *mapper) closeAll(interrupted bool, why string) error {
	if err := m.finishBlock(); err != nil {
		return err
	}
	return m.closeTool(interrupted, why)
}

func (m *mapper) terminal(s a2a.TaskStatus) error {
	m.done = true
	m.state = s.State
	reason := a2a.CleanText(strings.TrimSpace(s.Message.Text()), a2a.DefaultLimits.MaxErrorBytes)
	switch s.State {
	case a2a.StateCompleted:
		return m.closeAll(false, "")
	case a2a.StateCanceled:
		return m.closeAll(true, "task canceled")
	case a2a.StateFailed:
		msg := "nullclaw: the task failed"
		if reason != "" {
			msg += ": " + reason
		}
		return m.fail(errors.New(msg), "task failed")
	case a2a.StateRejected:
		msg := "nullclaw rejected the task"
		if reason != "" {
			msg += ": " + reason
		}
		return m.fail(errors.New(msg), "task rejected")
	case a2a.StateInputRequired, a2a.StateAuthRequired:
		msg := fmt.Sprintf("nullclaw stopped in state %s, which ExeClaw cannot answer", s.State)
		if reason != "" {
			msg += ": " + reason
		}
		return m.fail(errors.New(msg), string(s.State))
	default:
		// A final update in a non-final state breaks the protocol.
		return m.fail(fmt.Errorf("%w: final status update in state %q", a2a.ErrProtocol, s.State), "stream ended")
	}
}

// fail closes what is open and reports err once.
func (m *mapper) fail(err error, why string) error {
	if e := m.closeAll(true, why); e != nil {
		return e
	}
	if m.errSent {
		return nil
	}
	m.errSent = true
	m.failure = err
	return m.emit(event.Error, event.ErrorData{Message: userMessage(err)})
}

// userMessage words an error for the session log.
func userMessage(err error) string {
	var re *a2a.RPCError
	var he *a2a.HTTPError
	switch {
	case errors.As(err, &re):
		return fmt.Sprintf("nullclaw: %s (JSON-RPC error %d)", re.Message, re.Code)
	case errors.As(err, &he):
		return he.Error()
	case errors.Is(err, a2a.ErrStreamEnded):
		return "nullclaw: the stream ended before the task finished"
	case errors.Is(err, a2a.ErrIdle):
		return "nullclaw: no output for too long; the turn was abandoned"
	}
	return a2a.CleanText(err.Error(), a2a.DefaultLimits.MaxErrorBytes)
}

// Finish ends the turn after the stream: streamErr is what a2a.Client.Stream
// returned. Open text blocks get their message and a pending tool call its
// result; a failure not reported yet is reported with error_event, unless
// abandoned is set (the caller cut the turn short and says so itself). The
// returned error is an Emitter's.
func (m *mapper) Finish(streamErr error, abandoned bool) (outcome, error) {
	switch {
	case m.emitErr != nil:
	case streamErr != nil && !abandoned:
		_ = m.fail(streamErr, "turn failed")
	case streamErr != nil && abandoned:
		_ = m.closeAll(true, "turn canceled")
	case !m.done:
		_ = m.fail(a2a.ErrStreamEnded, "stream ended")
	default:
		_ = m.closeAll(m.state != a2a.StateCompleted, string(m.state))
	}
	out := outcome{TaskID: m.taskID, ContextID: m.contextID, State: m.state, Err: m.failure, Truncated: m.truncated}
	return out, m.emitErr
}

// lateReply emits the text of a finished task's artifacts as the turn's reply.
func (m *mapper) lateReply(t *a2a.Task) error {
	for i := range t.Artifacts {
		a := &t.Artifacts[i]
		if err := m.artifactText("late:"+a.ArtifactID, a.Text(), false, true); err != nil {
			return err
		}
	}
	return m.finishBlock()
}
