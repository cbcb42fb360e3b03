package guest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// attached drives an attached command from the test goroutine.
type attached struct {
	t              *testing.T
	a              *Attached
	stdout, stderr bytes.Buffer
	end            *ExecFrame
}

func attach(t *testing.T, c *Client, req ExecRequest) *attached {
	t.Helper()
	a, err := c.Attach(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	// A guest that stops answering fails the test instead of hanging it.
	_ = a.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	return &attached{t: t, a: a}
}

// next reads one frame into the buffers; false once the command ended.
func (s *attached) next() bool {
	s.t.Helper()
	if s.end != nil {
		return false
	}
	f, err := s.a.Next()
	if err != nil {
		s.t.Fatalf("Next: %v (stdout %q, stderr %q)", err, s.stdout.String(), s.stderr.String())
	}
	switch f.Type {
	case FrameStdout:
		s.stdout.Write(f.Data)
	case FrameStderr:
		s.stderr.Write(f.Data)
	default:
		s.end = &f
	}
	return s.end == nil
}

// waitStdout reads until stdout contains want.
func (s *attached) waitStdout(want string) {
	s.t.Helper()
	for !strings.Contains(s.stdout.String(), want) {
		if !s.next() {
			s.t.Fatalf("command ended (%+v) before stdout had %q; it has %q", *s.end, want, s.stdout.String())
		}
	}
}

// wait reads to the terminal frame and checks that nothing follows it.
func (s *attached) wait() ExecFrame {
	s.t.Helper()
	for s.next() {
	}
	if f, err := s.a.Next(); err != io.EOF {
		s.t.Fatalf("after the last frame: %+v, %v; want io.EOF", f, err)
	}
	return *s.end
}

func (s *attached) write(data string) {
	s.t.Helper()
	if _, err := s.a.Write([]byte(data)); err != nil {
		s.t.Fatal(err)
	}
}

func TestAttachInteractive(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	// Each answer depends on the line before it, so the input really is live.
	s := attach(t, g.c, sh(`while read l; do echo "got $l"; done; echo bye >&2; exit 4`))
	s.write("one\n")
	s.waitStdout("got one\n")
	s.write("two\nthree\n")
	s.waitStdout("got three\n")
	if err := s.a.CloseStdin(); err != nil {
		t.Fatal(err)
	}
	end := s.wait()
	if end.Type != FrameExit || end.ExitCode != 4 || end.Signal != "" || end.TimedOut {
		t.Errorf("end = %+v", end)
	}
	if s.stdout.String() != "got one\ngot two\ngot three\n" || s.stderr.String() != "bye\n" {
		t.Errorf("stdout %q, stderr %q", s.stdout.String(), s.stderr.String())
	}
	if r := end.Result(); r.ExitCode != 4 || r.Duration <= 0 {
		t.Errorf("result = %+v", r)
	}
}

func TestAttachStdinOrderAndSize(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	// The request's own stdin comes first, then writes, across many frames
	// (more than the guest queues, so backpressure is exercised too).
	big := make([]byte, 3<<20)
	rand.Read(big)
	req := ExecRequest{Argv: []string{"cat"}, Stdin: []byte("first-")}
	s := attach(t, g.c, req)
	// Written from another goroutine, as a real caller must: cat's output
	// has to be read for it to go on reading its input.
	written := make(chan error, 1)
	go func() {
		n, err := s.a.Write(big)
		if err == nil && n != len(big) {
			err = fmt.Errorf("wrote %d of %d bytes", n, len(big))
		}
		if err == nil {
			err = s.a.CloseStdin()
		}
		written <- err
	}()
	end := s.wait()
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	if end.Type != FrameExit || end.ExitCode != 0 {
		t.Errorf("end %+v", end)
	}
	if want := append([]byte("first-"), big...); !bytes.Equal(s.stdout.Bytes(), want) {
		t.Errorf("stdout has %d bytes, want the %d sent", s.stdout.Len(), len(want))
	}
}

func TestAttachSignals(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	pidFile := filepath.Join(t.TempDir(), "child")
	// The signal goes to the whole group, background child included.
	req := sh(`sleep 1000 & echo $! > "$PIDS"; echo ready; wait`)
	req.Env = []string{"PIDS=" + pidFile}
	s := attach(t, g.c, req)
	s.waitStdout("ready\n")
	child := readPid(t, pidFile)
	if err := s.a.Signal(SignalTerm); err != nil {
		t.Fatal(err)
	}
	if end := s.wait(); end.Type != FrameExit || end.Signal != "terminated" {
		t.Errorf("end = %+v", end)
	}
	waitGone(t, child)

	// The command sees the signal and may handle it.
	s = attach(t, g.c, sh(`trap 'echo caught; exit 7' INT; echo ready; while :; do sleep 0.01; done`))
	s.waitStdout("ready\n")
	if err := s.a.Signal(SignalInt); err != nil {
		t.Fatal(err)
	}
	if end := s.wait(); end.Type != FrameExit || end.ExitCode != 7 || !strings.Contains(s.stdout.String(), "caught") {
		t.Errorf("end %+v, stdout %q", end, s.stdout.String())
	}

	s = attach(t, g.c, sh(`echo ready; exec sleep 1000`))
	s.waitStdout("ready\n")
	if err := s.a.Signal(SignalKill); err != nil {
		t.Fatal(err)
	}
	if end := s.wait(); end.Type != FrameExit || end.ExitCode != -1 || end.Signal != "killed" {
		t.Errorf("end = %+v", end)
	}
	// After the exit a signal is harmless (it may fail: the guest hung up).
	_ = s.a.Signal(SignalTerm)
	if err := s.a.Signal("STOP"); err == nil {
		t.Error("unknown signal accepted")
	}
}

func TestAttachCloseKillsProcessGroup(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	dir := t.TempDir()
	req := sh(`echo $$ > "$D/leader"; sleep 1000 & echo $! > "$D/child"; echo started; wait`)
	req.Env = []string{"D=" + dir}
	s := attach(t, g.c, req)
	s.waitStdout("started\n")
	leader, child := readPid(t, filepath.Join(dir, "leader")), readPid(t, filepath.Join(dir, "child"))
	if err := s.a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	waitGone(t, leader)
	waitGone(t, child)
	if _, err := s.a.Next(); err == nil {
		t.Error("Next after Close succeeded")
	}
}

func TestAttachTimeout(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	req := sh(`echo ready; sleep 1000`)
	req.TimeoutSec = 1
	s := attach(t, g.c, req)
	if end := s.wait(); end.Type != FrameExit || !end.TimedOut || end.Signal != "killed" {
		t.Errorf("end = %+v", end)
	}
}

func TestAttachProtocolViolationEndsSession(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	for name, junk := range map[string]string{
		"not json":       "not json\n",
		"unknown type":   `{"type":"launch"}` + "\n",
		"unknown signal": `{"type":"signal","signal":"STOP"}` + "\n",
		"oversized":      strings.Repeat("x", MaxFrameBytes+1),
	} {
		t.Run(name, func(t *testing.T) {
			s := attach(t, g.c, sh(`echo ready; exec sleep 1000`))
			s.waitStdout("ready\n")
			if _, err := io.WriteString(s.a.conn, junk); err != nil {
				t.Fatal(err)
			}
			if end := s.wait(); end.Type != FrameError || !strings.Contains(end.Message, "from host") {
				t.Errorf("end = %+v", end)
			}
		})
	}
}

func TestAttachRefusals(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)
	if _, err := g.c.Attach(ctx, ExecRequest{Argv: []string{"no-such-command-xyz"}}); !IsNotFound(err) {
		t.Errorf("missing command: %v", err)
	}
	if _, err := g.c.Attach(ctx, ExecRequest{}); err == nil {
		t.Error("empty argv accepted")
	}
	// Without the upgrade headers the guest refuses before running anything.
	err := g.c.call(ctx, http.MethodPost, PathAttach, sh("true"), nil)
	if ge, ok := errors.AsType[*Error](err); !ok || ge.Code != CodeInvalid || !strings.Contains(ge.Message, "Upgrade") {
		t.Errorf("plain POST: %v", err)
	}
}

func TestAttachClientRejectsHostileGuests(t *testing.T) {
	const switched = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: execlaw-attach/1\r\n\r\n"
	// Frames that arrive in the same write as the 101 are not lost.
	c := junkGuest(t, once(switched+`{"type":"stdout","data":"aGk="}`+"\n"+`{"type":"exit","exitCode":3}`+"\n"))
	s := attach(t, c, sh("x"))
	if end := s.wait(); end.ExitCode != 3 || s.stdout.String() != "hi" {
		t.Errorf("end %+v, stdout %q", end, s.stdout.String())
	}

	ctx := testCtx(t)
	for _, tc := range []struct {
		name, reply, wantErr string
	}{
		{"not switching", okJSON + "{}", "unexpected status 200"},
		{"other protocol", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", "websocket"},
		{"refusal", "HTTP/1.1 404 Not Found\r\nContent-Length: 33\r\n\r\n" + `{"error":"nope","code":"invalid"}`, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := junkGuest(t, once(tc.reply)).Attach(ctx, sh("x"))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
	for _, tc := range []struct {
		name, reply, wantErr string
	}{
		{"bad frame", switched + "junk\n", "bad frame"},
		{"unknown frame", switched + `{"type":"bogus"}` + "\n", "unknown frame type"},
		{"no exit", switched + `{"type":"stdout","data":"aGk="}` + "\n", "without an exit frame"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := attach(t, junkGuest(t, once(tc.reply)), sh("x"))
			var err error
			for err == nil {
				_, err = s.a.Next()
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}

	// A guest that never answers the upgrade: ctx bounds the handshake.
	short, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := junkGuest(t, hangUntilClosed).Attach(short, sh("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hanging guest: %v", err)
	}
}
