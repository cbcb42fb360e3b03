package claudecode

import (
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/agent/agenttest"
	"github.com/execlaw/execlaw/internal/event"
)

// summary is events without the deltas, compactly: "thinking:…",
// "message:…", "tool_call:Bash", "tool_result:Bash=out" ("Bash!=out" for an
// error), "error:…". Deltas are checked to add up to the message they lead
// to; usage events, counted by the proxy at its own pace, are left out.
func summary(t *testing.T, evs []agenttest.Event) []string {
	t.Helper()
	var out []string
	deltas := map[string]*strings.Builder{}
	for _, e := range evs {
		str := func(k string) string { v, _ := e.Data[k].(string); return v }
		switch e.Type {
		case event.MessageDelta, event.ThinkingDelta:
			b := deltas[str("messageId")]
			if b == nil {
				b = &strings.Builder{}
				deltas[str("messageId")] = b
			}
			b.WriteString(str("text"))
		case event.Message, event.Thinking:
			if b := deltas[str("messageId")]; b != nil && b.String() != str("content") {
				t.Errorf("%s %q: its deltas say %q", e.Type, str("content"), b.String())
			}
			if e.Data["role"] != "assistant" {
				t.Errorf("%s %q: role %v", e.Type, str("content"), e.Data["role"])
			}
			out = append(out, e.Type+":"+str("content"))
		case event.ToolCall:
			out = append(out, e.Type+":"+str("name"))
		case event.ToolResult:
			mark := ""
			if e.Data["isError"] == true {
				mark = "!"
			}
			out = append(out, e.Type+":"+str("name")+mark+"="+str("output"))
		case event.Error:
			out = append(out, "error:"+str("message"))
		case event.Usage:
		default:
			out = append(out, e.Type)
		}
	}
	return out
}

// count counts the events of one type.
func count(evs []agenttest.Event, typ string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}
