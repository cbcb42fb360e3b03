package builtin

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

const cassetteDir = "../../llm/llmtest/testdata/recorded"

// recording is what a cassette says the model did, read from its raw bodies
// independently of fantasy's parsers.
type recording struct {
	provider string
	model    string
	thinking int64 // thinking budget of the recorded request
	replies  int
	text     string   // all text deltas, all replies
	reasoned string   // all thinking deltas
	tools    []string // tool names called, in order
	inputs   []string // their JSON arguments
}

func readRecording(t *testing.T, path string) recording {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Interactions []struct {
			Request struct {
				Body string `yaml:"body"`
				URL  string `yaml:"url"`
			} `yaml:"request"`
			Response struct {
				Body string `yaml:"body"`
			} `yaml:"response"`
		} `yaml:"interactions"`
	}
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	var rec recording
	var req struct {
		Model    string `json:"model"`
		Thinking struct {
			Budget int64 `json:"budget_tokens"`
		} `json:"thinking"`
	}
	mustUnmarshal(t, []byte(c.Interactions[0].Request.Body), &req)
	rec.model, rec.thinking, rec.replies = req.Model, req.Thinking.Budget, len(c.Interactions)
	rec.provider = llm.OpenAI
	if strings.HasSuffix(c.Interactions[0].Request.URL, "/v1/messages") {
		rec.provider = llm.Anthropic
	}
	var text, thinking strings.Builder
	for _, in := range c.Interactions {
		args := map[int]*strings.Builder{}
		var order []int
		sc := bufio.NewScanner(strings.NewReader(in.Response.Body))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok || data == "[DONE]" {
				continue
			}
			var ev struct {
				Type         string `json:"type"`
				Index        int    `json:"index"`
				ContentBlock struct {
					Type, Name string
				} `json:"content_block"`
				Delta struct {
					Type        string `json:"type"`
					Text        string `json:"text"`
					Thinking    string `json:"thinking"`
					PartialJSON string `json:"partial_json"`
				} `json:"delta"`
				Choices []struct {
					Delta struct {
						Content   string `json:"content"`
						ToolCalls []struct {
							Index    int `json:"index"`
							Function struct {
								Name, Arguments string
							} `json:"function"`
						} `json:"tool_calls"`
					} `json:"delta"`
				} `json:"choices"`
			}
			mustUnmarshal(t, []byte(data), &ev)
			switch {
			case ev.Type == "content_block_start" && ev.ContentBlock.Type == "tool_use":
				rec.tools = append(rec.tools, ev.ContentBlock.Name)
				args[ev.Index], order = &strings.Builder{}, append(order, ev.Index)
			case ev.Type == "content_block_delta":
				text.WriteString(ev.Delta.Text)
				thinking.WriteString(ev.Delta.Thinking)
				if b := args[ev.Index]; b != nil {
					b.WriteString(ev.Delta.PartialJSON)
				}
			}
			for _, ch := range ev.Choices {
				text.WriteString(ch.Delta.Content)
				for _, tc := range ch.Delta.ToolCalls {
					if tc.Function.Name != "" {
						rec.tools = append(rec.tools, tc.Function.Name)
						args[tc.Index], order = &strings.Builder{}, append(order, tc.Index)
					}
					args[tc.Index].WriteString(tc.Function.Arguments)
				}
			}
		}
		for _, i := range order {
			rec.inputs = append(rec.inputs, args[i].String())
		}
	}
	rec.text, rec.reasoned = text.String(), thinking.String()
	return rec
}

// TestReplayRecorded drives every recorded real provider stream through a
// turn. The cassettes' tools are unknown to the agent, so each call must come
// back as an error result naming the tool, and the turn must carry on to the
// recorded final answer.
func TestReplayRecorded(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(cassetteDir, "*.yaml"))
	if err != nil || len(files) != 5 {
		t.Fatalf("cassettes: %v %v", files, err)
	}
	sb := startSandbox(t)
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			rec := readRecording(t, f)
			if rec.replies != 2 || len(rec.tools) == 0 || rec.text == "" {
				t.Fatalf("cassette is not a tool call and an answer: %+v", rec)
			}
			srv, err := llmtest.NewReplay(f)
			if err != nil {
				t.Fatal(err)
			}
			srv.Attach(t)
			r := newRunner(t, rec.provider, rec.model, srv.BaseURL(), Config{ThinkingBudget: rec.thinking}, nil)
			s := newSink(t)
			if err := runTurn(t, testCtx(t), r, sb, "What's the weather in Florence?", s); err != nil {
				t.Fatalf("Turn: %v", err)
			}
			checkWellFormed(t, s)

			if msgs := errorMessages(t, s); len(msgs) != 0 {
				t.Errorf("error events: %q", msgs)
			}
			if got := joined(t, s, event.Message); got != rec.text {
				t.Errorf("message content %q\nrecorded text     %q", got, rec.text)
			}
			if got := joined(t, s, event.Thinking); got != rec.reasoned {
				t.Errorf("thinking %q\nrecorded %q", got, rec.reasoned)
			}
			if strings.Contains(f, "Thinking") && len(decodeAll[event.DeltaData](t, s, event.ThinkingDelta)) == 0 {
				t.Error("no thinking_delta events for the thinking cassette")
			}

			calls := decodeAll[event.ToolCallData](t, s, event.ToolCall)
			results := decodeAll[event.ToolResultData](t, s, event.ToolResult)
			var names []string
			for i, c := range calls {
				names = append(names, c.Name)
				if i < len(rec.inputs) && !sameJSON(t, c.Input, rec.inputs[i]) {
					t.Errorf("call %d input %s, recorded %s", i, c.Input, rec.inputs[i])
				}
			}
			if !slices.Equal(names, rec.tools) {
				t.Errorf("tool calls %q, recorded %q", names, rec.tools)
			}
			if len(results) != len(calls) {
				t.Fatalf("%d results for %d calls", len(results), len(calls))
			}
			for i, res := range results {
				if res.ID != calls[i].ID || res.Name != calls[i].Name || !res.IsError ||
					!strings.Contains(res.Output, "tool not found: "+calls[i].Name) || res.ExitCode != nil {
					t.Errorf("result %d = %+v, want an error naming the unknown tool %q", i, res, calls[i].Name)
				}
			}

			usage := decodeAll[event.UsageData](t, s, event.Usage)
			if len(usage) != 2 {
				t.Fatalf("%d usage events, want one per model call (2)", len(usage))
			}
			for i, u := range usage {
				if u.InputTokens <= 0 || u.OutputTokens <= 0 {
					t.Errorf("usage %d has zero tokens: %+v", i, u)
				}
			}

			// The second model call carried the error results back.
			reqs := srv.Requests()
			if len(reqs) != 2 || srv.Pending() != 0 {
				t.Fatalf("%d requests, %d replies left; want 2 and 0", len(reqs), srv.Pending())
			}
			for _, c := range calls {
				if !strings.Contains(string(reqs[1].Body), c.ID) {
					t.Errorf("second request lacks tool call %s", c.ID)
				}
			}
			if !strings.Contains(string(reqs[1].Body), "tool not found: "+calls[0].Name) {
				t.Errorf("second request does not carry the error result: %.400s", reqs[1].Body)
			}
			if rec.reasoned != "" && (!strings.Contains(string(reqs[1].Body), `"signature":"EtYDCkYICxgCKkAV`) ||
				!strings.Contains(string(reqs[1].Body), "weather function that takes")) {
				t.Errorf("second request does not send the signed thinking block back: %.600s", reqs[1].Body)
			}

			// History: user, assistant+tool results, final assistant message.
			hist := s.history()
			if len(hist) != 4 {
				t.Errorf("saved %d messages, want 4 (user, assistant, tool, assistant)", len(hist))
			}
			roles := historyRoles(t, hist)
			if !slices.Equal(roles, []string{"user", "assistant", "tool", "assistant"}) {
				t.Errorf("history roles %q", roles)
			}
		})
	}
}

// TestReplayExhausted is what happens when the agent asks a cassette for
// more than it recorded: the replay server answers 500 "no scripted turn
// left", which the turn reports as an error and notes in the history.
func TestReplayExhausted(t *testing.T) {
	f := filepath.Join(cassetteDir, "TestOpenAICommon_openai-gpt-4o_tool_streaming.yaml")
	rec := readRecording(t, f)
	srv, err := llmtest.NewReplay(f)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close() // not Attach: the stray request is the point
	sb := startSandbox(t)
	r := newRunner(t, rec.provider, rec.model, srv.BaseURL(), Config{}, nil)
	if err := runTurn(t, testCtx(t), r, sb, "first", newSink(t)); err != nil {
		t.Fatal(err)
	}
	s := newSink(t)
	if err := runTurn(t, testCtx(t), r, sb, "second", s); err != nil {
		t.Fatal(err)
	}
	checkWellFormed(t, s)
	msgs := errorMessages(t, s)
	if len(msgs) != 1 || !strings.Contains(msgs[0], "HTTP 500") || !strings.Contains(msgs[0], "no scripted turn left") {
		t.Errorf("error events %q, want one naming the 500", msgs)
	}
	hist := s.history()
	if roles := historyRoles(t, hist); !slices.Equal(roles, []string{"user", "assistant"}) {
		t.Errorf("second turn saved roles %q, want user and an assistant note", roles)
	}
	if len(srv.Requests()) != 3 {
		t.Errorf("%d requests, want 3 (no retries by default)", len(srv.Requests()))
	}
}

func historyRoles(t *testing.T, hist []json.RawMessage) []string {
	t.Helper()
	var roles []string
	for _, h := range hist {
		var m struct{ Role string }
		mustUnmarshal(t, h, &m)
		roles = append(roles, m.Role)
	}
	return roles
}

func sameJSON(t *testing.T, a []byte, b string) bool {
	t.Helper()
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}
