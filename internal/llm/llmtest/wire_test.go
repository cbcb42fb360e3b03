package llmtest

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Helpers that read SSE streams the way the comparison needs them: as event
// kinds and the JSON key paths each event carries.

var recordedDir = filepath.Join("testdata", "recorded")

type sseEvent struct {
	name string // "" for data-only events (OpenAI)
	data string
}

func parseSSE(t testing.TB, body string) []sseEvent {
	t.Helper()
	var out []sseEvent
	for _, block := range strings.Split(body, "\n\n") {
		if strings.TrimSpace(block) == "" {
			continue
		}
		var ev sseEvent
		for _, line := range strings.Split(block, "\n") {
			name, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch name {
			case "event":
				ev.name = value
			case "data":
				ev.data += value
			default:
				t.Fatalf("unexpected SSE line %q", line)
			}
		}
		out = append(out, ev)
	}
	return out
}

func (e sseEvent) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(e.data), &m); err != nil {
		t.Fatalf("event %q: data is not a JSON object: %v: %s", e.name, err, e.data)
	}
	return m
}

// keyPaths lists every key path in v with the JSON type at it, e.g.
// "choices[].delta.content:null". Array elements share the "[]" segment,
// so the set describes the shape regardless of lengths and values.
func keyPaths(v any) []string {
	set := map[string]bool{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				set[p+":"+jsonType(e)] = true
				walk(p, e)
			}
		case []any:
			for _, e := range v {
				set[prefix+"[]:"+jsonType(e)] = true
				walk(prefix+"[]", e)
			}
		}
	}
	walk("", v)
	return slices.Sorted(maps.Keys(set))
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	}
	return fmt.Sprintf("%T", v)
}

// anthropicKind names an event by its SSE name and, for blocks and
// deltas, their type: "content_block_delta/text_delta".
func anthropicKind(t testing.TB, e sseEvent) string {
	m := e.json(t)
	switch e.name {
	case "content_block_start":
		return e.name + "/" + m["content_block"].(map[string]any)["type"].(string)
	case "content_block_delta":
		return e.name + "/" + m["delta"].(map[string]any)["type"].(string)
	}
	return e.name
}

// openaiKind names a chunk by its role in the stream.
func openaiKind(t testing.TB, e sseEvent) string {
	if e.data == "[DONE]" {
		return "[DONE]"
	}
	m := e.json(t)
	if _, ok := m["error"]; ok {
		return "error"
	}
	choices, _ := m["choices"].([]any)
	if len(choices) == 0 {
		return "usage"
	}
	c := choices[0].(map[string]any)
	if c["finish_reason"] != nil {
		return "finish"
	}
	d := c["delta"].(map[string]any)
	calls, _ := d["tool_calls"].([]any)
	switch {
	case d["role"] != nil:
		return "role"
	case len(calls) > 0 && calls[0].(map[string]any)["id"] != nil:
		return "tool_start"
	case len(calls) > 0:
		return "tool_args"
	case d["content"] != nil:
		return "content"
	}
	return "other"
}

// compareStreams checks that fake speaks the same wire format as rec: the
// same sequence of event kinds (runs of one kind collapsed, since chunking
// differs) and, for every kind, the same set of key-path shapes. It
// returns one line per mismatch.
func compareStreams(t testing.TB, provider string, rec, fake []sseEvent) []string {
	t.Helper()
	kind := anthropicKind
	if provider == "openai" {
		kind = openaiKind
	}
	var diffs []string
	seq := func(evs []sseEvent) []string {
		var out []string
		for _, e := range evs {
			k := kind(t, e)
			if len(out) == 0 || out[len(out)-1] != k {
				out = append(out, k)
			}
		}
		return out
	}
	if rs, fs := seq(rec), seq(fake); !slices.Equal(rs, fs) {
		diffs = append(diffs, fmt.Sprintf("event sequence differs:\n  recorded: %v\n  fake:     %v", rs, fs))
	}

	shapes := func(label string, evs []sseEvent) map[string]map[string]bool {
		out := map[string]map[string]bool{}
		for _, e := range evs {
			k := kind(t, e)
			if out[k] == nil {
				out[k] = map[string]bool{}
			}
			if e.data == "[DONE]" {
				continue
			}
			m := e.json(t)
			if provider == "anthropic" && m["type"] != e.name {
				diffs = append(diffs, fmt.Sprintf("%s: event %q carries type %v", label, e.name, m["type"]))
			}
			out[k][strings.Join(keyPaths(m), " ")] = true
		}
		return out
	}
	rsh, fsh := shapes("recorded", rec), shapes("fake", fake)
	for _, k := range slices.Sorted(maps.Keys(rsh)) {
		if fsh[k] == nil {
			continue // already reported as a sequence difference
		}
		if !maps.Equal(rsh[k], fsh[k]) {
			onlyRec, onlyFake := pathDiff(rsh[k], fsh[k])
			diffs = append(diffs, fmt.Sprintf("%s: key paths differ\n  only recorded: %v\n  only fake:     %v\n  recorded shapes: %d, fake shapes: %d",
				k, onlyRec, onlyFake, len(rsh[k]), len(fsh[k])))
		}
	}
	return diffs
}

// pathDiff names the paths that tell two shape sets apart.
func pathDiff(a, b map[string]bool) (onlyA, onlyB []string) {
	union := func(shapes map[string]bool) map[string]bool {
		u := map[string]bool{}
		for s := range shapes {
			for p := range strings.FieldsSeq(s) {
				u[p] = true
			}
		}
		return u
	}
	ua, ub := union(a), union(b)
	for p := range ua {
		if !ub[p] {
			onlyA = append(onlyA, p)
		}
	}
	for p := range ub {
		if !ua[p] {
			onlyB = append(onlyB, p)
		}
	}
	slices.Sort(onlyA)
	slices.Sort(onlyB)
	return onlyA, onlyB
}

// recordedTurn reads back what a stream says: the Turn that would produce
// it. Applied to a recording it scripts the fake's analogue; applied to the
// fake's own output it checks the content survived.
func recordedTurn(t testing.TB, provider string, evs []sseEvent) Turn {
	t.Helper()
	var turn Turn
	var text, thinking strings.Builder
	calls := map[int]*ToolCall{}
	var order []int
	for _, e := range evs {
		if e.data == "[DONE]" {
			continue
		}
		m := e.json(t)
		if provider == "anthropic" {
			idx := int(num(m["index"]))
			switch e.name {
			case "content_block_start":
				b := m["content_block"].(map[string]any)
				if b["type"] == "tool_use" {
					calls[idx] = &ToolCall{ID: b["id"].(string), Name: b["name"].(string)}
					order = append(order, idx)
				}
			case "content_block_delta":
				d := m["delta"].(map[string]any)
				switch d["type"] {
				case "text_delta":
					text.WriteString(d["text"].(string))
				case "thinking_delta":
					thinking.WriteString(d["thinking"].(string))
				case "signature_delta":
					turn.Signature = d["signature"].(string)
				case "input_json_delta":
					calls[idx].Input += d["partial_json"].(string)
				}
			case "message_delta":
				u := m["usage"].(map[string]any)
				turn.InputTokens, turn.OutputTokens = int64(num(u["input_tokens"])), int64(num(u["output_tokens"]))
				turn.CachedInputTokens = int64(num(u["cache_read_input_tokens"]))
				turn.StopReason = m["delta"].(map[string]any)["stop_reason"].(string)
			}
			continue
		}
		if u, ok := m["usage"].(map[string]any); ok {
			cached := int64(num(u["prompt_tokens_details"].(map[string]any)["cached_tokens"]))
			turn.InputTokens = int64(num(u["prompt_tokens"])) - cached
			turn.OutputTokens = int64(num(u["completion_tokens"]))
			turn.CachedInputTokens = cached
		}
		for _, c := range m["choices"].([]any) {
			c := c.(map[string]any)
			if fr, ok := c["finish_reason"].(string); ok {
				turn.StopReason = fr
			}
			d := c["delta"].(map[string]any)
			if s, ok := d["content"].(string); ok {
				text.WriteString(s)
			}
			tcs, _ := d["tool_calls"].([]any)
			for _, tc := range tcs {
				tc := tc.(map[string]any)
				idx := int(num(tc["index"]))
				if calls[idx] == nil {
					calls[idx] = &ToolCall{}
					order = append(order, idx)
				}
				if id, ok := tc["id"].(string); ok {
					calls[idx].ID = id
				}
				f := tc["function"].(map[string]any)
				if n, ok := f["name"].(string); ok {
					calls[idx].Name = n
				}
				calls[idx].Input += f["arguments"].(string)
			}
		}
	}
	turn.Text, turn.Thinking = text.String(), thinking.String()
	for _, idx := range order {
		turn.ToolCalls = append(turn.ToolCalls, *calls[idx])
	}
	return turn
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}
