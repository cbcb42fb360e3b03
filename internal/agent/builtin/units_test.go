package builtin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"charm.land/fantasy"

	"github.com/execlaw/execlaw/internal/agent"
)

func TestTruncateMiddle(t *testing.T) {
	note := func(n int) string { return fmt.Sprintf("\n[... %d bytes omitted: output too long ...]\n", n) }
	for _, tc := range []struct {
		name, in string
		limit    int
		want     string
		cut      bool
	}{
		{"empty", "", 8, "", false},
		{"exact limit", "abcdefgh", 8, "abcdefgh", false},
		{"one over", "abcdefghi", 8, "ab" + note(1) + "defghi", true},
		{"far over", strings.Repeat("x", 100), 8, "xx" + note(92) + "xxxxxx", true},
		{"zero limit", "abc", 0, note(3), true},
		// 19 bytes: the head (2 bytes) and the tail (8) both start inside a
		// character, whose pieces are dropped (and not counted in the note).
		{"utf-8 boundaries", "€€€€€€x", 10, note(9) + "€€x", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, cut := truncateMiddle(tc.in, tc.limit)
			if got != tc.want || cut != tc.cut {
				t.Errorf("truncateMiddle(%q, %d) = %q, %v\nwant %q, %v", tc.in, tc.limit, got, cut, tc.want, tc.cut)
			}
		})
	}
	// Any cut of multi-byte text stays valid UTF-8 and keeps a prefix and a suffix.
	s := strings.Repeat("aé€😀", 500)
	for limit := 1; limit < 64; limit++ {
		got, cut := truncateMiddle(s, limit)
		head, tail, ok := strings.Cut(got, "\n[... ")
		_, tail, _ = strings.Cut(tail, " ...]\n")
		if !cut || !ok || !utf8.ValidString(got) || !strings.HasPrefix(s, head) || !strings.HasSuffix(s, tail) ||
			len(head) > limit/4 || len(head) < limit/4-3 || len(tail) > limit-limit/4 || len(tail) < limit-limit/4-3 {
			t.Fatalf("limit %d: %q", limit, got)
		}
	}
}

func TestCapture(t *testing.T) {
	t.Run("fits", func(t *testing.T) {
		c := newCapture(16)
		c.Write([]byte("0123456789"))
		c.Write([]byte("abcdef"))
		if got := c.String(); got != "0123456789abcdef" || c.Dropped() != 0 {
			t.Errorf("%q dropped %d", got, c.Dropped())
		}
	})
	t.Run("one over", func(t *testing.T) {
		c := newCapture(16)
		c.Write([]byte("0123456789abcdefX"))
		if got, want := c.String(), "0123\n[... 1 bytes omitted ...]\n56789abcdefX"; got != want || c.Dropped() != 1 {
			t.Errorf("%q dropped %d, want %q", got, c.Dropped(), want)
		}
	})
	t.Run("chunking does not matter", func(t *testing.T) {
		var data []byte
		for i := range 10_000 {
			data = append(data, byte('a'+i%26))
		}
		whole := newCapture(100)
		whole.Write(data)
		for _, size := range []int{1, 3, 7, 99, 100, 101, 4096} {
			c := newCapture(100)
			for rest := data; len(rest) > 0; {
				n := min(size, len(rest))
				c.Write(rest[:n])
				rest = rest[n:]
			}
			if c.String() != whole.String() || c.Dropped() != len(data)-100 {
				t.Errorf("chunks of %d: %q", size, c.String())
			}
		}
		if !strings.HasPrefix(whole.String(), string(data[:25])+"\n[... 9900 bytes omitted ...]\n") ||
			!strings.HasSuffix(whole.String(), string(data[len(data)-75:])) {
			t.Errorf("got %q", whole.String())
		}
	})
	t.Run("invalid and split UTF-8", func(t *testing.T) {
		c := newCapture(12)
		c.Write([]byte("€€\xff"))       // head is 3 bytes: exactly one €
		c.Write([]byte("😀😀😀😀\xe2\x82")) // the tail keeps 9 bytes, starting mid-character
		got := c.String()
		if !utf8.ValidString(got) || !strings.HasPrefix(got, "€\n[... ") || !strings.HasSuffix(got, "\uFFFD😀\uFFFD") {
			t.Errorf("got %q", got)
		}
	})
	t.Run("concurrent writers", func(t *testing.T) {
		c := newCapture(1000)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 1000 {
					c.Write([]byte("0123456789"))
				}
			})
		}
		wg.Wait()
		if c.Dropped() != 80_000-1000 {
			t.Errorf("dropped %d", c.Dropped())
		}
	})
}

func TestInputJSON(t *testing.T) {
	big := `{"k":"` + strings.Repeat("v", 64<<10) + `"}`
	exact := `{"k":"` + strings.Repeat("v", 64<<10-8) + `"}`
	for _, tc := range []struct {
		name, in, want string
	}{
		{"object", `{"command":"ls"}`, `{"command":"ls"}`},
		{"spaced object", " {\"a\": [1, 2]}\n", " {\"a\": [1, 2]}\n"},
		{"empty", ``, `{"invalidInput":""}`},
		{"array", `[1,2]`, `{"invalidInput":"[1,2]"}`},
		{"string", `"x"`, `{"invalidInput":"\"x\""}`},
		{"null", `null`, `{"invalidInput":"null"}`},
		{"broken", `{"command": "ls`, `{"invalidInput":"{\"command\": \"ls"}`},
		{"invalid UTF-8", "{\"a\":\"\xff\"}", "{\"a\":\"\uFFFD\"}"},
		{"exactly 64 KiB", exact, exact},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := inputJSON(tc.in)
			if string(got) != tc.want {
				t.Errorf("inputJSON(%.40q) = %.80s, want %.80s", tc.in, got, tc.want)
			}
			if !json.Valid(got) || !utf8.Valid(got) {
				t.Errorf("not valid JSON / UTF-8: %q", got)
			}
		})
	}
	t.Run("too big", func(t *testing.T) {
		got := inputJSON(big)
		var v struct{ InvalidInput string }
		if err := json.Unmarshal(got, &v); err != nil || len(got) > 64<<10+100 ||
			!strings.HasPrefix(v.InvalidInput, `{"k":"vvv`) || !strings.HasSuffix(v.InvalidInput, `vvv"}`) ||
			!strings.Contains(v.InvalidInput, "bytes omitted") {
			t.Errorf("%d bytes, %v: %.100s", len(got), err, got)
		}
	})
}

func TestDescribeError(t *testing.T) {
	anthropicStyle := `POST "https://api.anthropic.com/v1/messages": 401 Unauthorized (Request-ID: req_1) ` +
		`{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"},"request_id":"req_1"}`
	cancelled, cancel := context.WithCancelCause(context.Background())
	cancel(agent.ErrCancelled)
	plain, cancelPlain := context.WithCancel(context.Background())
	cancelPlain()
	for _, tc := range []struct {
		ctx  context.Context
		err  error
		want string
	}{
		{context.Background(), &fantasy.ProviderError{StatusCode: 401, Message: anthropicStyle},
			"the provider rejected the API key (HTTP 401): invalid x-api-key"},
		{context.Background(), &fantasy.ProviderError{StatusCode: 403, Message: "forbidden {not json"},
			"the provider rejected the API key (HTTP 403): forbidden {not json"},
		{context.Background(), fmt.Errorf("wrapped: %w", &fantasy.ProviderError{StatusCode: 429, Message: "slow down"}),
			"the provider is rate limiting this key (HTTP 429): slow down"},
		{context.Background(), &fantasy.ProviderError{StatusCode: 529, Message: "overloaded"},
			"the provider failed (HTTP 529): overloaded"},
		{context.Background(), &fantasy.ProviderError{StatusCode: 400, Message: `{"error":{"message":"prompt is too long"}}`},
			"the provider refused the request (HTTP 400): prompt is too long"},
		{context.Background(), &fantasy.ProviderError{Title: "stream error", Message: "boom"},
			"model call failed: stream error: boom"},
		{context.Background(), errors.New("dial tcp: refused"), "model call failed: dial tcp: refused"},
		{cancelled, context.Canceled, agent.ErrCancelled.Error()},
		{plain, context.Canceled, "turn cancelled"},
	} {
		if got := describeError(tc.ctx, tc.err); got != tc.want {
			t.Errorf("describeError(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestSystemPrompt(t *testing.T) {
	p := SystemPrompt(agent.Environment{Workspace: "/work", Kernel: "6.1", Sandbox: "qemu-tcg", Isolated: true, Network: "none"}, "  Be terse.  ")
	for _, want := range []string{"workspace directory: /work", "kernel: Linux 6.1", "virtual machine (qemu-tcg)",
		"no network access", "Instructions from the user:\nBe terse.\n"} {
		if !strings.Contains(p, want) {
			t.Errorf("prompt lacks %q", want)
		}
	}
	p = SystemPrompt(agent.Environment{Workspace: "/w", Network: "full"}, " ")
	if !strings.Contains(p, "NOT a virtual machine") || !strings.Contains(p, "outbound network") ||
		strings.Contains(p, "Instructions from the user") || strings.Contains(p, "kernel:") {
		t.Errorf("prompt %q", p)
	}
}
