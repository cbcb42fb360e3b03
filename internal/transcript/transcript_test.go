package transcript

import (
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/store"
)

var start = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// log builds a session's event log from (type, data) pairs, numbering them as
// the session manager would.
func log(t *testing.T, entries ...any) []store.Event {
	t.Helper()
	if len(entries)%2 != 0 {
		t.Fatal("log wants type, data pairs")
	}
	var out []store.Event
	for i := 0; i < len(entries); i += 2 {
		data, err := json.Marshal(entries[i+1])
		if err != nil {
			t.Fatal(err)
		}
		seq := int64(len(out) + 1)
		out = append(out, store.Event{
			SessionID: "s-1", Seq: seq, Type: entries[i].(string), Data: data,
			Time: start.Add(time.Duration(seq) * time.Second),
		})
	}
	return out
}

func header() Header {
	return Header{
		ID: "s-1", Name: "Fix the build", Provider: "anthropic", Model: "claude-sonnet-4-20250514",
		Sandbox: "qemu-tcg", CreatedAt: start,
		Usage: store.Usage{InputTokens: 1234, OutputTokens: 567, CostUSD: 0.0123},
	}
}

func intp(i int) *int { return &i }

// inOrder checks each piece appears in doc, each after the one before.
func inOrder(t *testing.T, doc string, pieces ...string) {
	t.Helper()
	rest := doc
	for _, p := range pieces {
		i := strings.Index(rest, p)
		if i < 0 {
			if strings.Contains(doc, p) {
				t.Errorf("%q is in the transcript but out of order", p)
			} else {
				t.Errorf("%q is missing from the transcript", p)
			}
			continue
		}
		rest = rest[i+len(p):]
	}
	if t.Failed() {
		t.Logf("transcript:\n%s", doc)
	}
}

func TestMarkdownRendersTheConversationInOrder(t *testing.T) {
	events := log(t,
		event.Status, event.StatusData{State: "active"},
		event.UserMessage, event.UserMessageData{MessageID: "u1", Content: "  Please run the tests.\n"},
		event.AgentBusy, event.Empty{},
		event.ThinkingDelta, event.DeltaData{MessageID: "t1", Text: "THINKING-DELTA-FRAGMENT"},
		event.Thinking, event.MessageData{MessageID: "t1", Role: "assistant", Content: "The user wants tests.\nI will run go test."},
		event.MessageDelta, event.DeltaData{MessageID: "m1", Text: "DELTA-FRAGMENT"},
		event.Message, event.MessageData{MessageID: "m1", Role: "assistant", Content: "I'll run the tests now."},
		event.ToolCall, event.ToolCallData{ID: "call_1", Name: "bash", Input: json.RawMessage(`{"command":"go test ./...","timeoutSec":60}`)},
		event.ToolResult, event.ToolResultData{ID: "call_1", Name: "bash", Output: "--- FAIL: TestX\nFAIL\n", IsError: true, ExitCode: intp(1), DurationMs: 4321},
		event.Usage, event.UsageData{InputTokens: 10, OutputTokens: 5, CostUSD: 0.5},
		event.Error, event.ErrorData{Message: "rate limited by the provider;\nretrying in 2s"},
		event.Message, event.MessageData{MessageID: "m2", Role: "assistant", Content: "One test fails."},
		event.AgentIdle, event.Empty{},
		event.Exit, event.ExitData{Code: 0, Reason: "idle timeout"},
	)
	doc := Markdown(header(), events)

	inOrder(t, doc,
		"# Fix the build\n",
		"`s-1`",
		"anthropic / claude-sonnet-4-20250514",
		"qemu-tcg",
		"2025-03-01T12:00:00Z",
		"1234 input tokens, 567 output tokens, $0.0123",
		"## User\n\nPlease run the tests.\n",
		"Thinking",
		"> The user wants tests.\n> I will run go test.",
		"## Assistant\n\nI'll run the tests now.\n",
		"### Tool call: bash",
		"```json\n{\n  \"command\": \"go test ./...\",\n  \"timeoutSec\": 60\n}\n```\n",
		"**Result** (error, exit code 1, 4321 ms)",
		"```\n--- FAIL: TestX\nFAIL\n```\n",
		"> **Error:** rate limited by the provider; retrying in 2s\n",
		"## Assistant\n\nOne test fails.\n",
		"*Session ended: idle timeout*",
	)
	for _, never := range []string{"DELTA-FRAGMENT", "THINKING-DELTA-FRAGMENT"} {
		if strings.Contains(doc, never) {
			t.Errorf("transcript contains streamed delta text %q; deltas are left out", never)
		}
	}
	if n := strings.Count(doc, "## Assistant"); n != 2 {
		t.Errorf("%d assistant sections, want 2 (one per complete message)", n)
	}
}

func TestMarkdownToolResultStatus(t *testing.T) {
	cases := []struct {
		data event.ToolResultData
		want string
	}{
		{event.ToolResultData{Name: "bash", Output: "ok", ExitCode: intp(0), DurationMs: 12}, "**Result** (ok, exit code 0, 12 ms)"},
		{event.ToolResultData{Name: "read", Output: "file body", DurationMs: 3}, "**Result** (ok, 3 ms)"},
		{event.ToolResultData{Name: "edit", Output: "no match", IsError: true, DurationMs: 1}, "**Result** (error, 1 ms)"},
	}
	for _, c := range cases {
		doc := Markdown(header(), log(t, event.ToolResult, c.data))
		if !strings.Contains(doc, c.want) {
			t.Errorf("result %+v: transcript lacks %q:\n%s", c.data, c.want, doc)
		}
	}
}

// codeBlock is one fenced code block as a CommonMark reader sees it.
type codeBlock struct {
	info, body string
}

// scan splits a Markdown document into its fenced code blocks and the text
// outside them, following CommonMark's rules for backtick fences: a fence
// opens with three or more backticks (up to three spaces of indent) and is
// closed only by a line of at least as many backticks and nothing else.
func scan(doc string) (blocks []codeBlock, outside string) {
	var out, body strings.Builder
	open := 0
	var info string
	for _, line := range strings.SplitAfter(doc, "\n") {
		trimmed := strings.TrimRight(line, "\n")
		indent := len(trimmed) - len(strings.TrimLeft(trimmed, " "))
		content := strings.TrimLeft(trimmed, " ")
		ticks := len(content) - len(strings.TrimLeft(content, "`"))
		if open == 0 {
			if indent <= 3 && ticks >= 3 && !strings.Contains(content[ticks:], "`") {
				open, info = ticks, content[ticks:]
				body.Reset()
				continue
			}
			out.WriteString(line)
			continue
		}
		if indent <= 3 && ticks >= open && strings.TrimSpace(content[ticks:]) == "" {
			blocks = append(blocks, codeBlock{info, strings.TrimSuffix(body.String(), "\n")})
			open = 0
			continue
		}
		body.WriteString(line)
	}
	if open != 0 { // an unclosed fence runs to the end of the document
		blocks = append(blocks, codeBlock{info, body.String()})
	}
	return blocks, out.String()
}

func TestMarkdownToolOutputCannotEscapeItsFence(t *testing.T) {
	outputs := []string{
		"before\n```\n# Injected heading\n[click](http://evil.example)\n```\nafter",
		"````\n## Also injected\n````",
		"inline ``` and ````` runs\n```````\n# Injected",
		"```", // nothing but a fence
		"   ```\n# Indented fence close\n",
	}
	for _, output := range outputs {
		events := log(t,
			event.ToolCall, event.ToolCallData{ID: "c1", Name: "bash", Input: json.RawMessage(`{"command":"cat README.md # has ` + "```" + ` in it"}`)},
			event.ToolResult, event.ToolResultData{ID: "c1", Name: "bash", Output: output, ExitCode: intp(0)},
			event.Message, event.MessageData{MessageID: "m1", Role: "assistant", Content: "Done."},
		)
		doc := Markdown(header(), events)
		blocks, outside := scan(doc)

		if len(blocks) != 2 {
			t.Errorf("output %q: %d code blocks, want 2 (tool input and tool output):\n%s", output, len(blocks), doc)
			continue
		}
		if blocks[0].info != "json" || !strings.Contains(blocks[0].body, "```") {
			t.Errorf("output %q: tool input block = %+v", output, blocks[0])
		}
		if blocks[1].body != strings.TrimRight(output, "\n") {
			t.Errorf("output %q: tool output block holds %q", output, blocks[1].body)
		}
		if strings.Contains(outside, "Injected") || strings.Contains(outside, "evil.example") {
			t.Errorf("output %q: tool output leaked out of its fence:\n%s", output, outside)
		}
		if !strings.Contains(outside, "## Assistant\n\nDone.") {
			t.Errorf("output %q: the message after the tool output is not outside a fence any more:\n%s", output, doc)
		}
	}
}

func TestMarkdownFlattensNames(t *testing.T) {
	h := header()
	h.Name = "Line one\n# Injected title\n\nmore"
	h.Model = "gpt-4o\n## Model heading"
	events := log(t,
		event.ToolCall, event.ToolCallData{ID: "c1", Name: "bash\n## Tool heading", Input: json.RawMessage(`{}`)},
		event.Error, event.ErrorData{Message: "boom\n# Error heading"},
		event.Exit, event.ExitData{Code: 1, Reason: "killed\n\n# Exit heading"},
	)
	doc := Markdown(h, events)
	inOrder(t, doc,
		"# Line one # Injected title more\n",
		"gpt-4o ## Model heading",
		"### Tool call: bash ## Tool heading\n",
		"> **Error:** boom # Error heading\n",
		"*Session ended: killed # Exit heading*",
	)
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "# ") && line != "# Line one # Injected title more" {
			t.Errorf("a name became a heading of its own: %q", line)
		}
		if strings.HasPrefix(line, "## ") && line != "## Assistant" && line != "## User" {
			t.Errorf("a name became a heading of its own: %q", line)
		}
	}
}

func TestMarkdownSkipsEventsItCannotDecode(t *testing.T) {
	events := []store.Event{
		{Seq: 1, Type: event.Message, Data: json.RawMessage(`not json`)},
		{Seq: 2, Type: event.Message, Data: json.RawMessage(`{"messageId":"m","role":"assistant","content":"still here"}`)},
	}
	doc := Markdown(header(), events)
	if strings.Count(doc, "## Assistant") != 1 || !strings.Contains(doc, "still here") {
		t.Errorf("transcript with one broken event:\n%s", doc)
	}
}

// Write renders the same document as Markdown, event by event; Bounded cuts
// a long one at its limit with a note; an error from the events ends the
// document with that error.
func TestWriteAndBounded(t *testing.T) {
	h := Header{ID: "s_1", Name: "long", CreatedAt: time.Unix(0, 0)}
	var events []store.Event
	for i := range 200 {
		data, _ := json.Marshal(event.MessageData{MessageID: "m", Role: "assistant", Content: strings.Repeat("word ", 100) + strconv.Itoa(i)})
		events = append(events, store.Event{Seq: int64(i + 1), Type: event.Message, Data: data})
	}
	whole := Markdown(h, events)
	var b strings.Builder
	if err := Write(&b, h, Slice(events)); err != nil || b.String() != whole {
		t.Fatalf("Write differs from Markdown (%v)", err)
	}

	md, cut, err := Bounded(h, Slice(events), len(whole))
	if err != nil || cut || md != whole {
		t.Fatalf("a transcript that fits: cut %v, err %v", cut, err)
	}
	md, cut, err = Bounded(h, Slice(events), 10<<10)
	if err != nil || !cut || len(md) > 10<<10+200 || !strings.HasPrefix(whole, md[:10<<10]) || !strings.Contains(md, "The transcript is cut here") {
		t.Fatalf("a long transcript: cut %v, %d bytes, err %v", cut, len(md), err)
	}

	boom := errors.New("the store went away")
	failing := func(yield func(store.Event, error) bool) {
		if yield(events[0], nil) {
			yield(store.Event{}, boom)
		}
	}
	if err := Write(io.Discard, h, failing); !errors.Is(err, boom) {
		t.Fatalf("Write with a failing source: %v", err)
	}
}
