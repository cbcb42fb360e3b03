package nullclaw

import (
	"fmt"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/agent/agenttest"
	"github.com/execlaw/execlaw/internal/event"
)

// summary renders events compactly: "message_delta:Hel", "tool_call:shell"...
func summary(evs []agenttest.Event) []string {
	var out []string
	for _, e := range evs {
		s := e.Type
		switch e.Type {
		case event.MessageDelta:
			s += ":" + e.Data["text"].(string)
		case event.Message:
			s += ":" + e.Data["content"].(string)
		case event.ToolCall, event.ToolResult:
			s += ":" + e.Data["name"].(string)
			if e.Type == event.ToolResult && e.Data["isError"] == true {
				s += "!"
			}
		case event.Error:
			s += ":" + e.Data["message"].(string)
		}
		out = append(out, s)
	}
	return out
}

// checkPairing asserts the log's invariants: every run of deltas of a
// message id ends with its message holding exactly their concatenation, and
// every tool_call has one tool_result after it.
func checkPairing(t *testing.T, evs []agenttest.Event) {
	t.Helper()
	deltas := map[string]*strings.Builder{}
	closed := map[string]bool{}
	calls := map[string]bool{}
	for i, e := range evs {
		switch e.Type {
		case event.MessageDelta:
			id := e.Data["messageId"].(string)
			if closed[id] {
				t.Errorf("event %d: delta after message %s", i, id)
			}
			if deltas[id] == nil {
				deltas[id] = &strings.Builder{}
			}
			deltas[id].WriteString(e.Data["text"].(string))
		case event.Message:
			id := e.Data["messageId"].(string)
			if e.Data["role"] != "assistant" {
				t.Errorf("event %d: role %v", i, e.Data["role"])
			}
			if deltas[id] == nil || deltas[id].String() != e.Data["content"] {
				t.Errorf("event %d: message %s content %q does not match its deltas", i, id, e.Data["content"])
			}
			closed[id] = true
		case event.ToolCall:
			id := e.Data["id"].(string)
			if _, ok := calls[id]; ok {
				t.Errorf("event %d: tool call id %s reused", i, id)
			}
			calls[id] = false
			if in, ok := e.Data["input"].(map[string]any); !ok || in == nil {
				t.Errorf("event %d: tool call input %v is not an object", i, e.Data["input"])
			}
		case event.ToolResult:
			id := e.Data["id"].(string)
			done, ok := calls[id]
			if !ok || done {
				t.Errorf("event %d: tool result %s without an open call", i, id)
			}
			calls[id] = true
		}
	}
	for id := range deltas {
		if !closed[id] {
			t.Errorf("deltas of %s never got their message", id)
		}
	}
	for id, done := range calls {
		if !done {
			t.Errorf("tool call %s never got a result", id)
		}
	}
}

func eqStrings(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n got  %s\n want %s", fmt.Sprintf("%q", got), fmt.Sprintf("%q", want))
	}
}
