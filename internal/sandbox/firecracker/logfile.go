package firecracker

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// maxLogBytes caps firecracker.log. The VMM's stdout carries the guest's
// serial console, which the guest controls: it must not fill the host's disk.
const maxLogBytes = 1 << 20

// Bounds of the log excerpt carried in errors.
const (
	tailBytes = 4 << 10
	tailLines = 20
)

// cappedWriter writes up to max bytes, then notes the truncation and drops
// the rest. It never fails, so the VMM's output pipe is always drained.
type cappedWriter struct {
	mu      sync.Mutex
	w       io.Writer
	left    int64
	dropped bool
}

func newCappedWriter(w io.Writer, max int64) *cappedWriter {
	return &cappedWriter{w: w, left: max}
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
	_, _ = fmt.Fprintf(c.w, "\n[execlaw: log reached %d bytes; further output dropped]\n", maxLogBytes)
	c.left = 0
	c.dropped = true
	return len(p), nil
}

// logTail returns the last lines of the file at path, at most tailLines
// lines and tailBytes bytes, as printable text.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-tailBytes, 0)
	b := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
		return ""
	}
	s := strings.TrimSpace(strings.ToValidUTF8(string(b), "\uFFFD"))
	if lines := strings.Split(s, "\n"); len(lines) > tailLines {
		s = strings.Join(lines[len(lines)-tailLines:], "\n")
	}
	// Console output can hold control sequences; keep the error printable.
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\n' && r != '\t' || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// withTail appends the log excerpt to err, when there is one.
func withTail(err error, path string) error {
	if t := logTail(path); t != "" {
		return fmt.Errorf("%w; firecracker log (last lines):\n%s", err, t)
	}
	return err
}
