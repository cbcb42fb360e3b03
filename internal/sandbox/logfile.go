package sandbox

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// NewCappedWriter returns a writer that passes up to max bytes on to w, then
// writes a note that the log was truncated and drops the rest. Its Write never
// fails, so a child's output pipe copied into it is always drained; this is
// how a driver keeps a log that a guest controls (its console, its stderr)
// from filling the host's disk. It is safe for concurrent use.
func NewCappedWriter(w io.Writer, max int64) io.Writer {
	return &cappedWriter{w: w, max: max, left: max}
}

type cappedWriter struct {
	mu      sync.Mutex
	w       io.Writer
	max     int64
	left    int64
	dropped bool
}

func (c *cappedWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dropped {
		return len(p), nil
	}
	if int64(len(p)) <= c.left {
		n, _ := c.w.Write(p)
		c.left -= int64(n)
		return len(p), nil
	}
	_, _ = c.w.Write(p[:c.left])
	_, _ = fmt.Fprintf(c.w, "\n[execlaw: log reached %d bytes; further output dropped]\n", c.max)
	c.left = 0
	c.dropped = true
	return len(p), nil
}

// LogTail returns the end of the file at path, for an error message: at most
// its last maxBytes bytes and, when maxLines > 0, its last maxLines lines. The
// text is made printable (invalid UTF-8 replaced, control characters but
// newlines and tabs dropped: a console log can hold escape sequences) and
// trimmed of surrounding space. It is "" when the file cannot be read or
// holds nothing printable.
func LogTail(path string, maxBytes int64, maxLines int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-maxBytes, 0)
	b := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
		return ""
	}
	s := strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\n' && r != '\t' || r == 0x7f {
			return -1
		}
		return r
	}, strings.ToValidUTF8(string(b), "\uFFFD"))
	s = strings.TrimSpace(s)
	if lines := strings.Split(s, "\n"); maxLines > 0 && len(lines) > maxLines {
		s = strings.Join(lines[len(lines)-maxLines:], "\n")
	}
	return s
}
