package llm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const testKey = "sk-proj-Zq8vN3xK7wLm2RtY5bHc9DfG4jPs6UeA"

// leaks reports whether out shows the key or any eight-character piece of it.
func leaks(out string) bool {
	for i := 0; i+8 <= len(testKey); i++ {
		if strings.Contains(out, testKey[i:i+8]) {
			return true
		}
	}
	return false
}

type withExported struct {
	Provider string
	APIKey   Secret
}

type withUnexported struct {
	provider string
	key      Secret
}

func TestSecretNeverFormatsTheKey(t *testing.T) {
	s := NewSecret(testKey)
	values := map[string]any{
		"Secret":                      s,
		"*Secret":                     &s,
		"struct with exported field":  withExported{"openai", s},
		"*struct with exported field": &withExported{"openai", s},
		"struct with unexported":      withUnexported{"openai", s},
		"*struct with unexported":     &withUnexported{"openai", s},
		"Config":                      Config{Provider: OpenAI, Model: "gpt-4o", APIKey: s},
		"slice":                       []Secret{s},
		"map":                         map[string]Secret{"k": s},
	}
	for name, v := range values {
		for _, verb := range []string{"%v", "%s", "%+v", "%#v", "%q", "%x", "%d", "%t"} {
			if out := fmt.Sprintf(verb, v); leaks(out) {
				t.Errorf("%s formatted with %s shows the key: %s", name, verb, out)
			}
		}
		if out := fmt.Sprint(v); leaks(out) {
			t.Errorf("fmt.Sprint(%s) shows the key: %s", name, out)
		}
	}
	if got := fmt.Sprint(s); got != "[redacted]" {
		t.Errorf("fmt.Sprint(secret) = %q, want [redacted]", got)
	}
	if got := fmt.Sprintf("%#v", s); got != "llm.Secret{[redacted]}" {
		t.Errorf("%%#v = %q", got)
	}
}

func TestSecretNeverLogsTheKey(t *testing.T) {
	s := NewSecret(testKey)
	for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var buf bytes.Buffer
		log := slog.New(h(&buf))
		log.Info("starting", "key", s)
		log.Info("starting", slog.Any("cfg", withExported{"openai", s}))
		log.Info("starting", slog.Any("ptr", &withExported{"openai", s}))
		log.Info("starting", slog.Any("cfg", Config{Provider: OpenAI, APIKey: s}))
		log.With("key", s).Info("with")
		log.Info("group", slog.Group("g", "key", s))
		if leaks(buf.String()) {
			t.Errorf("%s handler shows the key:\n%s", name, buf.String())
		}
		if !strings.Contains(buf.String(), "[redacted]") {
			t.Errorf("%s handler did not log the placeholder:\n%s", name, buf.String())
		}
	}
}

func TestSecretNeverMarshalsTheKey(t *testing.T) {
	s := NewSecret(testKey)
	out, err := json.Marshal(struct {
		Provider string  `json:"provider"`
		Key      Secret  `json:"apiKey"`
		Ptr      *Secret `json:"ptr"`
	}{"openai", s, &s})
	if err != nil {
		t.Fatal(err)
	}
	if leaks(string(out)) {
		t.Errorf("json.Marshal shows the key: %s", out)
	}
	if want := `{"provider":"openai","apiKey":"[redacted]","ptr":"[redacted]"}`; string(out) != want {
		t.Errorf("json.Marshal = %s, want %s", out, want)
	}
}

func TestSecretReveal(t *testing.T) {
	if got := NewSecret(testKey).Reveal(); got != testKey {
		t.Errorf("Reveal = %q", got)
	}
	if NewSecret(testKey).Empty() {
		t.Error("a secret with a key is Empty")
	}
	var zero Secret
	if !zero.Empty() || zero.Reveal() != "" || !NewSecret("").Empty() {
		t.Error("the zero Secret and NewSecret(\"\") must be Empty and reveal nothing")
	}
}

func TestScrub(t *testing.T) {
	s := NewSecret(testKey)
	cases := []struct{ in, want string }{
		{"no key here", "no key here"},
		{"bad key " + testKey + ".", "bad key [redacted]."},
		{"twice: " + testKey + " and " + testKey, "twice: [redacted] and [redacted]"},
		// OpenAI quotes the first and last characters with stars between.
		{"Incorrect API key provided: sk-proj-****************6UeA.", "Incorrect API key provided: [redacted]****************6UeA."},
		// A fragment of eight characters or more goes as a whole.
		{"key ends in ..." + testKey[len(testKey)-8:] + ".", "key ends in ...[redacted]."},
		{"key ends in ..." + testKey[len(testKey)-15:] + ".", "key ends in ...[redacted]."},
		{"middle: <" + testKey[10:30] + ">", "middle: <[redacted]>"},
		// Seven characters are not enough to tell a key from ordinary text.
		{"short " + testKey[20:27], "short " + testKey[20:27]},
	}
	for _, c := range cases {
		if got := s.Scrub(c.in); got != c.want {
			t.Errorf("Scrub(%q)\n = %q\nwant %q", c.in, got, c.want)
		}
	}

	short := NewSecret("abc123")
	if got := short.Scrub("key abc123 rejected"); got != "key [redacted] rejected" {
		t.Errorf("short key: Scrub = %q", got)
	}
	if got := (Secret{}).Scrub("nothing to hide"); got != "nothing to hide" {
		t.Errorf("empty key: Scrub = %q", got)
	}
}
