package guest

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// junkGuest is a hostile guest: it reads the request head, then answers
// whatever reply writes. It returns a client dialing it.
func junkGuest(t *testing.T, reply func(conn net.Conn)) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "junk.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				reply(conn)
			})
		}
	})
	c := NewClient(UnixDialer(sock))
	t.Cleanup(func() {
		c.Close()
		ln.Close()
		wg.Wait()
	})
	return c
}

// endless writes s once, then fill forever, until the client hangs up.
func endless(s string, fill byte) func(net.Conn) {
	return func(w net.Conn) {
		if _, err := io.WriteString(w, s); err != nil {
			return
		}
		buf := []byte(strings.Repeat(string(fill), 32<<10))
		for {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}
}

func once(s string) func(net.Conn) {
	return func(w net.Conn) { io.WriteString(w, s) }
}

const (
	okJSON   = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
	okNDJSON = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n\r\n"
)

func TestClientRejectsHostileGuests(t *testing.T) {
	ctx := testCtx(t)
	health := func(c *Client) error { _, err := c.Health(ctx); return err }
	var got []byte
	exec := func(c *Client) error {
		got = nil
		_, err := c.Exec(ctx, ExecRequest{Argv: []string{"x"}}, func(_ string, d []byte) { got = append(got, d...) })
		return err
	}
	tests := []struct {
		name    string
		reply   func(net.Conn)
		call    func(*Client) error
		wantErr string
	}{
		{"not http", endless("garbage garbage\n", 'g'), health, "malformed HTTP"},
		{"endless header", endless("HTTP/1.1 200 OK\r\nX-Junk: ", 'a'), health, "header"},
		{"endless json", endless(okJSON+`{"version":"`, 'a'), health, "exceeds"},
		{"declared huge", once("HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n{}"), health, "exceeds"},
		{"bad json", once(okJSON + `{"version":`), health, "bad answer"},
		{"redirect", once("HTTP/1.1 302 Found\r\nLocation: http://evil/\r\nContent-Length: 0\r\n\r\n"), health, "unexpected status 302"},
		{"endless frame", endless(okNDJSON, 'a'), exec, "frame larger"},
		{"endless frame after a good one", endless(okNDJSON+`{"type":"stdout","data":"aGk="}`+"\n", 'a'), exec, "frame larger"},
		{"unknown frame", once(okNDJSON + `{"type":"bogus"}` + "\n"), exec, "unknown frame type"},
		{"no exit frame", once(okNDJSON + `{"type":"stdout","data":"aGk="}` + "\n"), exec, "without an exit frame"},
		{"bad frame", once(okNDJSON + "not json\n"), exec, "bad frame"},
		{"wrong content type", once(okJSON + `{"type":"exit"}` + "\n"), exec, "content type"},
		{"oversized chunk", once(okNDJSON + `{"type":"stdout","data":"` + strings.Repeat("A", (MaxExecChunkBytes+3)/3*4+8) + `"}` + "\n"), exec, "exceeds"},
		{"error frame", once(okNDJSON + `{"type":"error","message":"boom"}` + "\n"), exec, "boom"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := junkGuest(t, tc.reply)
			err := tc.call(c)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
	// Output before a violation is still delivered, in order.
	c := junkGuest(t, once(okNDJSON+`{"type":"stdout","data":"aGk="}`+"\n"+`{"type":"stdout","data":"IQ=="}`+"\n"))
	if err := exec(c); err == nil || string(got) != "hi!" {
		t.Errorf("got %q, err %v", got, err)
	}
}

func TestClientBoundsErrorBodies(t *testing.T) {
	ctx := testCtx(t)
	// An error body that never ends is cut off; the message stays small.
	c := junkGuest(t, endless("HTTP/1.1 500 Oops\r\n\r\n"+`{"error":"`, 'x'))
	_, err := c.Health(ctx)
	ge, ok := errors.AsType[*Error](err)
	if !ok || ge.Status != 500 || ge.Code != CodeInternal || ge.Message != "unexpected status 500" {
		t.Fatalf("err = %#v", err)
	}
	// A well-formed but long message is truncated; an unknown code is not trusted.
	long := strings.Repeat("y", 50<<10)
	c = junkGuest(t, once("HTTP/1.1 404 Not Found\r\n\r\n"+`{"error":"`+long+`","code":"<script>"}`))
	_, err = c.Stat(ctx, "x")
	ge, ok = errors.AsType[*Error](err)
	if !ok || ge.Code != CodeNotFound || len(ge.Message) > maxMessageBytes || !strings.HasPrefix(ge.Message, "yyyy") {
		t.Fatalf("err = %v", err)
	}
	if !IsNotFound(err) {
		t.Error("IsNotFound is false")
	}
}

func TestClientDeadlines(t *testing.T) {
	// A guest that accepts and never answers.
	c := junkGuest(t, hangUntilClosed)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Health(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}

	// The same for a stream that stalls after starting.
	c = junkGuest(t, func(conn net.Conn) {
		io.WriteString(conn, okNDJSON+`{"type":"stdout","data":"aGk="}`+"\n")
		hangUntilClosed(conn)
	})
	ctx2, cancel2 := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel2()
	_, err = c.Exec(ctx2, ExecRequest{Argv: []string{"x"}}, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("exec err = %v", err)
	}
}

// hangUntilClosed answers nothing more and returns once the client hangs up.
func hangUntilClosed(conn net.Conn) { io.Copy(io.Discard, conn) }
