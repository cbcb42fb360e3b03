package credproxy

import (
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/llm"
)

// meterAll feeds body to a fresh meter in pieces of n bytes.
func meterAll(t *testing.T, provider, contentType, body string, n int) (Usage, bool) {
	t.Helper()
	m := newMeter(dialects[provider], contentType)
	if m == nil {
		t.Fatalf("no meter for %q", contentType)
	}
	for len(body) > 0 {
		k := min(n, len(body))
		m.write([]byte(body[:k]))
		body = body[k:]
	}
	return m.finish()
}

func TestMeter(t *testing.T) {
	const anthropicSSE = "event: message_start\r\n" +
		`data: {"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":100,"cache_creation_input_tokens":20,"cache_read_input_tokens":30,"output_tokens":1}}}` + "\r\n\r\n" +
		"event: content_block_delta\n" +
		`data: {"type":"content_block_delta","delta":{"type":"text_delta","text":"the \"usage\": is not a key here"}}` + "\n\n" +
		"event: message_delta\n" +
		`data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}` + "\n\n"
	const openaiSSE = `data: {"model":"gpt-x","choices":[{"delta":{"content":"hi"}}],"usage":null}` + "\n\n" +
		`data: {"model":"gpt-x","choices":[],"usage":{"prompt_tokens":50,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":10}}}` + "\n\n" +
		"data: [DONE]\n\n"
	const responsesSSE = "event: response.completed\n" +
		`data: {"type":"response.completed","response":{"model":"gpt-r","usage":{"input_tokens":40,"output_tokens":8,"input_tokens_details":{"cached_tokens":15}}}}` + "\n\n"
	long := strings.Repeat("x", maxEventLine+10)

	tests := []struct {
		name, provider, ctype, body string
		want                        Usage
		seen                        bool
	}{
		{"anthropic sse", llm.Anthropic, "text/event-stream; charset=utf-8", anthropicSSE,
			Usage{Model: "claude-x", InputTokens: 100, OutputTokens: 42, CacheReadTokens: 30, CacheWriteTokens: 20}, true},
		{"openai sse", llm.OpenAI, "text/event-stream", openaiSSE, Usage{Model: "gpt-x", InputTokens: 40, OutputTokens: 7, CacheReadTokens: 10}, true},
		{"responses sse", llm.OpenAI, "text/event-stream", responsesSSE, Usage{Model: "gpt-r", InputTokens: 25, OutputTokens: 8, CacheReadTokens: 15}, true},
		{"overlong line skipped", llm.OpenAI, "text/event-stream", "data: " + long + "\n\n" + openaiSSE,
			Usage{Model: "gpt-x", InputTokens: 40, OutputTokens: 7, CacheReadTokens: 10}, true},
		{"no usage", llm.OpenAI, "text/event-stream", `data: {"model":"gpt-x","choices":[]}` + "\n\ndata: [DONE]\n\n", Usage{}, false},
		{"anthropic json", llm.Anthropic, "application/json",
			`{"id":"m","content":[{"type":"text","text":"` + long + `"}],"model":"claude-y","usage":{"input_tokens":5,"output_tokens":6,"cache_read_input_tokens":2}}`,
			Usage{Model: "claude-y", InputTokens: 5, OutputTokens: 6, CacheReadTokens: 2}, true},
		{"openai json", llm.OpenRouter, "application/json",
			`{"choices":[{"message":{"content":"{\"usage\":1}"}}],"usage":{"prompt_tokens":9,"completion_tokens":3},"model":"m"}`,
			Usage{Model: "m", InputTokens: 9, OutputTokens: 3}, true},
		{"not json", llm.OpenAI, "application/json", `<html>oops</html>`, Usage{}, false},
		{"json array", llm.OpenAI, "application/json", `[{"usage":{"prompt_tokens":1}}]`, Usage{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Split everywhere, as the network might.
			for _, n := range []int{1, 7, 4096, len(tc.body)} {
				if n < 64 && len(tc.body) > 10000 {
					continue // tiny pieces of a megabyte are just slow
				}
				u, seen := meterAll(t, tc.provider, tc.ctype, tc.body, n)
				if u != tc.want || seen != tc.seen {
					t.Fatalf("pieces of %d: %+v (seen %v), want %+v (seen %v)", n, u, seen, tc.want, tc.seen)
				}
			}
		})
	}
	if newMeter(dialects[llm.Anthropic], "text/plain") != nil {
		t.Error("meter for text/plain")
	}
}
