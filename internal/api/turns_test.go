package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/apitest"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/testutil"
)

// Cancel while the model is streaming: the turn ends at once with agent_idle,
// the half-streamed text is closed with a message, and the session takes the
// next message.
func TestCancelWhileStreaming(t *testing.T) {
	gate := make(chan struct{})
	defer close(gate)
	fake := llmtest.NewAnthropic(
		llmtest.Turn{Text: "This answer will be cut off in the middle.", Gate: gate},
		llmtest.Turn{Text: "Second turn works."},
	).Attach(t)
	h := apitest.New(t, apitest.Options{})
	s := h.AnthropicSession(fake, nil)
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "talk")
	st.WaitType(t, apitest.Wait, event.MessageDelta, 1)

	// A second message while busy is refused.
	if r := h.Do("POST", "/api/sessions/"+s.ID+"/input", map[string]string{"message": "again"}, nil); r.Status != http.StatusConflict {
		t.Fatalf("input while busy: %d %s", r.Status, r.Body)
	}
	var c struct{ OK, Cancelled bool }
	h.Must(http.StatusOK, "POST", "/api/sessions/"+s.ID+"/cancel", nil).JSON(t, &c)
	if !c.OK || !c.Cancelled {
		t.Fatalf("cancel answered %+v", c)
	}
	st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	events := st.Events()
	msg := indexOf(events, event.Message, 0)
	errEv := indexOf(events, event.Error, 0)
	if msg < 0 || errEv < 0 || !strings.Contains(events[errEv].Field("message"), "cancelled") {
		t.Fatalf("after cancel: %v", types(events))
	}
	h.WaitState(s.ID, "active")

	h.Input(s.ID, "again")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 2)
	if !strings.Contains(string(st.Events()[indexOf(st.Events(), event.Message, msg+1)].Data), "Second turn works.") {
		t.Fatalf("second turn: %s", testutil.Summary(st.Events()))
	}
	// The model was told the first turn was cut off.
	reqs := fake.Requests()
	if !strings.Contains(string(reqs[len(reqs)-1].Body), "ended early") {
		t.Errorf("the next request does not mention the interrupted turn")
	}
}

// Cancel while a tool runs kills the command and everything it started.
func TestCancelKillsRunningCommand(t *testing.T) {
	// Distinctive arguments find the processes on the host: inside the
	// sandbox's PID namespace their numbers mean nothing out here.
	fake := llmtest.NewAnthropic(llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash",
		Input: `{"command":"sleep 3131 & sleep 3132"}`}}}).Attach(t)
	h := apitest.New(t, apitest.Options{})
	s := h.AnthropicSession(fake, nil)
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "sleep")
	st.WaitType(t, apitest.Wait, event.ToolCall, 1)
	deadline := time.Now().Add(apitest.Wait)
	for len(testutil.ProcessesWithArgs("sleep", "3132")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the command never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.Must(http.StatusOK, "POST", "/api/sessions/"+s.ID+"/cancel", nil)
	st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	res := st.WaitType(t, apitest.Wait, event.ToolResult, 1)
	if res.Field("isError") != "true" {
		t.Errorf("cancelled command's result: %s", res.Data)
	}
	for len(testutil.ProcessesWithArgs("sleep", "3131"))+len(testutil.ProcessesWithArgs("sleep", "3132")) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the command or its background child survived the cancel")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Provider failures become readable error events; the turn ends and the
// session stays usable.
func TestProviderErrors(t *testing.T) {
	cases := []struct {
		name   string
		reply  llmtest.ErrorReply
		expect string
	}{
		{"401", llmtest.ErrorReply{Status: 401, Message: "invalid x-api-key"}, "401"},
		{"429", llmtest.ErrorReply{Status: 429, Message: "rate limited"}, "429"},
		{"500", llmtest.ErrorReply{Status: 500, Message: "internal server error"}, "500"},
		{"529", llmtest.ErrorReply{Status: 529, Type: "overloaded_error", Message: "Overloaded"}, "529"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake := llmtest.NewAnthropic(llmtest.Turn{Error: &c.reply}, llmtest.Turn{Text: "Recovered."}).Attach(t)
			h := apitest.New(t, apitest.Options{})
			s := h.AnthropicSession(fake, nil)
			st := h.Stream(s.ID, "")
			h.Input(s.ID, "hello")
			st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
			e := st.WaitType(t, apitest.Wait, event.Error, 1)
			if msg := e.Field("message"); !strings.Contains(msg, c.expect) || !strings.Contains(msg, c.reply.Message) {
				t.Errorf("error_event %q should name the status %s and say %q", msg, c.expect, c.reply.Message)
			}
			h.WaitState(s.ID, "active")
			h.Input(s.ID, "again")
			st.WaitType(t, apitest.Wait, event.AgentIdle, 2)
			st.WaitFor(t, apitest.Wait, "recovered message", func(e testutil.SSEEvent) bool {
				return e.Type == event.Message && e.Field("content") == "Recovered."
			})
		})
	}
}

// The provider going away mid-stream, and a network error, are reported too.
func TestProviderStreamFailures(t *testing.T) {
	fake := llmtest.NewOpenAI(
		llmtest.Turn{Text: "Starting to answer and then", Hangup: true},
		llmtest.Turn{Text: "Fine now."},
	).Attach(t)
	h := apitest.New(t, apitest.Options{})
	s := h.Create(map[string]any{"provider": "openai", "apiKey": "sk-x", "model": "gpt-4o", "baseUrl": fake.BaseURL()})
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "go")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	if e := st.WaitType(t, apitest.Wait, event.Error, 1); e.Field("message") == "" {
		t.Fatal("empty error message")
	}
	h.Input(s.ID, "again")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 2)

	// Nothing listens on this port: a refused connection.
	dead := h.Create(map[string]any{"provider": "openai-compatible", "model": "m", "baseUrl": "http://127.0.0.1:1/v1"})
	st2 := h.Stream(dead.ID, "")
	h.Input(dead.ID, "hello?")
	st2.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	if msg := st2.WaitType(t, apitest.Wait, event.Error, 1).Field("message"); !strings.Contains(msg, "refused") {
		t.Errorf("network error message: %q", msg)
	}
}

// With retries on, a 429 that asks for a short wait is retried and the turn
// succeeds; the user sees that it happened.
func TestProviderRetry(t *testing.T) {
	fake := llmtest.NewAnthropic(
		llmtest.Turn{Error: &llmtest.ErrorReply{Status: 429, Message: "slow down", Header: http.Header{"Retry-After-Ms": {"10"}}}},
		llmtest.Turn{Text: "After the retry."},
	).Attach(t)
	h := apitest.New(t, apitest.Options{LLMRetries: 1})
	s := h.AnthropicSession(fake, nil)
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "hi")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	if msg := st.WaitType(t, apitest.Wait, event.Error, 1).Field("message"); !strings.Contains(msg, "retrying") {
		t.Errorf("retry notice: %q", msg)
	}
	st.WaitFor(t, apitest.Wait, "answer after retry", func(e testutil.SSEEvent) bool {
		return e.Type == event.Message && e.Field("content") == "After the retry."
	})
}

// Tool calls the agent does not know, or with broken input, become error
// results and the loop goes on to the model's next answer.
func TestUnknownToolAndBadInput(t *testing.T) {
	fake := llmtest.NewAnthropic(
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{
			{Name: "teleport", Input: `{"where":"mars"}`},
			{Name: "bash", Input: `{"command": 42}`},
			{Name: "read_file", Input: `{"path":"missing.txt"}`},
		}},
		llmtest.Turn{Text: "I see the errors."},
	).Attach(t)
	h := apitest.New(t, apitest.Options{})
	s := h.AnthropicSession(fake, nil)
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "try things")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	var results []event.ToolResultData
	for _, e := range st.Events() {
		if e.Type == event.ToolResult {
			var d event.ToolResultData
			json.Unmarshal(e.Data, &d)
			results = append(results, d)
		}
	}
	if len(results) != 3 {
		t.Fatalf("want 3 tool results, got %d: %s", len(results), testutil.Summary(st.Events()))
	}
	for _, r := range results {
		if !r.IsError || r.Output == "" {
			t.Errorf("result for %s should be an error with a message: %+v", r.Name, r)
		}
	}
	st.WaitFor(t, apitest.Wait, "final answer", func(e testutil.SSEEvent) bool {
		return e.Type == event.Message && e.Field("content") == "I see the errors."
	})
}

// The per-turn step limit stops a model that never stops calling tools.
func TestStepLimit(t *testing.T) {
	loop := llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"true"}`}}}
	fake := llmtest.NewAnthropic(loop, loop, loop).Attach(t)
	h := apitest.New(t, apitest.Options{MaxSteps: 3})
	s := h.AnthropicSession(fake, nil)
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "loop forever")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	if msg := st.WaitType(t, apitest.Wait, event.Error, 1).Field("message"); !strings.Contains(msg, "limit") {
		t.Errorf("step limit message: %q", msg)
	}
	if n := len(fake.Requests()); n != 3 {
		t.Errorf("model was called %d times, want 3", n)
	}
}
