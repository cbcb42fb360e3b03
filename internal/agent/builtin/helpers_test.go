package builtin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/process/processtest"
)

// recEvent is one event as the session store would keep it: type and JSON.
type recEvent struct {
	Type string
	Data json.RawMessage
}

// recordingSink is an in-memory Sink. After freeze (called when Turn has
// returned) anything emitted is a late event, reported at cleanup.
type recordingSink struct {
	t *testing.T

	mu     sync.Mutex
	events []recEvent
	saved  []json.RawMessage
	total  event.UsageTotals
	frozen bool
	late   []string

	failEmit  error            // returned by Emit when set
	failUsage error            // returned by AddUsage when set
	onEmit    func(typ string) // called after each recorded event, if set
}

func newSink(t *testing.T) *recordingSink {
	s := &recordingSink{t: t}
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, l := range s.late {
			t.Errorf("event after Turn returned: %s", l)
		}
	})
	return s
}

func (s *recordingSink) Emit(_ context.Context, typ string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		s.t.Errorf("Emit %s: data does not marshal: %v", typ, err)
		return err
	}
	if !utf8.Valid(b) {
		s.t.Errorf("Emit %s: data is not valid UTF-8", typ)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.frozen {
		s.late = append(s.late, fmt.Sprintf("%s %s", typ, b))
	}
	if s.failEmit != nil {
		return s.failEmit
	}
	s.events = append(s.events, recEvent{typ, b})
	if hook := s.onEmit; hook != nil {
		s.mu.Unlock()
		hook(typ)
		s.mu.Lock()
	}
	return nil
}

func (s *recordingSink) AddUsage(_ context.Context, u event.UsageTotals) (event.UsageTotals, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failUsage != nil {
		return event.UsageTotals{}, s.failUsage
	}
	s.total.InputTokens += u.InputTokens
	s.total.OutputTokens += u.OutputTokens
	s.total.CostUSD += u.CostUSD
	return s.total, nil
}

func (s *recordingSink) SaveMessages(_ context.Context, msgs []json.RawMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		if !json.Valid(m) {
			s.t.Errorf("SaveMessages: invalid JSON %s", m)
		}
		s.saved = append(s.saved, append(json.RawMessage(nil), m...))
	}
	return nil
}

func (s *recordingSink) freeze() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frozen = true
}

func (s *recordingSink) all() []recEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recEvent(nil), s.events...)
}

func (s *recordingSink) history() []json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]json.RawMessage(nil), s.saved...)
}

// types lists the event types in order.
func (s *recordingSink) types() []string {
	var out []string
	for _, e := range s.all() {
		out = append(out, e.Type)
	}
	return out
}

// decodeAll decodes the data of every event of type typ into T.
func decodeAll[T any](t *testing.T, s *recordingSink, typ string) []T {
	t.Helper()
	var out []T
	for _, e := range s.all() {
		if e.Type != typ {
			continue
		}
		var v T
		if err := json.Unmarshal(e.Data, &v); err != nil {
			t.Fatalf("decode %s %s: %v", typ, e.Data, err)
		}
		out = append(out, v)
	}
	return out
}

func errorMessages(t *testing.T, s *recordingSink) []string {
	t.Helper()
	var out []string
	for _, e := range decodeAll[event.ErrorData](t, s, event.Error) {
		out = append(out, e.Message)
	}
	return out
}

// runTurn runs one turn and freezes the sink once it returns.
func runTurn(t *testing.T, ctx context.Context, r *Runner, ws agent.Workspace, text string, s *recordingSink) error {
	t.Helper()
	err := r.Turn(ctx, ws, agent.Environment{Workspace: ws.Workspace()}, text, s)
	s.freeze()
	return err
}

// checkWellFormed checks the stream invariants every turn must keep: each
// run of deltas for a message id is followed by exactly one complete event
// with that id and the joined text, and nothing for it afterwards; tool calls
// have unique ids and exactly one later result each; usage totals add up.
func checkWellFormed(t *testing.T, s *recordingSink) {
	t.Helper()
	type msg struct {
		deltas   strings.Builder
		kind     string // "message" or "thinking"
		complete int
	}
	msgs := map[string]*msg{}
	calls := map[string]int{} // tool call id -> results seen
	var total event.UsageTotals
	for i, e := range s.all() {
		switch e.Type {
		case event.MessageDelta, event.ThinkingDelta:
			var d event.DeltaData
			mustUnmarshal(t, e.Data, &d)
			kind := event.Message
			if e.Type == event.ThinkingDelta {
				kind = event.Thinking
			}
			m := msgs[d.MessageID]
			if m == nil {
				m = &msg{kind: kind}
				msgs[d.MessageID] = m
			}
			if m.kind != kind || m.complete > 0 {
				t.Errorf("event %d: %s for %s after its %s (or of another kind)", i, e.Type, d.MessageID, m.kind)
			}
			if d.Text == "" {
				t.Errorf("event %d: empty delta", i)
			}
			m.deltas.WriteString(d.Text)
		case event.Message, event.Thinking:
			var d event.MessageData
			mustUnmarshal(t, e.Data, &d)
			m := msgs[d.MessageID]
			switch {
			case m == nil:
				t.Errorf("event %d: %s %s with no deltas before it", i, e.Type, d.MessageID)
				continue
			case m.kind != e.Type:
				t.Errorf("event %d: %s closes a %s run", i, e.Type, m.kind)
			case d.Role != "assistant":
				t.Errorf("event %d: role %q", i, d.Role)
			case d.Content != m.deltas.String():
				t.Errorf("event %d: %s content %q, deltas joined %q", i, e.Type, d.Content, m.deltas.String())
			}
			m.complete++
		case event.ToolCall:
			var d event.ToolCallData
			mustUnmarshal(t, e.Data, &d)
			if _, dup := calls[d.ID]; dup || d.ID == "" {
				t.Errorf("event %d: tool call id %q empty or repeated", i, d.ID)
			}
			if !json.Valid(d.Input) || !strings.HasPrefix(string(d.Input), "{") {
				t.Errorf("event %d: tool input %s is not a JSON object", i, d.Input)
			}
			calls[d.ID] = 0
		case event.ToolResult:
			var d event.ToolResultData
			mustUnmarshal(t, e.Data, &d)
			n, ok := calls[d.ID]
			if !ok {
				t.Errorf("event %d: tool result %q without an earlier call", i, d.ID)
			}
			calls[d.ID] = n + 1
		case event.Usage:
			var d event.UsageData
			mustUnmarshal(t, e.Data, &d)
			total.InputTokens += d.InputTokens
			total.OutputTokens += d.OutputTokens
			if d.Total.InputTokens != total.InputTokens || d.Total.OutputTokens != total.OutputTokens {
				t.Errorf("event %d: usage total %+v, running sum %+v", i, d.Total, total)
			}
		case event.Error:
		default:
			t.Errorf("event %d: unexpected type %q from the agent", i, e.Type)
		}
	}
	for id, m := range msgs {
		if m.complete != 1 {
			t.Errorf("message %s (%s) has %d complete events, want 1", id, m.kind, m.complete)
		}
	}
	for id, n := range calls {
		if n != 1 {
			t.Errorf("tool call %s has %d results, want 1", id, n)
		}
	}
}

func mustUnmarshal(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
}

// joined is the content of every complete event of typ, in order.
func joined(t *testing.T, s *recordingSink, typ string) string {
	t.Helper()
	var b strings.Builder
	for _, m := range decodeAll[event.MessageData](t, s, typ) {
		b.WriteString(m.Content)
	}
	return b.String()
}

func startSandbox(t *testing.T) sandbox.Sandbox { return processtest.Start(t, "agent-test") }

const testKey = "sk-test-0123456789abcdefSECRET"

// newRunner builds a runner for a fake provider at baseURL.
func newRunner(t *testing.T, provider, model, baseURL string, cfg Config, history []json.RawMessage) *Runner {
	t.Helper()
	cfg.LLM = llm.Config{Provider: provider, Model: model, APIKey: llm.NewSecret(testKey), BaseURL: baseURL}
	r, err := New(t.Context(), cfg, history)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// testCtx bounds a test's turns so a hang fails instead of stalling.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var errSinkBroken = errors.New("store is gone")
