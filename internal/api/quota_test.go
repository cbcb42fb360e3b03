package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/testutil"
)

// A turn that writes more than the session's event-log quota is ended with
// an error_event saying so; everything stored before it is kept, in order,
// and the session refuses further turns with 409 instead of growing.
func TestEventLogQuota(t *testing.T) {
	big := llmtest.ToolCall{Name: "bash", Input: `{"command":"head -c 30000 /dev/zero | tr '\\0' x"}`}
	fake := llmtest.NewAnthropic(
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{big}},
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{big}},
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{big}},
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{big}},
		llmtest.Turn{Text: "done"},
	).Attach(t)
	h := apitest.New(t, apitest.Options{EventLogQuota: 64 << 10})
	s := h.AnthropicSession(fake, nil)
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "print a lot")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 1)

	events := st.Events()
	results, quotaErr := 0, -1
	for i, e := range events {
		if int64(i+1) != e.ID {
			t.Fatalf("event %d has id %d: the log has a gap (%s)", i+1, e.ID, testutil.Summary(events))
		}
		switch e.Type {
		case event.ToolResult:
			if quotaErr >= 0 {
				t.Errorf("a tool result was stored after the quota was reached")
			}
			results++
		case event.Error:
			if strings.Contains(e.Field("message"), "event log reached its limit of 64 KiB") {
				quotaErr = i
			}
		}
	}
	if quotaErr < 0 || results == 0 || results >= 4 {
		t.Fatalf("want some tool results, then the quota error: %s", testutil.Summary(events))
	}
	if events[len(events)-1].Type != event.Status && events[len(events)-1].Type != event.AgentIdle {
		t.Errorf("the turn did not end cleanly: %s", testutil.Summary(events))
	}
	h.WaitState(s.ID, "active")

	r := h.Do("POST", "/api/sessions/"+s.ID+"/input", map[string]string{"message": "more"}, nil)
	if r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "event log is full") {
		t.Fatalf("input to a full session: %d %s", r.Status, r.Body)
	}
	// The transcript is whole up to the limit.
	md := h.Must(http.StatusOK, "GET", "/api/sessions/"+s.ID+"/transcript", nil)
	if !strings.Contains(string(md.Body), "print a lot") || !strings.Contains(string(md.Body), "event log reached its limit") {
		t.Errorf("transcript: %.400s", md.Body)
	}
}
