package llm

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Secret holds an API key. Every way a value can leak by accident (fmt, slog,
// JSON) prints a placeholder; only Reveal gives the key, at the point of use.
//
// The key sits behind a pointer: fmt cannot call methods on an unexported
// struct field, and prints such a field's insides raw, which for a pointer is
// only its address.
type Secret struct{ p *string }

// NewSecret wraps a key.
func NewSecret(v string) Secret {
	if v == "" {
		return Secret{}
	}
	return Secret{&v}
}

// Reveal returns the key itself.
func (s Secret) Reveal() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

// Empty reports whether no key is set.
func (s Secret) Empty() bool { return s.Reveal() == "" }

func (Secret) String() string { return "[redacted]" }

// GoString keeps %#v from printing the key.
func (Secret) GoString() string { return "llm.Secret{[redacted]}" }

// Format prints the placeholder for every verb: fmt only uses String for
// %v %s %q %x %X, and would print the key itself for %d or %t.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, s.GoString())
		return
	}
	io.WriteString(f, s.String())
}

// LogValue keeps slog from printing the key.
func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// MarshalJSON keeps encoding/json from writing the key.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }

// Scrub removes the key from text that may echo it back, such as a provider's
// error message ("Incorrect API key provided: sk-...abcd"). Providers often
// quote a masked form, so any run of eight or more characters of the key is
// removed too.
//
// Every byte of text covered by some eight-byte piece of the key is part of
// the removed run, so a longer fragment goes as a whole rather than leaving
// its last few characters behind the placeholder.
func (s Secret) Scrub(text string) string {
	key := s.Reveal()
	const window = 8
	if len(key) < window {
		if key != "" {
			text = strings.ReplaceAll(text, key, "[redacted]")
		}
		return text
	}
	covered := make([]bool, len(text))
	found := false
	for i := 0; i+window <= len(key); i++ {
		frag := key[i : i+window]
		for from := 0; from+window <= len(text); {
			j := strings.Index(text[from:], frag)
			if j < 0 {
				break
			}
			for k := from + j; k < from+j+window; k++ {
				covered[k] = true
			}
			found = true
			from += j + 1
		}
	}
	if !found {
		return text
	}
	var b strings.Builder
	for i := 0; i < len(text); i++ {
		if !covered[i] {
			b.WriteByte(text[i])
			continue
		}
		b.WriteString("[redacted]")
		for i+1 < len(text) && covered[i+1] {
			i++
		}
	}
	return b.String()
}
