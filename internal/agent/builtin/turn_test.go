package builtin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"charm.land/fantasy"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/testutil"
)

type fake struct {
	provider, model string
	new             func(...llmtest.Turn) *llmtest.Server
}

var fakes = []fake{
	{llm.Anthropic, "claude-sonnet-4-20250514", llmtest.NewAnthropic},
	{llm.OpenAI, "gpt-4o", llmtest.NewOpenAI},
}

func bashCall(cmd string) llmtest.ToolCall {
	b, _ := json.Marshal(bashInput{Command: cmd})
	return llmtest.ToolCall{Name: "bash", Input: string(b)}
}

// requestRoles lists the roles of a chat request's messages (system excluded).
func requestRoles(t *testing.T, r llmtest.Request) []string {
	t.Helper()
	msgs, _ := r.JSON["messages"].([]any)
	var roles []string
	for _, m := range msgs {
		if role, _ := m.(map[string]any)["role"].(string); role != "system" {
			roles = append(roles, role)
		}
	}
	return roles
}

// TestHistoryRoundTrip saves a turn with a tool call, restores a new runner
// from the saved JSON, and checks the next turn sends the whole conversation.
func TestHistoryRoundTrip(t *testing.T) {
	sb := startSandbox(t)
	for _, f := range fakes {
		t.Run(f.provider, func(t *testing.T) {
			srv := f.new(
				llmtest.Turn{Thinking: "Let me run it.", Signature: "sig-round-trip", Text: "Running.", ToolCalls: []llmtest.ToolCall{bashCall("echo hi-from-tool")}},
				llmtest.Turn{Text: "It printed hi."},
				llmtest.Turn{Text: "Second answer."},
			).Attach(t)
			r := newRunner(t, f.provider, f.model, srv.BaseURL(), Config{ThinkingBudget: 1024}, nil)
			s := newSink(t)
			if err := runTurn(t, testCtx(t), r, sb, "first question", s); err != nil {
				t.Fatal(err)
			}
			checkWellFormed(t, s)
			if got := joined(t, s, event.Message); got != "Running.It printed hi." {
				t.Errorf("messages %q", got)
			}
			if f.provider == llm.Anthropic && joined(t, s, event.Thinking) != "Let me run it." {
				t.Errorf("thinking %q", joined(t, s, event.Thinking))
			}
			res := decodeAll[event.ToolResultData](t, s, event.ToolResult)
			if len(res) != 1 || res[0].Output != "hi-from-tool\n" || res[0].IsError || res[0].ExitCode == nil || *res[0].ExitCode != 0 {
				t.Fatalf("tool results %+v", res)
			}

			hist := s.history()
			if roles := historyRoles(t, hist); !slices.Equal(roles, []string{"user", "assistant", "tool", "assistant"}) {
				t.Fatalf("history roles %q", roles)
			}
			r2 := newRunner(t, f.provider, f.model, srv.BaseURL(), Config{ThinkingBudget: 1024}, hist)
			if len(r2.history) != len(hist) {
				t.Fatalf("restored %d messages of %d", len(r2.history), len(hist))
			}
			for i, m := range r2.history {
				b, err := json.Marshal(m)
				if err != nil || !sameJSON(t, b, string(hist[i])) {
					t.Errorf("message %d does not round-trip:\n%s\n%s", i, hist[i], b)
				}
			}
			if _, err := New(t.Context(), r2.cfg, []json.RawMessage{json.RawMessage(`{"role":`)}); err == nil {
				t.Error("New accepted a broken stored message")
			}

			s2 := newSink(t)
			if err := runTurn(t, testCtx(t), r2, sb, "second question", s2); err != nil {
				t.Fatal(err)
			}
			if got := joined(t, s2, event.Message); got != "Second answer." {
				t.Errorf("second turn messages %q", got)
			}
			reqs := srv.Requests()
			if len(reqs) != 3 {
				t.Fatalf("%d requests", len(reqs))
			}
			body := string(reqs[2].Body)
			for _, want := range []string{"first question", "echo hi-from-tool", "hi-from-tool\\n", "It printed hi.", "second question"} {
				if !strings.Contains(body, want) {
					t.Errorf("second turn's request lacks %q: %s", want, body)
				}
			}
			want := []string{"user", "assistant", "user", "assistant", "user"} // Anthropic: tool results are user turns
			if f.provider == llm.OpenAI {
				want = []string{"user", "assistant", "tool", "assistant", "user"}
			}
			if got := requestRoles(t, reqs[2]); !slices.Equal(got, want) {
				t.Errorf("second turn's request roles %q, want %q", got, want)
			}
			if f.provider == llm.Anthropic && (!strings.Contains(body, `"thinking":"Let me run it."`) ||
				!strings.Contains(body, `"signature":"sig-round-trip"`)) {
				t.Errorf("restored thinking block not sent: %s", body)
			}
		})
	}
}

// TestCancelMidStream cancels a turn while the model is half-way through its
// text: the partial text is closed with a message event, the cancellation is
// reported, and the history ends with an assistant note.
func TestCancelMidStream(t *testing.T) {
	sb := startSandbox(t)
	for _, f := range fakes {
		t.Run(f.provider, func(t *testing.T) {
			gate := make(chan struct{})
			defer close(gate)
			srv := f.new(llmtest.Turn{Text: "Hello there, this answer never finishes.", Gate: gate}).Attach(t)
			r := newRunner(t, f.provider, f.model, srv.BaseURL(), Config{MaxRetries: 3, RetryBase: time.Millisecond}, nil)
			s := newSink(t)
			ctx, cancel := context.WithCancelCause(testCtx(t))
			done := make(chan error, 1)
			go func() { done <- runTurn(t, ctx, r, sb, "say hello", s) }()
			testutil.Poll(t, "the first delta", 20*time.Second, func() bool { return slices.Contains(s.types(), event.MessageDelta) })
			cancel(agent.ErrCancelled)
			if err := <-done; err != nil {
				t.Fatalf("Turn: %v", err)
			}
			checkWellFormed(t, s)
			partial := joined(t, s, event.Message)
			if partial == "" || !strings.HasPrefix("Hello there, this answer never finishes.", partial) || len(partial) >= 40 {
				t.Errorf("closing message %q, want a proper prefix of the text", partial)
			}
			if msgs := errorMessages(t, s); len(msgs) != 1 || msgs[0] != agent.ErrCancelled.Error() {
				t.Errorf("error events %q, want exactly %q", msgs, agent.ErrCancelled.Error())
			}
			if n := len(decodeAll[event.UsageData](t, s, event.Usage)); n != 0 {
				t.Errorf("%d usage events for an unfinished call", n)
			}
			hist := s.history()
			if roles := historyRoles(t, hist); !slices.Equal(roles, []string{"user", "assistant"}) {
				t.Fatalf("history roles %q", roles)
			}
			var note fantasy.Message
			mustUnmarshal(t, hist[1], &note)
			text := note.Content[0].(fantasy.TextPart).Text
			if want := partial + "\n\n[The turn ended early: turn cancelled by the user]"; text != want {
				t.Errorf("note %q, want %q", text, want)
			}
			if len(srv.Requests()) != 1 {
				t.Errorf("%d requests: a cancelled stream must not be retried", len(srv.Requests()))
			}
		})
	}
}

// TestCancelDuringTool cancels while a command runs: the command is stopped,
// its result says so, and no further model call is made.
func TestCancelDuringTool(t *testing.T) {
	sb := startSandbox(t)
	srv := llmtest.NewAnthropic(llmtest.Turn{ToolCalls: []llmtest.ToolCall{bashCall("touch started; sleep 300")}}).Attach(t)
	r := newRunner(t, llm.Anthropic, "claude-sonnet-4-20250514", srv.BaseURL(), Config{}, nil)
	s := newSink(t)
	ctx, cancel := context.WithCancelCause(testCtx(t))
	done := make(chan error, 1)
	go func() { done <- runTurn(t, ctx, r, sb, "run it", s) }()
	testutil.Poll(t, "the command to start", 20*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(sb.Workspace(), "started"))
		return err == nil
	})
	start := time.Now()
	cancel(agent.ErrCancelled)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("cancel took %v", d)
	}
	checkWellFormed(t, s)
	res := decodeAll[event.ToolResultData](t, s, event.ToolResult)
	if len(res) != 1 || !res[0].IsError || res[0].Output != "running the command failed: cancelled" {
		t.Errorf("tool results %+v", res)
	}
	if msgs := errorMessages(t, s); len(msgs) != 1 || msgs[0] != agent.ErrCancelled.Error() {
		t.Errorf("error events %q", msgs)
	}
	if roles := historyRoles(t, s.history()); !slices.Equal(roles, []string{"user", "assistant", "tool", "assistant"}) {
		t.Errorf("history roles %q", roles)
	}
	if n := len(srv.Requests()); n != 1 {
		t.Errorf("%d model calls after cancelling", n)
	}
}

// TestCancelBeforeToolsRun cancels right after a tool call streamed, while
// the model's reply is still coming (the fake paces the second call's input),
// so no tool runs: each call still gets a result, leaving none open in the
// log. (fantasy's OpenAI provider only reports tool calls once the stream has
// ended, so this window exists with Anthropic's streaming.)
func TestCancelBeforeToolsRun(t *testing.T) {
	sb := startSandbox(t)
	srv := llmtest.NewAnthropic(llmtest.Turn{
		// "{}" goes in one delta, so only the second call's deltas wait on
		// the Delay, and the cancel comes while they do.
		ToolCalls: []llmtest.ToolCall{{Name: "list_files", Input: "{}"}, bashCall("touch ran")},
		Delay:     10 * time.Second,
	}).Attach(t)
	r := newRunner(t, llm.Anthropic, "claude-sonnet-4-20250514", srv.BaseURL(), Config{}, nil)
	s := newSink(t)
	ctx, cancel := context.WithCancelCause(testCtx(t))
	s.onEmit = func(typ string) {
		if typ == event.ToolCall {
			cancel(agent.ErrCancelled)
		}
	}
	start := time.Now()
	if err := runTurn(t, ctx, r, sb, "run it", s); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("turn took %v: the cancel did not cut the stream", d)
	}
	checkWellFormed(t, s)
	calls := decodeAll[event.ToolCallData](t, s, event.ToolCall)
	res := decodeAll[event.ToolResultData](t, s, event.ToolResult)
	if len(calls) != 1 || len(res) != 1 || res[0].ID != calls[0].ID || !res[0].IsError || !strings.Contains(res[0].Output, "not run") {
		t.Fatalf("tool calls %+v, results %+v; want one call with an error result saying it did not run", calls, res)
	}
	if _, err := os.Stat(filepath.Join(sb.Workspace(), "ran")); err == nil {
		t.Error("the tool ran after the turn was cancelled")
	}
	if msgs := errorMessages(t, s); len(msgs) != 1 || msgs[0] != agent.ErrCancelled.Error() {
		t.Errorf("error events %q", msgs)
	}
	if roles := historyRoles(t, s.history()); !slices.Equal(roles, []string{"user", "assistant"}) {
		t.Errorf("history roles %q", roles)
	}
}

// TestProviderRejectsKey: a 401 ends the turn with an error event and a note
// in the history, so the next turn's conversation still alternates.
func TestProviderRejectsKey(t *testing.T) {
	sb := startSandbox(t)
	for _, f := range fakes {
		t.Run(f.provider, func(t *testing.T) {
			srv := f.new(llmtest.Turn{Error: &llmtest.ErrorReply{Status: 401, Message: "invalid x-api-key"}}).Attach(t)
			r := newRunner(t, f.provider, f.model, srv.BaseURL(), Config{MaxRetries: 3, RetryBase: time.Millisecond}, nil)
			s := newSink(t)
			if err := runTurn(t, testCtx(t), r, sb, "hello", s); err != nil {
				t.Fatal(err)
			}
			checkWellFormed(t, s)
			want := "the provider rejected the API key (HTTP 401): invalid x-api-key"
			if msgs := errorMessages(t, s); len(msgs) != 1 || !strings.Contains(msgs[0], want) {
				t.Errorf("error events %q, want one containing %q", msgs, want)
			}
			if len(srv.Requests()) != 1 {
				t.Errorf("%d requests: a 401 must not be retried", len(srv.Requests()))
			}
			if roles := historyRoles(t, s.history()); !slices.Equal(roles, []string{"user", "assistant"}) {
				t.Errorf("history roles %q", roles)
			}
			srv.Enqueue(llmtest.Turn{Text: "fixed"})
			s2 := newSink(t)
			if err := runTurn(t, testCtx(t), r, sb, "again", s2); err != nil {
				t.Fatal(err)
			}
			if joined(t, s2, event.Message) != "fixed" || len(errorMessages(t, s2)) != 0 {
				t.Errorf("second turn events %q", s2.types())
			}
			reqs := srv.Requests()
			if got := requestRoles(t, reqs[len(reqs)-1]); !slices.Equal(got, []string{"user", "assistant", "user"}) {
				t.Errorf("next request roles %q", got)
			}
			if !strings.Contains(string(reqs[len(reqs)-1].Body), "[The turn ended early: the provider rejected the API key") {
				t.Error("next request lacks the note")
			}
		})
	}
}

// TestRetry: a 429 or 500 before anything streamed is retried once, with one
// error event saying so; a second failure is reported.
func TestRetry(t *testing.T) {
	sb := startSandbox(t)
	for _, f := range fakes {
		for _, status := range []int{429, 500} {
			t.Run(f.provider+"/"+fmt.Sprintf("HTTP %d", status), func(t *testing.T) {
				fail := llmtest.Turn{Error: &llmtest.ErrorReply{Status: status, Message: "try later"}}
				srv := f.new(fail, llmtest.Turn{Text: "after retry"}, fail, fail).Attach(t)
				r := newRunner(t, f.provider, f.model, srv.BaseURL(), Config{MaxRetries: 1, RetryBase: time.Millisecond}, nil)
				s := newSink(t)
				if err := runTurn(t, testCtx(t), r, sb, "hi", s); err != nil {
					t.Fatal(err)
				}
				checkWellFormed(t, s)
				msgs := errorMessages(t, s)
				if len(msgs) != 1 || !strings.Contains(msgs[0], "retrying in 1ms") || !strings.Contains(msgs[0], fmt.Sprintf("HTTP %d", status)+"): try later") {
					t.Errorf("error events %q, want one retry notice", msgs)
				}
				if joined(t, s, event.Message) != "after retry" || len(srv.Requests()) != 2 {
					t.Errorf("message %q after %d requests", joined(t, s, event.Message), len(srv.Requests()))
				}
				if slices.Index(s.types(), event.Error) != 0 {
					t.Errorf("retry notice should come first: %q", s.types())
				}

				s2 := newSink(t)
				if err := runTurn(t, testCtx(t), r, sb, "again", s2); err != nil {
					t.Fatal(err)
				}
				msgs = errorMessages(t, s2)
				if len(msgs) != 2 || !strings.Contains(msgs[0], "retrying") || strings.Contains(msgs[1], "retrying") ||
					!strings.Contains(msgs[1], fmt.Sprintf("HTTP %d", status)) {
					t.Errorf("exhausted retries: error events %q", msgs)
				}
			})
		}
	}
}

// TestStepLimit: a model that never stops calling tools is cut off after
// MaxSteps model calls, and the conversation stays well formed.
func TestStepLimit(t *testing.T) {
	sb := startSandbox(t)
	srv := llmtest.NewOpenAI(
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{bashCall("echo one")}},
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{bashCall("echo two")}},
	).Attach(t)
	r := newRunner(t, llm.OpenAI, "gpt-4o", srv.BaseURL(), Config{MaxSteps: 2}, nil)
	s := newSink(t)
	if err := runTurn(t, testCtx(t), r, sb, "loop forever", s); err != nil {
		t.Fatal(err)
	}
	checkWellFormed(t, s)
	if n := len(srv.Requests()); n != 2 {
		t.Errorf("%d model calls, want 2", n)
	}
	if n := len(decodeAll[event.ToolResultData](t, s, event.ToolResult)); n != 2 {
		t.Errorf("%d tool results", n)
	}
	msgs := errorMessages(t, s)
	if len(msgs) != 1 || !strings.Contains(msgs[0], "stopped after 2 model calls") {
		t.Errorf("error events %q", msgs)
	}
	if last := s.types()[len(s.types())-1]; last != event.Error {
		t.Errorf("last event %q", last)
	}
	want := []string{"user", "assistant", "tool", "assistant", "tool", "assistant"}
	if roles := historyRoles(t, s.history()); !slices.Equal(roles, want) {
		t.Errorf("history roles %q", roles)
	}
	srv.Enqueue(llmtest.Turn{Text: "ok"})
	if err := runTurn(t, testCtx(t), r, sb, "go on", newSink(t)); err != nil {
		t.Fatal(err)
	}
	reqs := srv.Requests()
	if got := requestRoles(t, reqs[2]); !slices.Equal(got, append(want, "user")) {
		t.Errorf("next request roles %q", got)
	}
}

// TestKeyNeverInEvents: provider errors that echo the API key, as an HTTP
// error, a retry notice, or an in-stream error, never reach an event or the
// saved history.
func TestKeyNeverInEvents(t *testing.T) {
	sb := startSandbox(t)
	leak := "Incorrect API key provided: " + testKey + " (also " + testKey[3:19] + ")"
	for _, f := range fakes {
		t.Run(f.provider, func(t *testing.T) {
			srv := f.new(
				llmtest.Turn{Error: &llmtest.ErrorReply{Status: 503, Message: leak}},
				llmtest.Turn{Error: &llmtest.ErrorReply{Status: 401, Message: leak}},
				llmtest.Turn{Text: "partial answer", StreamError: leak},
			).Attach(t)
			r := newRunner(t, f.provider, f.model, srv.BaseURL(), Config{MaxRetries: 1, RetryBase: time.Millisecond}, nil)
			s := newSink(t)
			if err := runTurn(t, testCtx(t), r, sb, "one", s); err != nil {
				t.Fatal(err)
			}
			s2 := newSink(t)
			if err := runTurn(t, testCtx(t), r, sb, "two", s2); err != nil {
				t.Fatal(err)
			}
			checkWellFormed(t, s2)
			msgs := append(errorMessages(t, s), errorMessages(t, s2)...)
			if len(msgs) != 3 || !strings.Contains(msgs[2], "Incorrect API key provided: [redacted]") {
				t.Errorf("error events %q, want a retry, a 401 and a stream error", msgs)
			}
			for _, sink := range []*recordingSink{s, s2} {
				var all []string
				for _, e := range sink.all() {
					all = append(all, string(e.Data))
				}
				for _, h := range sink.history() {
					all = append(all, string(h))
				}
				for _, text := range all {
					for i := 0; i+8 <= len(testKey); i++ {
						if strings.Contains(text, testKey[i:i+8]) {
							t.Fatalf("key fragment %q in %s", testKey[i:i+8], text)
						}
					}
				}
			}
		})
	}
}

// TestSinkFailures: when events or usage cannot be recorded, Turn says so.
func TestSinkFailures(t *testing.T) {
	sb := startSandbox(t)
	t.Run("emit", func(t *testing.T) {
		srv := llmtest.NewAnthropic(llmtest.Turn{Text: "hello"}).Attach(t)
		r := newRunner(t, llm.Anthropic, "claude-sonnet-4-20250514", srv.BaseURL(), Config{}, nil)
		s := newSink(t)
		s.failEmit = errSinkBroken
		if err := runTurn(t, testCtx(t), r, sb, "hi", s); !errors.Is(err, errSinkBroken) {
			t.Errorf("Turn = %v, want the sink's error", err)
		}
	})
	t.Run("usage", func(t *testing.T) {
		srv := llmtest.NewAnthropic(llmtest.Turn{Text: "hello"}).Attach(t)
		r := newRunner(t, llm.Anthropic, "claude-sonnet-4-20250514", srv.BaseURL(), Config{}, nil)
		s := newSink(t)
		s.failUsage = errSinkBroken
		if err := runTurn(t, testCtx(t), r, sb, "hi", s); !errors.Is(err, errSinkBroken) {
			t.Errorf("Turn = %v, want the sink's error", err)
		}
	})
}
