package a2a

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// This file reads what the gateway sends back: server-sent events with
// bounded lines, the watch that ends a stream gone quiet, and plain answers
// read up to a limit.

// sseReader reads the data of server-sent events with bounded lines.
type sseReader struct {
	br    *bufio.Reader
	lim   Limits
	total int64
}

func newSSEReader(r io.Reader, lim Limits) *sseReader {
	return &sseReader{br: bufio.NewReaderSize(r, 64<<10), lim: lim}
}

// line returns the next line without its end (\n or \r\n).
func (s *sseReader) line() ([]byte, error) {
	var acc []byte
	for {
		frag, err := s.br.ReadSlice('\n')
		s.total += int64(len(frag))
		if s.total > s.lim.MaxStreamBytes {
			return nil, fmt.Errorf("%w: stream longer than %d bytes", ErrTooLarge, s.lim.MaxStreamBytes)
		}
		if len(acc)+len(frag) > s.lim.MaxLineBytes+2 {
			return nil, fmt.Errorf("%w: SSE line longer than %d bytes", ErrTooLarge, s.lim.MaxLineBytes)
		}
		switch {
		case err == nil:
			if acc == nil {
				acc = frag
			} else {
				acc = append(acc, frag...)
			}
			acc = acc[:len(acc)-1]
			if n := len(acc); n > 0 && acc[n-1] == '\r' {
				acc = acc[:n-1]
			}
			return acc, nil
		case errors.Is(err, bufio.ErrBufferFull):
			acc = append(acc, frag...)
		default:
			// A line cut off by the end of the stream is dropped with its
			// event, as the SSE specification says.
			return nil, err
		}
	}
}

// next returns the data of the next event that has any.
func (s *sseReader) next(idle *idleWatch) ([]byte, error) {
	var data []byte
	has := false
	for {
		line, err := s.line()
		if err != nil {
			return nil, err
		}
		if idle != nil {
			idle.touch()
		}
		if len(line) == 0 {
			if has {
				return data, nil
			}
			continue
		}
		if line[0] == ':' {
			continue // comment, a keep-alive
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		if string(field) != "data" {
			continue // event, id, retry: not used by nullclaw
		}
		if len(data)+len(value)+1 > s.lim.MaxEventBytes {
			return nil, fmt.Errorf("%w: SSE event larger than %d bytes", ErrTooLarge, s.lim.MaxEventBytes)
		}
		if has {
			data = append(data, '\n')
		}
		data = append(data, value...)
		has = true
	}
}

// idleWatch cancels a request when it is not touched for a while.
type idleWatch struct {
	mu     sync.Mutex
	d      time.Duration
	t      *time.Timer
	isFire bool
}

func newIdleWatch(d time.Duration, cancel context.CancelFunc) *idleWatch {
	w := &idleWatch{d: d}
	w.t = time.AfterFunc(d, func() {
		w.mu.Lock()
		w.isFire = true
		w.mu.Unlock()
		cancel()
	})
	return w
}

func (w *idleWatch) touch() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.isFire {
		w.t.Reset(w.d)
	}
}

func (w *idleWatch) fired() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.isFire
}

func (w *idleWatch) stop() { w.t.Stop() }

// readBounded reads a plain answer whole, but no more than max bytes of it:
// a gateway that never stops writing must not fill memory.
func readBounded(r io.Reader, max int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, fmt.Errorf("nullclaw: %w", err)
	}
	if len(b) > max {
		return nil, fmt.Errorf("%w: answer longer than %d bytes", ErrTooLarge, max)
	}
	return b, nil
}
