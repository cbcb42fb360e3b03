// Package workspace is the host's side of a session's workspace in the
// user's hands: paths and names checked before they reach the guest and after
// they come back from it, repositories cloned and archives unpacked into a
// new session's workspace, and what changed in it since the session began.
//
// The guest enforces confinement with its own view of the file system (see
// guest.PathWSList and the rest); everything here is the host not trusting
// the guest, nor the client, either.
package workspace

import (
	"fmt"
	"path"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/execlaw/execlaw/internal/guest"
)

// InvalidError is a request the client must fix (400).
type InvalidError struct{ msg string }

func (e *InvalidError) Error() string { return e.msg }

func invalid(format string, args ...any) error {
	return &InvalidError{msg: fmt.Sprintf(format, args...)}
}

// Rel checks a path as a client gives it, relative to the workspace or
// absolute inside root (the guest's workspace directory), and returns it
// clean and relative: "" for the workspace itself. Refused: more than
// guest.MaxWSPathBytes, invalid UTF-8, control characters (NUL, newlines,
// escape sequences...), names over guest.MaxWSNameBytes, and anything that
// climbs out of the workspace with "..". Symlinks are the guest's to
// resolve, beneath the workspace.
func Rel(root, p string) (string, error) {
	if len(p) > guest.MaxWSPathBytes {
		return "", invalid("path is longer than %d bytes", guest.MaxWSPathBytes)
	}
	if !utf8.ValidString(p) {
		return "", invalid("path is not valid UTF-8")
	}
	if i := strings.IndexFunc(p, unicode.IsControl); i >= 0 {
		r, _ := utf8.DecodeRuneInString(p[i:])
		return "", invalid("path contains a control character (%U)", r)
	}
	if strings.HasPrefix(p, "/") {
		c := path.Clean(p)
		switch {
		case root == "":
			return "", invalid("path %q is absolute: give it relative to the workspace", p)
		case c == root:
			return "", nil
		case strings.HasPrefix(c, strings.TrimSuffix(root, "/")+"/"):
			p = strings.TrimPrefix(c, strings.TrimSuffix(root, "/")+"/")
		default:
			return "", invalid("path %q is outside the workspace (%s)", p, root)
		}
	}
	c := path.Clean(p)
	if c == "." {
		return "", nil
	}
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", invalid("path %q leads outside the workspace", p)
	}
	for part := range strings.SplitSeq(c, "/") {
		if len(part) > guest.MaxWSNameBytes {
			return "", invalid("a name in the path is longer than %d bytes", guest.MaxWSNameBytes)
		}
	}
	return c, nil
}

// Entry is one entry of a directory listing as the API answers it.
type Entry struct {
	Name  string    `json:"name"`
	Type  string    `json:"type"`
	Size  int64     `json:"size"`
	MTime time.Time `json:"mtime"`
	// Escaped: the name had bytes that are not valid UTF-8, control or
	// invisible format characters (bidi overrides...), shown as \xNN or
	// \u{...} (and a backslash as \\). Such a name is for reading only: it
	// does not name the file in other requests.
	Escaped bool `json:"escaped,omitempty"`
}

// Entries checks a listing the guest gave: names that could not be names
// (empty, ".", "..", with a slash or NUL, too long) are dropped and counted;
// other names are kept, escaped where they are not plain text; unknown
// types become "other".
func Entries(in []guest.WSEntry) (out []Entry, dropped int) {
	out = make([]Entry, 0, len(in))
	for _, e := range in {
		n := e.Name
		if n == "" || n == "." || n == ".." || len(n) > guest.MaxWSNameBytes || strings.ContainsAny(n, "/\x00") {
			dropped++
			continue
		}
		en := Entry{Name: n, Type: e.Type, Size: max(e.Size, 0), MTime: e.MTime.UTC()}
		if esc, ok := escapeName(n); !ok {
			en.Name, en.Escaped = esc, true
		}
		switch en.Type {
		case guest.WSFile, guest.WSDir, guest.WSSymlink, guest.WSOther:
		default:
			en.Type = guest.WSOther
		}
		out = append(out, en)
	}
	return out, dropped
}

// hidden is a character that is invisible or rearranges what is shown:
// control characters, and format characters such as bidi overrides (a name
// like "evil\u202Etxt.exe" shows as "evilexe.txt").
func hidden(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }

// escapeName returns name with invalid bytes, control and format characters
// as \xNN (or \u{...}), and false when it had any.
func escapeName(name string) (string, bool) {
	if utf8.ValidString(name) && !strings.ContainsFunc(name, hidden) {
		return name, true
	}
	var b strings.Builder
	for i := 0; i < len(name); {
		r, size := utf8.DecodeRuneInString(name[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, name[i])
		case r == '\\':
			b.WriteString(`\\`)
		case unicode.IsControl(r) && r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		case hidden(r):
			fmt.Fprintf(&b, `\u{%x}`, r)
		default:
			b.WriteRune(r)
		}
		i += max(size, 1)
	}
	return b.String(), false
}

// Disposition is a Content-Disposition header that makes a browser save the
// answer as a file named name (its last part): a plain ASCII name for every
// client, and the full name in RFC 5987 form for those that read it.
func Disposition(name string) string {
	name = path.Base(strings.ReplaceAll(name, "\\", "/"))
	var ascii strings.Builder
	for _, r := range name {
		switch {
		case r < 0x20 || r == 0x7f || r > 0x7e:
			ascii.WriteByte('_')
		case r == '"' || r == '\\' || r == '/' || r == ';' || r == '%':
			ascii.WriteByte('_')
		default:
			ascii.WriteRune(r)
		}
	}
	a := strings.TrimLeft(ascii.String(), ".")
	if a == "" || strings.Trim(name, "./") == "" {
		a, name = "download", "download"
	}
	h := `attachment; filename="` + a + `"`
	if a != name && utf8.ValidString(name) && !strings.ContainsFunc(name, unicode.IsControl) {
		h += "; filename*=UTF-8''" + attrEscape(name)
	}
	return h
}

// attrEscape percent-encodes all but RFC 5987's attr-char.
func attrEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$&+-.^_`|~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
