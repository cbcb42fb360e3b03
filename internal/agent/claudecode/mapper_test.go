package claudecode

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/agent/agenttest"
	"github.com/execlaw/execlaw/internal/event"
)

// testdata/stream-2.1.112.jsonl is what the real Claude Code 2.1.112 printed
// (claude -p --output-format stream-json --input-format stream-json --verbose
// --include-partial-messages) for three turns against llmtest's fake
// Anthropic server: thinking, text and a Bash call with its result, then a
// final text; a turn interrupted by a control_request after its first delta;
// and a turn after the interrupt.
func recordedTurns(t *testing.T) [][][]byte {
	t.Helper()
	f, err := os.Open("testdata/stream-2.1.112.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var turns [][][]byte
	var cur [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := bytes.Clone(sc.Bytes())
		cur = append(cur, line)
		if bytes.HasPrefix(line, []byte(`{"type":"result"`)) {
			turns = append(turns, cur)
			cur = nil
		}
	}
	if err := sc.Err(); err != nil || len(turns) != 3 || len(cur) != 0 {
		t.Fatalf("recording: %d turns, %d trailing lines, %v", len(turns), len(cur), err)
	}
	return turns
}

// mapTurn maps lines with a fresh Mapper, as Agent.Turn does, and returns the
// result the last line gave.
func mapTurn(t *testing.T, s *agenttest.Recorder, lines [][]byte) *Result {
	t.Helper()
	m := NewMapper(t.Context(), s)
	var res *Result
	for i, l := range lines {
		r, err := m.Line(l)
		if err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if r != nil {
			if i != len(lines)-1 {
				t.Fatalf("line %d ended the turn early", i)
			}
			res = r
		}
	}
	if res == nil {
		t.Fatal("no result line")
	}
	return res
}

func TestMapRecordedStream(t *testing.T) {
	turns := recordedTurns(t)

	s := agenttest.NewRecorder(t)
	res := mapTurn(t, s, turns[0])
	want := []string{
		"thinking:Let me think about the kernel.",
		"message:Let me check.",
		"tool_call:Bash",
		"tool_result:Bash=hi-from-bash",
		"message:It said **hi**.",
	}
	if got := summary(t, s.Events()); !slices.Equal(got, want) {
		t.Errorf("turn 1:\n got %q\nwant %q", got, want)
	}
	if res.IsError || res.Subtype != "success" || res.Text != "It said **hi**." {
		t.Errorf("turn 1 result %+v", res)
	}
	// Token by token: every text came as several deltas.
	if n := count(s.Events(), event.MessageDelta); n < 6 {
		t.Errorf("%d message deltas", n)
	}
	if n := count(s.Events(), event.ThinkingDelta); n < 4 {
		t.Errorf("%d thinking deltas", n)
	}
	for _, e := range s.Events() {
		if e.Type == event.ToolCall {
			in, _ := json.Marshal(e.Data["input"])
			if string(in) != `{"command":"echo hi-from-bash","description":"say hi"}` || e.Data["id"] != "toolu_01dcDjJa40K7XhUeEK9djJ6S" {
				t.Errorf("tool call %v", e.Data)
			}
		}
		if e.Type == event.ToolResult && e.Data["id"] != "toolu_01dcDjJa40K7XhUeEK9djJ6S" {
			t.Errorf("tool result %v does not match its call", e.Data)
		}
	}

	// Interrupted: the block Claude Code left open is completed from what
	// streamed; its "[Request interrupted by user]" echo is not a message.
	s = agenttest.NewRecorder(t)
	res = mapTurn(t, s, turns[1])
	if got, want := summary(t, s.Events()), []string{"message:Thi"}; !slices.Equal(got, want) {
		t.Errorf("interrupted turn: %q, want %q", got, want)
	}
	if !res.IsError || res.Subtype != "error_during_execution" {
		t.Errorf("interrupted turn result %+v", res)
	}

	s = agenttest.NewRecorder(t)
	mapTurn(t, s, turns[2])
	if got, want := summary(t, s.Events()), []string{"message:Back after the interrupt."}; !slices.Equal(got, want) {
		t.Errorf("turn 3: %q, want %q", got, want)
	}
}

// Without --include-partial-messages, text comes only in assistant messages.
func TestMapAssistantMessagesWithoutStream(t *testing.T) {
	s := agenttest.NewRecorder(t)
	mapTurn(t, s, [][]byte{
		[]byte(`{"type":"system","subtype":"init","session_id":"x"}`),
		[]byte(`{"type":"assistant","message":{"content":[{"type":"thinking","thinking":"hmm"},{"type":"text","text":"Hello"},{"type":"tool_use","id":"t1","name":"Read","input":{"file_path":"/a"}}]}}`),
		[]byte(`{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"line one\n"},{"type":"image","source":{}},{"type":"text","text":"line two"}],"is_error":true}]}}`),
		[]byte(`{"type":"assistant","message":{"content":[{"type":"text","text":""}]}}`),
		[]byte(`{"type":"result","subtype":"success","is_error":false,"result":"Hello"}`),
	})
	want := []string{"thinking:hmm", "message:Hello", "tool_call:Read", "tool_result:Read!=line one\n[image]line two"}
	if got := summary(t, s.Events()); !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

// What Claude Code prints that is not ours to map, or not to be trusted.
func TestMapIgnoresAndBounds(t *testing.T) {
	s := agenttest.NewRecorder(t)
	huge := strings.Repeat("x", maxToolOutput+100)
	bigInput, _ := json.Marshal(map[string]string{"content": strings.Repeat("y", maxToolInput)})
	mapTurn(t, s, [][]byte{
		[]byte(`npm WARN something printed to stdout`),
		[]byte(`{"type":"control_response","response":{"subtype":"success","request_id":"r"}}`),
		// A sub-agent's traffic: its outcome arrives as its Task call's result.
		[]byte(`{"type":"stream_event","parent_tool_use_id":"task1","event":{"type":"content_block_start","index":0,"content_block":{"type":"text"}}}`),
		[]byte(`{"type":"assistant","parent_tool_use_id":"task1","message":{"content":[{"type":"text","text":"sub-agent talk"}]}}`),
		// A result for a call never made, and a call with a hostile ID.
		[]byte(`{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"nope","content":"x"}]}}`),
		[]byte(`{"type":"assistant","message":{"content":[{"type":"tool_use","id":"` + strings.Repeat("i", 200) + `","name":"Bash","input":{}}]}}`),
		// Inputs that are not JSON objects we keep as they are.
		[]byte(`{"type":"assistant","message":{"content":[{"type":"tool_use","id":"w1","name":"Write","input":` + string(bigInput) + `}]}}`),
		[]byte(`{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"w1","content":"` + huge + `"}]}}`),
		// A delta for a block never started, invalid UTF-8 in a delta.
		[]byte(`{"type":"stream_event","event":{"type":"content_block_delta","index":7,"delta":{"type":"text_delta","text":"orphan"}}}`),
		[]byte(`{"type":"stream_event","event":{"type":"content_block_start","index":0,"content_block":{"type":"text"}}}`),
		append(append([]byte(`{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"ok `), 0xff, 0xfe), []byte(`"}}}`)...),
		[]byte(`{"type":"stream_event","event":{"type":"content_block_stop","index":0}}`),
		[]byte(`{"type":"result","subtype":"success","is_error":false}`),
	})
	got := summary(t, s.Events())
	if len(got) != 3 || got[0] != "tool_call:Write" || !strings.HasPrefix(got[1], "tool_result:Write=xxx") || got[2] != "message:ok \uFFFD\uFFFD" {
		for i := range got {
			got[i] = clip(got[i], 80)
		}
		t.Fatalf("events %q", got)
	}
	for _, e := range s.Events() {
		switch e.Type {
		case event.ToolCall:
			if in, _ := e.Data["input"].(map[string]any); in["invalidInput"] == nil {
				t.Errorf("an oversized tool input was kept: %d keys", len(in))
			}
		case event.ToolResult:
			out, _ := e.Data["output"].(string)
			if len(out) > maxToolOutput+64 || !strings.HasSuffix(out, "[... cut ...]") || e.Data["truncated"] != true {
				t.Errorf("tool output of %d bytes, truncated %v", len(out), e.Data["truncated"])
			}
		}
	}

	m := NewMapper(t.Context(), s)
	if _, err := m.Line(make([]byte, maxLineBytes+1)); err == nil {
		t.Error("an oversized line was accepted")
	}
}

// A turn cut short (watchdog, exit, cancel without an answer) closes the
// tool calls and text blocks it left open.
func TestPendingTools(t *testing.T) {
	s := agenttest.NewRecorder(t)
	m := NewMapper(t.Context(), s)
	for _, l := range []string{
		`{"type":"assistant","message":{"content":[{"type":"tool_use","id":"b1","name":"Bash","input":{"command":"sleep 100"}}]}}`,
		`{"type":"stream_event","event":{"type":"content_block_start","index":0,"content_block":{"type":"text"}}}`,
		`{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"half"}}}`,
	} {
		if _, err := m.Line([]byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.PendingTools("not finished: stopped"); err != nil {
		t.Fatal(err)
	}
	want := []string{"tool_call:Bash", "tool_result:Bash!=not finished: stopped", "message:half"}
	if got := summary(t, s.Events()); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	// Nothing is closed twice.
	if err := m.PendingTools("again"); err != nil || len(s.Events()) != 4 {
		t.Errorf("second PendingTools: %v, %d events", err, len(s.Events()))
	}
}

func TestMapEmitFailure(t *testing.T) {
	turns := recordedTurns(t)
	for n := 1; n < 30; n++ {
		s := agenttest.NewRecorder(t)
		s.FailAt = n
		m := NewMapper(t.Context(), s)
		var err error
		for _, l := range turns[0] {
			if _, err = m.Line(l); err != nil {
				break
			}
		}
		if err == nil {
			if n < 10 {
				t.Fatalf("failing emit %d was not reported", n)
			}
			break
		}
		if err != agenttest.ErrEmit {
			t.Fatalf("emit %d: %v", n, err)
		}
	}
}

func TestResultDescribe(t *testing.T) {
	for _, c := range []struct {
		r    Result
		want string
	}{
		{Result{IsError: true}, "Claude Code ended the turn with an error"},
		{Result{IsError: true, Subtype: "error_max_turns"}, "Claude Code ended the turn with an error (error_max_turns)"},
		{Result{IsError: true, Subtype: "success", Text: "API Error: 403"}, "Claude Code ended the turn with an error (success): API Error: 403"},
	} {
		if got := c.r.describe(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.r, got, c.want)
		}
	}
}

// A CLI that opens block after block without closing them, streams text
// without end or calls tools without end cannot make the host keep or
// forward more than the per-turn bounds; each bound is reported once.
func TestMapHostileStreamBounded(t *testing.T) {
	start := func(i int) string {
		return fmt.Sprintf(`{"type":"stream_event","event":{"type":"content_block_start","index":%d,"content_block":{"type":"text"}}}`, i)
	}
	delta := func(i int, text string) string {
		return fmt.Sprintf(`{"type":"stream_event","event":{"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":%q}}}`, i, text)
	}
	stop := func(i int) string {
		return fmt.Sprintf(`{"type":"stream_event","event":{"type":"content_block_stop","index":%d}}`, i)
	}
	chunk := strings.Repeat("z", 256<<10)
	for _, tc := range []struct {
		name  string
		lines func(yield func(string))
		check func(t *testing.T, m *Mapper, text, calls int)
		warn  string
	}{
		{
			name: "blocks never closed",
			lines: func(yield func(string)) {
				for i := range 1000 {
					yield(start(i))
					yield(delta(i, chunk[:16<<10]))
				}
			},
			check: func(t *testing.T, m *Mapper, text, _ int) {
				if n := len(m.open); n > maxOpenBlocks {
					t.Errorf("%d blocks kept open", n)
				}
				if text > maxOpenBlocks*16<<10 {
					t.Errorf("%d bytes forwarded from %d open blocks", text, maxOpenBlocks)
				}
			},
			warn: "opened more than 8 text blocks",
		},
		{
			name: "text without end",
			lines: func(yield func(string)) {
				for i := range 3 * maxTurnText / maxMessageText {
					yield(start(i))
					for range maxMessageText / len(chunk) {
						yield(delta(i, chunk))
					}
					yield(stop(i))
				}
			},
			check: func(t *testing.T, _ *Mapper, text, _ int) {
				if text > maxTurnText || text < maxTurnText-len(chunk) {
					t.Errorf("%d bytes of deltas forwarded, bound %d", text, maxTurnText)
				}
			},
			warn: "passed 8 MiB in one turn",
		},
		{
			name: "tool calls without end",
			lines: func(yield func(string)) {
				for i := range maxTurnTools + 50 {
					yield(fmt.Sprintf(`{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t%d","name":"Bash","input":{}}]}}`, i))
				}
			},
			check: func(t *testing.T, m *Mapper, _, calls int) {
				if calls != maxTurnTools || len(m.tools) > maxTurnTools {
					t.Errorf("%d tool calls forwarded, %d kept; bound %d", calls, len(m.tools), maxTurnTools)
				}
			},
			warn: "more than 256 tool calls",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := agenttest.NewRecorder(t)
			m := NewMapper(t.Context(), s)
			tc.lines(func(line string) {
				if _, err := m.Line([]byte(line)); err != nil {
					t.Fatal(err)
				}
			})
			var text, calls int
			var warnings []string
			for _, e := range s.Events() {
				switch e.Type {
				case event.MessageDelta:
					text += len(e.Data["text"].(string))
				case event.ToolCall:
					calls++
				case event.Error:
					warnings = append(warnings, e.Data["message"].(string))
				}
			}
			tc.check(t, m, text, calls)
			if len(warnings) != 1 || !strings.Contains(warnings[0], tc.warn) {
				t.Errorf("error events %q, want one saying %q", warnings, tc.warn)
			}
		})
	}
}
