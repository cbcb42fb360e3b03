package llmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// recordedStream is one interaction of a cassette, parsed.
type recordedStream struct {
	name, provider, path string
	request              string
	events               []sseEvent
}

func recordedStreams(t *testing.T) []recordedStream {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(recordedDir, "*.yaml"))
	if err != nil || len(files) != 5 {
		t.Fatalf("want the 5 recorded cassettes in %s, got %v (%v)", recordedDir, files, err)
	}
	var out []recordedStream
	for _, f := range files {
		c, err := loadCassette(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, in := range c.Interactions {
			rs := recordedStream{
				name:    fmt.Sprintf("%s/%d", strings.TrimSuffix(filepath.Base(f), ".yaml"), i),
				request: in.Request.Body,
				events:  parseSSE(t, in.Response.Body),
			}
			switch {
			case strings.HasSuffix(in.Request.URL, "/v1/messages"):
				rs.provider, rs.path = "anthropic", "/v1/messages"
			case strings.HasSuffix(in.Request.URL, "/v1/chat/completions"):
				rs.provider, rs.path = "openai", "/v1/chat/completions"
			default:
				t.Fatalf("%s: unexpected URL %s", rs.name, in.Request.URL)
			}
			out = append(out, rs)
		}
	}
	return out
}

// fakeStream scripts turn on a fresh fake for the provider, sends it the
// recorded request body and returns the raw SSE events it answers with.
func fakeStream(t *testing.T, provider, path, request string, turn Turn) []sseEvent {
	t.Helper()
	var s *Server
	if provider == "anthropic" {
		s = NewAnthropic(turn)
	} else {
		s = NewOpenAI(turn)
	}
	defer s.Close()
	resp, err := http.Post(s.URL()+path, "application/json", strings.NewReader(request))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("fake answered %d %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	return parseSSE(t, string(body))
}

// TestConformance scripts, for every recorded real stream, the same kind of
// turn (same text, thinking and tool calls) on the fake and requires the
// same wire format field for field.
func TestConformance(t *testing.T) {
	for _, rs := range recordedStreams(t) {
		t.Run(rs.name, func(t *testing.T) {
			turn := recordedTurn(t, rs.provider, rs.events)
			if turn.Text == "" && len(turn.ToolCalls) == 0 {
				t.Fatalf("recording has no content: %+v", turn)
			}
			fake := fakeStream(t, rs.provider, rs.path, rs.request, turn)
			for _, d := range compareStreams(t, rs.provider, rs.events, fake) {
				t.Error(d)
			}
			// The content itself must survive the trip, ids included.
			if got := recordedTurn(t, rs.provider, fake); !reflect.DeepEqual(got, turn) {
				t.Errorf("fake stream says\n  %+v\nwant\n  %+v", got, turn)
			}
		})
	}
}

// TestConformanceDetectsMismatch shows the comparison is sharp enough:
// dropping one field, changing one null to a value, or dropping one event
// from a conforming fake stream must each be reported.
func TestConformanceDetectsMismatch(t *testing.T) {
	streams := map[string]recordedStream{}
	for _, rs := range recordedStreams(t) {
		streams[rs.name] = rs
	}
	anth := streams["TestAnthropicThinking_claude-sonnet-4_thinking-streaming/0"]
	oai := streams["TestOpenAICommon_openai-gpt-4o_multi_tool_streaming/1"]

	mutate := func(evs []sseEvent, match func(sseEvent) bool, edit func(map[string]any)) []sseEvent {
		out := make([]sseEvent, len(evs))
		copy(out, evs)
		for i, e := range out {
			if match(e) {
				var m map[string]any
				if err := json.Unmarshal([]byte(e.data), &m); err != nil {
					t.Fatal(err)
				}
				edit(m)
				b, _ := json.Marshal(m)
				out[i].data = string(b)
				return out
			}
		}
		t.Fatal("no event matched")
		return nil
	}
	named := func(name string) func(sseEvent) bool { return func(e sseEvent) bool { return e.name == name } }
	chunkWith := func(s string) func(sseEvent) bool {
		return func(e sseEvent) bool { return strings.Contains(e.data, s) }
	}
	sub := func(m map[string]any, keys ...string) map[string]any {
		for _, k := range keys {
			m = m[k].(map[string]any)
		}
		return m
	}
	delta := func(m map[string]any) map[string]any {
		return m["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)
	}

	cases := []struct {
		name string
		rs   recordedStream
		edit func([]sseEvent) []sseEvent
		want string
	}{
		{"anthropic cache usage field", anth, func(evs []sseEvent) []sseEvent {
			return mutate(evs, named("message_start"), func(m map[string]any) {
				delete(sub(m, "message", "usage"), "cache_read_input_tokens")
			})
		}, "message.usage.cache_read_input_tokens"},
		{"anthropic tool_use caller", anth, func(evs []sseEvent) []sseEvent {
			return mutate(evs, chunkWith(`"tool_use"`), func(m map[string]any) { delete(sub(m, "content_block"), "caller") })
		}, "content_block.caller"},
		{"anthropic stop_sequence null", anth, func(evs []sseEvent) []sseEvent {
			return mutate(evs, named("message_delta"), func(m map[string]any) { sub(m, "delta")["stop_sequence"] = "x" })
		}, "delta.stop_sequence:null"},
		{"anthropic ping", anth, func(evs []sseEvent) []sseEvent {
			var out []sseEvent
			for _, e := range evs {
				if e.name != "ping" {
					out = append(out, e)
				}
			}
			return out
		}, "event sequence"},
		{"openai obfuscation", oai, func(evs []sseEvent) []sseEvent {
			return mutate(evs, chunkWith(`"content":"`), func(m map[string]any) { delete(m, "obfuscation") })
		}, "obfuscation:string"},
		{"openai usage null", oai, func(evs []sseEvent) []sseEvent {
			return mutate(evs, chunkWith(`"role"`), func(m map[string]any) { delete(m, "usage") })
		}, "usage:null"},
		{"openai refusal null", oai, func(evs []sseEvent) []sseEvent {
			return mutate(evs, chunkWith(`"role"`), func(m map[string]any) { delete(delta(m), "refusal") })
		}, "choices[].delta.refusal:null"},
		{"openai usage details", oai, func(evs []sseEvent) []sseEvent {
			return mutate(evs, chunkWith(`"prompt_tokens"`), func(m map[string]any) {
				delete(sub(m, "usage"), "completion_tokens_details")
			})
		}, "usage.completion_tokens_details"},
		{"openai DONE", oai, func(evs []sseEvent) []sseEvent { return evs[:len(evs)-1] }, "[DONE]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake := fakeStream(t, c.rs.provider, c.rs.path, c.rs.request, recordedTurn(t, c.rs.provider, c.rs.events))
			if d := compareStreams(t, c.rs.provider, c.rs.events, fake); len(d) > 0 {
				t.Fatalf("unmutated fake does not conform: %v", d)
			}
			d := compareStreams(t, c.rs.provider, c.rs.events, c.edit(fake))
			if len(d) == 0 {
				t.Fatal("mutation went unnoticed")
			}
			if joined := strings.Join(d, "\n"); !strings.Contains(joined, c.want) {
				t.Errorf("report does not name %q:\n%s", c.want, joined)
			}
		})
	}
}
