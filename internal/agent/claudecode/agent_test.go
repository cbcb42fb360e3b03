package claudecode

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/agent/agenttest"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/process/processtest"
	"github.com/execlaw/execlaw/internal/testutil"
)

// These tests run the adapter against a process sandbox with the real
// execlaw-guest: the CLI runs on the host, reached through the guest's
// attach stream, and its model calls go through the credential proxy's
// tunnel to an llmtest fake. The proxy's port is fixed (ProxyPort) and
// shared with the host's loopback, so they never run in parallel.

const (
	realKey = "sk-ant-api03-REAL-adapter-test-0123456789"
	model   = "claude-sonnet-4-20250514"
)

func newAgent(t *testing.T, baseURL string, cfg Config) *Agent {
	t.Helper()
	cfg.LLM = llm.Config{Provider: llm.Anthropic, Model: model, APIKey: llm.NewSecret(realKey), BaseURL: baseURL}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Close(ctx)
	})
	return a
}

// turn runs one turn, bounded so a hang fails the test instead of stalling it.
func turn(t *testing.T, ctx context.Context, a *Agent, sb sandbox.Sandbox, text string, s *agenttest.Recorder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := a.Turn(ctx, sb, agent.Environment{Workspace: sb.Workspace()}, text, s); err != nil {
		t.Fatalf("Turn: %v", err)
	}
}

// cancelAfter cancels the returned context once the sink holds an event of
// type typ.
func cancelAfter(t *testing.T, s *agenttest.Recorder, typ string) context.Context {
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	go func() {
		defer cancel()
		for ctx.Err() == nil {
			if slices.ContainsFunc(s.Events(), func(e agenttest.Event) bool { return e.Type == typ }) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return ctx
}

// messagesCalls are the model calls the provider got (Claude Code also
// probes its base URL with HEAD /, which the proxy refuses).
func messagesCalls(fake *llmtest.Server) []llmtest.Request {
	var out []llmtest.Request
	for _, r := range fake.Requests() {
		if r.Path == "/v1/messages" {
			out = append(out, r)
		}
	}
	return out
}

// The real Claude Code CLI: a turn with thinking, text and a Bash call that
// runs in the sandbox; usage counted by the proxy; a cancel that Claude
// Code honours, ending the turn at once and keeping the conversation.
func TestRealClaudeCode(t *testing.T) {
	bin := testutil.ClaudeCodeCLI(t)
	gate := make(chan struct{})
	defer close(gate)
	fake := llmtest.NewAnthropic(
		llmtest.Turn{Thinking: "The user wants a note.", Text: "Writing the note.", ToolCalls: []llmtest.ToolCall{{Name: "Bash",
			Input: `{"command":"echo from-claude | tee note.txt; echo \"key=$ANTHROPIC_API_KEY base=$ANTHROPIC_BASE_URL home=$HOME\"","description":"write a note"}`}}},
		llmtest.Turn{Text: "The note says **from-claude**.", InputTokens: 1200, OutputTokens: 40},
		llmtest.Turn{Text: "This answer is cut off by the cancel.", Gate: gate},
		llmtest.Turn{Text: "Back after the cancel."},
	).Attach(t)
	fake.RequireKey(realKey)
	sb := processtest.Start(t, "claude-code")
	a := newAgent(t, fake.BaseURL(), Config{Binary: bin, InterruptGrace: time.Minute})
	s := agenttest.NewRecorder(t)

	turn(t, t.Context(), a, sb, "Write a note and tell me what it says.", s)
	got := summary(t, s.Events())
	if len(got) != 5 || got[0] != "thinking:The user wants a note." || got[1] != "message:Writing the note." ||
		got[2] != "tool_call:Bash" || !strings.HasPrefix(got[3], "tool_result:Bash=from-claude\n") ||
		got[4] != "message:The note says **from-claude**." {
		t.Fatalf("turn 1: %q", got)
	}
	// The tool ran in the sandbox's workspace, with the proxy's token and
	// a HOME of the session's own, never the key.
	if b, err := os.ReadFile(filepath.Join(sb.Workspace(), "note.txt")); err != nil || string(b) != "from-claude\n" {
		t.Errorf("note.txt: %q %v", b, err)
	}
	home := filepath.Join(filepath.Dir(sb.Workspace()), HomeDirName)
	wantEnv := "key=" + a.proxy.Token + " base=http://127.0.0.1:4001 home=" + home
	if !strings.Contains(got[3], wantEnv) || strings.Contains(got[3], realKey) {
		t.Errorf("tool output %q, want %q", got[3], wantEnv)
	}
	if _, err := os.Stat(filepath.Join(home, ".claude")); err != nil {
		t.Errorf("Claude Code kept nothing in its HOME: %v", err)
	}
	// Counted by the proxy, and in before the turn ended.
	if u := s.Usage(); u.InputTokens < 1200 || u.OutputTokens < 40 || count(s.Events(), event.Usage) != 2 {
		t.Errorf("usage when the turn ended: %+v in %d events", u, count(s.Events(), event.Usage))
	}
	if n := count(s.Events(), event.MessageDelta); n < 4 {
		t.Errorf("text was not streamed: %d deltas", n)
	}
	if calls := messagesCalls(fake); len(calls) != 2 {
		t.Errorf("%d model calls, want 2", len(calls))
	}
	proc := a.proc

	// Cancel while the answer streams: Claude Code honours the interrupt.
	s.Reset()
	start := time.Now()
	turn(t, cancelAfter(t, s, event.MessageDelta), a, sb, "Tell me a long story.", s)
	if got, want := summary(t, s.Events()), []string{"message:Thi", "error:turn cancelled"}; !slices.Equal(got, want) {
		t.Errorf("cancelled turn: %q, want %q", got, want)
	}
	if a.proc != proc || time.Since(start) > 30*time.Second {
		t.Errorf("the interrupt was not honoured: process replaced %v, after %s", a.proc != proc, time.Since(start))
	}

	// Same process, same conversation.
	s.Reset()
	turn(t, t.Context(), a, sb, "Are you back?", s)
	if got, want := summary(t, s.Events()), []string{"message:Back after the cancel."}; !slices.Equal(got, want) {
		t.Errorf("turn after the cancel: %q, want %q", got, want)
	}
	calls := messagesCalls(fake)
	if len(calls) != 4 || !strings.Contains(string(calls[3].Body), "Write a note and tell me what it says.") {
		t.Errorf("%d model calls; the last does not carry on the conversation", len(calls))
	}
}

// A turn whose CLI prints nothing for the watchdog's time (here a tool that
// runs too long) is stopped and reported, the process and its children end,
// and the next message starts a new Claude Code.
func TestWatchdog(t *testing.T) {
	bin := testutil.ClaudeCodeCLI(t)
	fake := llmtest.NewAnthropic(
		llmtest.Turn{Text: "Hello."},
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "Bash", Input: `{"command":"sleep 3607","description":"wait"}`}}},
		llmtest.Turn{Text: "A fresh Claude Code answers."},
	).Attach(t)
	sb := processtest.Start(t, "claude-code")
	a := newAgent(t, fake.BaseURL(), Config{Binary: bin})
	s := agenttest.NewRecorder(t)
	// The CLI's start (seconds) is not what is watched here.
	turn(t, t.Context(), a, sb, "Hello.", s)
	a.cfg.Watchdog = 3 * time.Second

	s.Reset()
	turn(t, t.Context(), a, sb, "Wait for an hour.", s)
	stopped := "Claude Code printed nothing for 3s and was stopped"
	want := []string{"tool_call:Bash", "tool_result:Bash!=not finished: " + stopped, "error:" + stopped + ". The next message starts a new Claude Code conversation."}
	if got := summary(t, s.Events()); !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	testutil.Poll(t, "the tool's sleep to end", 30*time.Second, func() bool { return len(testutil.ProcessesWithArgs("sleep", "3607")) == 0 })
	a.cfg.Watchdog = DefaultWatchdog // the new CLI's start is not watched either

	s.Reset()
	turn(t, t.Context(), a, sb, "Hello again.", s)
	if got, want := summary(t, s.Events()), []string{"message:A fresh Claude Code answers."}; !slices.Equal(got, want) {
		t.Errorf("next turn: %q, want %q", got, want)
	}
	calls := messagesCalls(fake)
	if len(calls) != 3 || strings.Contains(string(calls[2].Body), "Wait for an hour.") {
		t.Errorf("%d model calls; the last should start a new conversation", len(calls))
	}
}

// standIn writes an executable shell script playing Claude Code, for the
// ways a CLI can misbehave that the real one cannot be made to.
func standIn(t *testing.T, script string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "claude-standin")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// A CLI that exits mid-turn: its last words are reported, and each message
// starts it anew.
func TestCLIExits(t *testing.T) {
	bin := standIn(t, `echo started >> "$0.starts"
read line
echo '{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"make"}}]}}'
echo 'FATAL ERROR: JavaScript heap out of memory' >&2
exit 3
`)
	sb := processtest.Start(t, "claude-code")
	a := newAgent(t, "http://127.0.0.1:9", Config{Binary: bin})
	for i := 1; i <= 2; i++ {
		s := agenttest.NewRecorder(t)
		turn(t, t.Context(), a, sb, "build it", s)
		exited := "Claude Code exited (exit code 3): FATAL ERROR: JavaScript heap out of memory"
		want := []string{"tool_call:Bash", "tool_result:Bash!=not finished: " + exited, "error:" + exited + ". The next message starts a new Claude Code conversation."}
		if got := summary(t, s.Events()); !slices.Equal(got, want) {
			t.Errorf("turn %d: %q\nwant %q", i, got, want)
		}
	}
	if b, _ := os.ReadFile(bin + ".starts"); strings.Count(string(b), "started") != 2 {
		t.Errorf("starts: %q", b)
	}
}

// A CLI deaf to the interrupt: after the grace the process is signalled and
// dropped, and the user reads that it was stopped.
func TestCancelNotHonoured(t *testing.T) {
	bin := standIn(t, `trap 'echo interrupted-by-signal >> "$0.log"; exit 130' INT
read line
echo '{"type":"stream_event","event":{"type":"content_block_start","index":0,"content_block":{"type":"text"}}}'
echo '{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"working"}}}'
while read line; do echo "$line" >> "$0.log"; done
`)
	sb := processtest.Start(t, "claude-code")
	a := newAgent(t, "http://127.0.0.1:9", Config{Binary: bin, InterruptGrace: time.Second})
	s := agenttest.NewRecorder(t)
	start := time.Now()
	turn(t, cancelAfter(t, s, event.MessageDelta), a, sb, "work", s)
	want := []string{"message:working", "error:turn cancelled; Claude Code was stopped. The next message starts a new Claude Code conversation."}
	if got := summary(t, s.Events()); !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("gave up after %s, before the grace", d)
	}
	b, _ := os.ReadFile(bin + ".log")
	if !strings.Contains(string(b), `"subtype":"interrupt"`) || !strings.Contains(string(b), "interrupted-by-signal") {
		t.Errorf("the stand-in got neither the interrupt request nor the signal: %q", b)
	}
	if a.proc != nil {
		t.Error("the deaf process was kept")
	}
}

func TestNewRejects(t *testing.T) {
	for _, cfg := range []Config{
		{LLM: llm.Config{Provider: llm.OpenAI, Model: "gpt-4o", APIKey: llm.NewSecret("k")}},
		{LLM: llm.Config{Provider: llm.Anthropic, Model: model}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%s) accepted", cfg.LLM.Provider)
		}
	}
	t.Setenv(BinaryEnv, "/opt/claude/bin/claude")
	a, err := New(Config{LLM: llm.Config{Provider: llm.Anthropic, Model: model, APIKey: llm.NewSecret("k")}})
	if err != nil || a.cfg.Binary != "/opt/claude/bin/claude" || a.cfg.Watchdog != DefaultWatchdog || a.cfg.InterruptGrace != DefaultInterruptGrace {
		t.Errorf("defaults: %+v %v", a.cfg, err)
	}
}

// Across a pause: the agent closed after a turn says which conversation it
// had, and a new agent made with that (as a resumed session makes it) starts
// the real CLI with --resume, so the model sees the earlier turn again.
func TestRealClaudeCodeResumes(t *testing.T) {
	bin := testutil.ClaudeCodeCLI(t)
	fake := llmtest.NewAnthropic(
		llmtest.Turn{Text: "Remember: the word is PELICAN."},
		llmtest.Turn{Text: "The word was PELICAN."},
	).Attach(t)
	sb := processtest.Start(t, "claude-code")
	first := newAgent(t, fake.BaseURL(), Config{Binary: bin})
	turn(t, t.Context(), first, sb, "Pick a word and remember it.", agenttest.NewRecorder(t))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	state := first.ResumeState()
	if len(state) == 0 {
		t.Fatal("no resume state after a turn")
	}

	t.Setenv(BinaryEnv, bin) // Kind.New takes the CLI from where a server would
	next, err := Kind.New(t.Context(), agent.Settings{
		LLM:    llm.Config{Provider: llm.Anthropic, Model: model, APIKey: llm.NewSecret(realKey), BaseURL: fake.BaseURL()},
		Resume: state,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { next.Close(context.Background()) })
	s := agenttest.NewRecorder(t)
	turn(t, t.Context(), next.(*Agent), sb, "What was the word?", s)
	if got := summary(t, s.Events()); len(got) != 1 || got[0] != "message:The word was PELICAN." {
		t.Fatalf("after resuming: %q", got)
	}
	calls := messagesCalls(fake)
	if len(calls) != 2 || !strings.Contains(string(calls[1].Body), "the word is PELICAN") {
		t.Fatalf("the resumed CLI did not send the earlier conversation: %d calls", len(calls))
	}
	// A damaged resume state starts a new conversation rather than failing.
	if _, err := Kind.New(t.Context(), agent.Settings{LLM: llm.Config{Provider: llm.Anthropic, Model: model, APIKey: llm.NewSecret(realKey)},
		Resume: []byte(`{"sessionId":"../../etc; rm -rf /"}`)}); err != nil {
		t.Fatalf("a damaged resume state: %v", err)
	}
}
