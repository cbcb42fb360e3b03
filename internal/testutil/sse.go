package testutil

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// SSEEvent is one parsed Server-Sent Event.
type SSEEvent struct {
	ID   int64
	Type string
	Data json.RawMessage
}

// Field decodes one top-level field of the event's data as a string.
func (e SSEEvent) Field(name string) string {
	var m map[string]any
	if json.Unmarshal(e.Data, &m) != nil {
		return ""
	}
	switch v := m[name].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

// SSEStream reads an event stream in the background and lets a test wait for
// events with a deadline.
type SSEStream struct {
	Resp *http.Response

	mu       sync.Mutex
	events   []SSEEvent
	comments int
	err      error
	ended    bool
	changed  chan struct{}
	cancel   context.CancelFunc
}

// OpenSSE opens url as an event stream. Headers are added to the request.
func OpenSSE(tb testing.TB, client *http.Client, url string, header http.Header) *SSEStream {
	tb.Helper()
	s, err := DialSSE(client, url, header)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

// DialSSE is OpenSSE for a goroutine other than the test's own, which may
// not fail the test: it returns the error, and the caller closes the stream.
func DialSSE(client *http.Client, url string, header http.Header) (*SSEStream, error) {
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open stream %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("open stream %s: %s: %s", url, resp.Status, body)
	}
	s := &SSEStream{Resp: resp, changed: make(chan struct{}), cancel: cancel}
	go s.read()
	return s, nil
}

// Close stops reading.
func (s *SSEStream) Close() {
	s.cancel()
	s.Resp.Body.Close()
}

func (s *SSEStream) read() {
	r := bufio.NewReader(s.Resp.Body)
	var cur SSEEvent
	var data []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			s.finish(err)
			return
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if cur.Type != "" || len(data) > 0 {
				cur.Data = json.RawMessage(strings.Join(data, "\n"))
				s.add(cur)
			}
			cur, data = SSEEvent{}, nil
		case strings.HasPrefix(line, ":"):
			s.mu.Lock()
			s.comments++
			s.mu.Unlock()
		case strings.HasPrefix(line, "id: "):
			cur.ID, _ = strconv.ParseInt(strings.TrimPrefix(line, "id: "), 10, 64)
		case strings.HasPrefix(line, "event: "):
			cur.Type = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		}
	}
}

func (s *SSEStream) add(e SSEEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, e)
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *SSEStream) finish(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
	if err != io.EOF {
		s.err = err
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// Events returns every event read so far.
func (s *SSEStream) Events() []SSEEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SSEEvent(nil), s.events...)
}

// Comments counts comment lines (heartbeats) read so far.
func (s *SSEStream) Comments() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.comments
}

// Ended reports whether the server closed the stream.
func (s *SSEStream) Ended() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

// WaitFor waits until match accepts an event read so far (searching from the
// start) and returns it; it fails the test at the deadline or if the stream
// ends first.
func (s *SSEStream) WaitFor(tb testing.TB, timeout time.Duration, what string, match func(SSEEvent) bool) SSEEvent {
	tb.Helper()
	return s.wait(tb, timeout, what, func(events []SSEEvent) (SSEEvent, bool) {
		for _, e := range events {
			if match(e) {
				return e, true
			}
		}
		return SSEEvent{}, false
	})
}

// WaitType waits for the n-th (1-based) event of a type.
func (s *SSEStream) WaitType(tb testing.TB, timeout time.Duration, typ string, n int) SSEEvent {
	tb.Helper()
	return s.wait(tb, timeout, fmt.Sprintf("event %s #%d", typ, n), func(events []SSEEvent) (SSEEvent, bool) {
		seen := 0
		for _, e := range events {
			if e.Type == typ {
				if seen++; seen == n {
					return e, true
				}
			}
		}
		return SSEEvent{}, false
	})
}

func (s *SSEStream) wait(tb testing.TB, timeout time.Duration, what string, find func([]SSEEvent) (SSEEvent, bool)) SSEEvent {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		e, ok := find(s.events)
		ended, err, changed := s.ended, s.err, s.changed
		s.mu.Unlock()
		if ok {
			return e
		}
		if ended {
			tb.Fatalf("stream ended (err %v) before %s; events: %s", err, what, Summary(s.Events()))
		}
		select {
		case <-changed:
		case <-deadline:
			tb.Fatalf("timed out after %s waiting for %s; events: %s", timeout, what, Summary(s.Events()))
		}
	}
}

// WaitEnd waits until the server closes the stream.
func (s *SSEStream) WaitEnd(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		ended, changed := s.ended, s.changed
		s.mu.Unlock()
		if ended {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			tb.Fatalf("stream did not end within %s", timeout)
		}
	}
}

// Summary lists event ids and types, for failure messages.
func Summary(events []SSEEvent) string {
	var b strings.Builder
	for _, e := range events {
		fmt.Fprintf(&b, "%d:%s ", e.ID, e.Type)
	}
	return b.String()
}
