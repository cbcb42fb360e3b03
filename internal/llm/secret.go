package llm

import (
	"log/slog"
	"strings"
)

// Secret holds an API key. Every way a value can leak by accident (fmt, slog,
// JSON) prints a placeholder; only Reveal gives the key, at the point of use.
type Secret struct{ v string }

// NewSecret wraps a key.
func NewSecret(v string) Secret { return Secret{v} }

// Reveal returns the key itself.
func (s Secret) Reveal() string { return s.v }

// Empty reports whether no key is set.
func (s Secret) Empty() bool { return s.v == "" }

func (Secret) String() string { return "[redacted]" }

// GoString keeps %#v from printing the key.
func (Secret) GoString() string { return "llm.Secret{[redacted]}" }

// LogValue keeps slog from printing the key.
func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// MarshalJSON keeps encoding/json from writing the key.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }

// Scrub removes the key from text that may echo it back, such as a provider's
// error message ("Incorrect API key provided: sk-...abcd"). Providers often
// quote a masked form, so any run of eight or more characters of the key is
// removed too.
func (s Secret) Scrub(text string) string {
	if len(s.v) < 8 {
		if s.v != "" {
			text = strings.ReplaceAll(text, s.v, "[redacted]")
		}
		return text
	}
	text = strings.ReplaceAll(text, s.v, "[redacted]")
	const window = 8
	for i := 0; i+window <= len(s.v); i++ {
		if frag := s.v[i : i+window]; strings.Contains(text, frag) {
			text = strings.ReplaceAll(text, frag, "[redacted]")
		}
	}
	return text
}
