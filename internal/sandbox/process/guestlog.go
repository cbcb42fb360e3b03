package process

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// maxGuestLogBytes caps guest.log: a guest that logs without end must not
// fill the host's disk.
const maxGuestLogBytes = 1 << 20

// cappedWriter writes up to max bytes, then notes the truncation and drops
// the rest. It never fails, so the guest's stderr pipe is always drained.
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
	_, _ = fmt.Fprintf(c.w, "\n[execlaw: guest log reached %d bytes; further output dropped]\n", maxGuestLogBytes)
	c.left = 0
	c.dropped = true
	return len(p), nil
}

// logTail returns up to n bytes from the end of the file at path.
func logTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-n, 0)
	b := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
		return ""
	}
	return strings.TrimSpace(string(b))
}
