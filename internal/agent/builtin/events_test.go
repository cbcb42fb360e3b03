package builtin

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"charm.land/fantasy"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

// TestToolEvents runs tool calls of every kind of outcome through a turn and
// checks what reaches the tool_call and tool_result events and the model.
func TestToolEvents(t *testing.T) {
	sb := startSandbox(t)
	writeHost(t, sb, "notes.txt", "first\nsecond\n")
	type want struct {
		name     string
		input    string // the tool_call event's input, if it is not the call's own
		output   string // exact output, or a substring when contains is set
		contains bool
		isError  bool
		exit     int // -1: no exit code
		trunc    bool
	}
	cases := []struct {
		call llmtest.ToolCall
		want want
	}{
		{bashCall("echo out; exit 3"), want{name: "bash", output: "out\n", isError: true, exit: 3}},
		{bashCall(`printf 'a\xff\000b'`), want{name: "bash", output: "a\uFFFD\x00b", exit: 0}},
		{bashCall("yes | head -c 5000000"), want{name: "bash", output: " bytes omitted ...]\n", contains: true, exit: 0, trunc: true}},
		{llmtest.ToolCall{Name: "read_file", Input: `{"path":"notes.txt","offset":2}`},
			want{name: "read_file", output: "     2\tsecond\n", exit: -1}},
		{llmtest.ToolCall{Name: "read_file", Input: `{"path":"missing.txt"}`},
			want{name: "read_file", output: "no such file", contains: true, isError: true, exit: -1}},
		{llmtest.ToolCall{Name: "weather", Input: `{"location":"Florence"}`},
			want{name: "weather", output: "tool not found: weather. Available tools: bash, read_file, write_file, edit_file, list_files",
				isError: true, exit: -1}},
		{llmtest.ToolCall{Name: "bash", Input: `{}`},
			want{name: "bash", output: "missing required parameter: command", isError: true, exit: -1}},
	}
	for _, f := range fakes {
		t.Run(f.provider, func(t *testing.T) {
			var calls []llmtest.ToolCall
			for _, c := range cases {
				calls = append(calls, c.call)
			}
			srv := f.new(llmtest.Turn{Text: "Trying things.", ToolCalls: calls}, llmtest.Turn{Text: "Done."}).Attach(t)
			r := newRunner(t, f.provider, f.model, srv.BaseURL(), Config{}, nil)
			s := newSink(t)
			if err := runTurn(t, testCtx(t), r, sb, "try every tool", s); err != nil {
				t.Fatal(err)
			}
			checkWellFormed(t, s)
			if got := joined(t, s, event.Message); got != "Trying things.Done." {
				t.Errorf("messages %q", got)
			}
			if msgs := errorMessages(t, s); len(msgs) != 0 {
				t.Errorf("error events %q", msgs)
			}
			ev := decodeAll[event.ToolCallData](t, s, event.ToolCall)
			res := decodeAll[event.ToolResultData](t, s, event.ToolResult)
			if len(ev) != len(cases) || len(res) != len(cases) {
				t.Fatalf("%d calls and %d results for %d tool calls", len(ev), len(res), len(cases))
			}
			second := string(srv.Requests()[1].Body)
			for i, c := range cases {
				w, got, call := c.want, res[i], ev[i]
				if call.Name != w.name || got.Name != w.name || got.ID != call.ID {
					t.Errorf("%d: call %+v result %s/%s", i, call, got.ID, got.Name)
				}
				wantInput := c.call.Input
				if w.input != "" {
					wantInput = w.input
				}
				if !sameJSON(t, call.Input, wantInput) {
					t.Errorf("%d: tool_call input %s, want %s", i, call.Input, wantInput)
				}
				if (w.contains && !strings.Contains(got.Output, w.output)) || (!w.contains && got.Output != w.output) {
					t.Errorf("%d: output %.200q, want %q", i, got.Output, w.output)
				}
				if got.IsError != w.isError || got.Truncated != w.trunc || !utf8.ValidString(got.Output) ||
					len(got.Output) > MaxToolOutput || got.DurationMs < 0 {
					t.Errorf("%d: result isError %v truncated %v (%d bytes)", i, got.IsError, got.Truncated, len(got.Output))
				}
				switch {
				case w.exit < 0 && got.ExitCode != nil:
					t.Errorf("%d: exit code %d for a tool without one", i, *got.ExitCode)
				case w.exit >= 0 && (got.ExitCode == nil || *got.ExitCode != w.exit):
					t.Errorf("%d: exit code %v, want %d", i, got.ExitCode, w.exit)
				}
				// What the model is sent back is what the user saw.
				first, _, _ := strings.Cut(got.Output, "\n")
				if !strings.Contains(second, jsonText(first)) {
					t.Errorf("%d: the next request lacks the result %q", i, first)
				}
			}
		})
	}
}

// jsonText is s as it appears inside a JSON string.
func jsonText(s string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.Trim(strings.TrimSpace(b.String()), `"`)
}

// TestTruncatedAnswer: an answer cut off at the output token limit, in the
// middle of a tool call's input. The cut-off call must not run (fantasy would
// "repair" the JSON and write half a file), and a turn that ends there says so.
func TestTruncatedAnswer(t *testing.T) {
	sb := startSandbox(t)
	for _, f := range fakes {
		t.Run(f.provider, func(t *testing.T) {
			stop := map[string]string{llm.Anthropic: "max_tokens", llm.OpenAI: "length"}[f.provider]
			cut := llmtest.ToolCall{Name: "write_file", Input: `{"path": "cut.txt", "content": "line one\nline tw`}
			srv := f.new(
				llmtest.Turn{Text: "Writing.", ToolCalls: []llmtest.ToolCall{cut}, StopReason: stop},
				llmtest.Turn{Text: "A long answer that goes on and", StopReason: stop},
			).Attach(t)
			r := newRunner(t, f.provider, f.model, srv.BaseURL(), Config{}, nil)
			s := newSink(t)
			if err := runTurn(t, testCtx(t), r, sb, "write cut.txt", s); err != nil {
				t.Fatal(err)
			}
			checkWellFormed(t, s)
			if _, err := os.Stat(filepath.Join(sb.Workspace(), "cut.txt")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the cut-off write ran: %v", err)
			}
			res := decodeAll[event.ToolResultData](t, s, event.ToolResult)
			// The Anthropic SDK replaces input that does not parse with {}.
			want := map[string]string{llm.Anthropic: "missing required parameter: path", llm.OpenAI: "invalid JSON input"}[f.provider]
			if len(res) != 1 || !res[0].IsError || !strings.Contains(res[0].Output, want) {
				t.Errorf("tool results %+v, want an error containing %q", res, want)
			}

			// fantasy's OpenAI provider reports "tool-calls" whenever there are
			// tool calls, so that turn carries on to the next reply; Anthropic's
			// stops at the cut. Either way the turn ends on a cut-off answer.
			wantText := map[string]string{llm.Anthropic: "Writing.", llm.OpenAI: "Writing.A long answer that goes on and"}[f.provider]
			if got := joined(t, s, event.Message); got != wantText {
				t.Errorf("messages %q, want %q", got, wantText)
			}
			msgs := errorMessages(t, s)
			if len(msgs) != 1 || !strings.Contains(msgs[0], "cut off at its output token limit") {
				t.Errorf("error events %q", msgs)
			}
			hist := s.history()
			var last fantasy.Message
			mustUnmarshal(t, hist[len(hist)-1], &last)
			if last.Role != fantasy.MessageRoleAssistant || !strings.Contains(last.Content[0].(fantasy.TextPart).Text, "output token limit") {
				t.Errorf("history ends with %s", hist[len(hist)-1])
			}
		})
	}
}
