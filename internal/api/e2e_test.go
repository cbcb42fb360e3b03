package api_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/apitest"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/testutil"
)

// A whole turn over HTTP: the model runs a bash command that writes a file,
// gets the real output back, and answers; the stream shows every step.
func TestTurnEndToEnd(t *testing.T) {
	for _, provider := range []string{"anthropic", "openai"} {
		t.Run(provider, func(t *testing.T) {
			var fake *llmtest.Server
			if provider == "anthropic" {
				fake = llmtest.NewAnthropic().Attach(t)
			} else {
				fake = llmtest.NewOpenAI().Attach(t)
			}
			fake.Enqueue(
				llmtest.Turn{
					Text: "I'll create the file.",
					ToolCalls: []llmtest.ToolCall{{Name: "bash",
						Input: `{"command":"printf 'hello from the sandbox\\n' > hello.txt && cat hello.txt && echo exit-code-check >&2"}`}},
					InputTokens: 100, OutputTokens: 20,
				},
				llmtest.Turn{Text: "Done: **hello.txt** is written.", InputTokens: 150, OutputTokens: 10},
			)
			h := apitest.New(t, apitest.Options{})
			model := "claude-sonnet-4-20250514"
			if provider == "openai" {
				model = "gpt-4o"
			}
			s := h.Create(map[string]any{"provider": provider, "apiKey": "sk-test-key", "model": model, "baseUrl": fake.BaseURL()})
			if s.State != "creating" || s.Sandbox != "process" || s.Isolated {
				t.Fatalf("new session: %+v", s)
			}
			st := h.Stream(s.ID, "")
			h.Input(s.ID, "Write hello.txt please")
			st.WaitType(t, apitest.Wait, event.AgentIdle, 1)

			events := st.Events()
			for i, e := range events {
				if e.ID != int64(i+1) {
					t.Fatalf("event %d has id %d; ids must count from 1 without gaps: %s", i, e.ID, testutil.Summary(events))
				}
			}
			// The contract's order: the message, the turn starting, the tool
			// call and its result, the streamed answer, usage, the turn ending.
			pos := 0
			for _, typ := range []string{event.UserMessage, event.AgentBusy, event.MessageDelta, event.Message,
				event.ToolCall, event.ToolResult, event.Usage, event.MessageDelta, event.Message, event.Usage, event.AgentIdle} {
				i := indexOf(events, typ, pos)
				if i < 0 {
					t.Fatalf("no %s after position %d in %v", typ, pos, types(events))
				}
				pos = i + 1
			}

			call := events[indexOf(events, event.ToolCall, 0)]
			var tc event.ToolCallData
			json.Unmarshal(call.Data, &tc)
			if tc.Name != "bash" || !strings.Contains(string(tc.Input), "hello.txt") {
				t.Errorf("tool_call = %s", call.Data)
			}
			var tr event.ToolResultData
			json.Unmarshal(events[indexOf(events, event.ToolResult, 0)].Data, &tr)
			if tr.ID != tc.ID || tr.IsError || tr.ExitCode == nil || *tr.ExitCode != 0 ||
				!strings.Contains(tr.Output, "hello from the sandbox") || !strings.Contains(tr.Output, "exit-code-check") {
				t.Errorf("tool_result = %+v", tr)
			}

			// Deltas join to the complete message.
			var final event.MessageData
			lastMsg := -1
			for i, e := range events {
				if e.Type == event.Message {
					lastMsg = i
				}
			}
			json.Unmarshal(events[lastMsg].Data, &final)
			var joined strings.Builder
			for _, e := range events {
				if e.Type == event.MessageDelta && e.Field("messageId") == final.MessageID {
					joined.WriteString(e.Field("text"))
				}
			}
			if final.Content != "Done: **hello.txt** is written." || joined.String() != final.Content {
				t.Errorf("final message %q, deltas joined %q", final.Content, joined.String())
			}

			var usage event.UsageData
			json.Unmarshal(events[indexOf(events, event.Usage, pos-3)].Data, &usage)
			if usage.Total.InputTokens < 250 || usage.Total.OutputTokens != 30 {
				t.Errorf("usage total = %+v, want 250+ in / 30 out", usage.Total)
			}

			// The file is really in the sandbox's workspace.
			got, err := os.ReadFile(filepath.Join(h.Workspace(s.ID), "hello.txt"))
			if err != nil || string(got) != "hello from the sandbox\n" {
				t.Fatalf("workspace file: %q, %v", got, err)
			}
			// The model got the tool's real output back in the second request.
			reqs := fake.Requests()
			if len(reqs) != 2 || !strings.Contains(string(reqs[1].Body), "hello from the sandbox") {
				t.Fatalf("second model request does not carry the tool result: %d requests", len(reqs))
			}

			v := h.WaitState(s.ID, "active")
			if v.Usage.OutputTokens != 30 || v.LastEventID < events[len(events)-1].ID {
				t.Errorf("status after turn: %+v", v)
			}
		})
	}
}

// A client that connects while the answer is streaming sees the text so far
// at once, then the rest live.
func TestStreamJoinMidAnswer(t *testing.T) {
	gate := make(chan struct{})
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "First part, then the rest of the answer.", Gate: gate}).Attach(t)
	h := apitest.New(t, apitest.Options{})
	s := h.AnthropicSession(fake, nil)
	first := h.Stream(s.ID, "")
	h.Input(s.ID, "hi")
	d := first.WaitType(t, apitest.Wait, event.MessageDelta, 1)

	late := h.Stream(s.ID, "")
	got := late.WaitType(t, apitest.Wait, event.MessageDelta, 1)
	if got.ID != d.ID || got.Field("text") != d.Field("text") {
		t.Fatalf("late client got %d %s, want %d %s", got.ID, got.Data, d.ID, d.Data)
	}
	if late.Events()[len(late.Events())-1].Type == event.AgentIdle {
		t.Fatal("turn finished before the gate opened")
	}
	close(gate)
	idle := late.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	first.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	// Compare up to the end of the turn: later events may reach one client first.
	a, b := first.Events()[:idle.ID], late.Events()[:idle.ID]
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("clients saw different streams:\n%s\n%s", testutil.Summary(a), testutil.Summary(b))
	}
}

// After a restart, Last-Event-ID: 0 replays exactly what was sent live; the
// session, whose sandbox did not survive, is paused to resume cold on its
// files (and, with keys in memory only, needs its key again); ending it
// then removes them.
func TestRestartReplaysIdenticalSequence(t *testing.T) {
	fake := llmtest.NewAnthropic(
		llmtest.Turn{Thinking: "Let me list the files.", Text: "Listing.", ToolCalls: []llmtest.ToolCall{{Name: "list_files", Input: `{}`}}},
		llmtest.Turn{Text: "The workspace is empty."},
	).Attach(t)
	h := apitest.New(t, apitest.Options{})
	s := h.AnthropicSession(fake, nil)
	live := h.Stream(s.ID, "")
	h.Input(s.ID, "what is here?")
	live.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	before := live.Events()
	if indexOf(before, event.Thinking, 0) < 0 || indexOf(before, event.ThinkingDelta, 0) < 0 {
		t.Fatalf("no thinking events: %v", types(before))
	}
	live.Close()

	h.Crash()
	h.Start()

	replay := h.Stream(s.ID, "0")
	replay.WaitEnd(t, apitest.Wait)
	after := replay.Events()
	if len(after) < len(before) || !reflect.DeepEqual(after[:len(before)], before) {
		t.Fatalf("replay differs from the live stream:\nlive:   %s\nreplay: %s", testutil.Summary(before), testutil.Summary(after))
	}
	tail := after[len(before):]
	if p := indexOf(tail, event.Paused, 0); p < 0 || tail[p].Field("kind") != event.ResumeCold || !strings.Contains(tail[p].Field("reason"), "killed") {
		t.Fatalf("after restart the log should say the session paused cold: %s", testutil.Summary(tail))
	}
	v := h.WaitState(s.ID, "paused")
	if v.EndedAt != nil || v.ResumeKind != event.ResumeCold || !v.KeyNeeded {
		t.Errorf("paused session after a crash: %+v", v)
	}
	// Resuming from the middle gives exactly the rest.
	mid := before[len(before)/2].ID
	rest := h.Stream(s.ID, "")
	rest.Close()
	part := testutil.OpenSSE(t, http.DefaultClient, h.URL("/api/sessions/"+s.ID+"/stream?after="+strconv.FormatInt(mid, 10)), h.AuthHeader())
	part.WaitEnd(t, apitest.Wait)
	if !reflect.DeepEqual(part.Events(), after[mid:]) {
		t.Fatalf("?after=%d gave %s, want %s", mid, testutil.Summary(part.Events()), testutil.Summary(after[mid:]))
	}
	// Its files wait for it; ending it removes them.
	if _, err := os.Stat(filepath.Join(h.DataDir, "sandboxes", s.ID, "workspace")); err != nil {
		t.Errorf("the paused session's workspace: %v", err)
	}
	h.Must(http.StatusOK, "DELETE", "/api/sessions/"+s.ID, nil)
	if v := h.WaitState(s.ID, "stopped"); v.EndedAt == nil {
		t.Errorf("ended session has no endedAt: %+v", v)
	}
	if entries, _ := os.ReadDir(filepath.Join(h.DataDir, "sandboxes")); len(entries) != 0 {
		t.Errorf("sandbox directories left after the end: %d", len(entries))
	}
}

// types lists the event types in order.
func types(events []testutil.SSEEvent) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Type
	}
	return out
}

// indexOf finds the first event of a type at or after from; -1 if none.
func indexOf(events []testutil.SSEEvent, typ string, from int) int {
	for i := from; i < len(events); i++ {
		if events[i].Type == typ {
			return i
		}
	}
	return -1
}
