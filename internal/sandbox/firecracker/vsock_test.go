package firecracker

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// vsockServer listens on a Unix socket and runs answer for each connection,
// after reading the CONNECT line (which it checks).
func vsockServer(t *testing.T, answer func(c net.Conn)) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "v.sock")
	ln, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, len("CONNECT 1024\n"))
				if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "CONNECT 1024\n" {
					t.Errorf("handshake line %q, %v", buf, err)
					return
				}
				answer(c)
			}()
		}
	}()
	return p
}

func dialTest(t *testing.T, path string, timeout time.Duration) (net.Conn, error) {
	t.Helper()
	dial := vsockDialer(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}, 1024, timeout)
	return dial(t.Context())
}

func TestVsockHandshake(t *testing.T) {
	// The guest's first bytes arrive in the same write as the OK: the dialer
	// must leave them in the stream.
	p := vsockServer(t, func(c net.Conn) {
		io.WriteString(c, "OK 1073741824\nguest speaks first")
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err == nil {
			c.Write(b)
		}
	})
	c, err := dialTest(t, p, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := make([]byte, len("guest speaks first"))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "guest speaks first" {
		t.Fatalf("stream after OK: %q, %v", b, err)
	}
	io.WriteString(c, "ping")
	if _, err := io.ReadFull(c, b[:4]); err != nil || string(b[:4]) != "ping" {
		t.Fatalf("echo: %q, %v", b[:4], err)
	}
	// The handshake deadline was cleared.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
}

func TestVsockHandshakeErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		answer func(net.Conn)
		want   string
		is     error
	}{
		{"closed", func(net.Conn) {}, "nothing in the guest listens", ErrVsockNoListener},
		{"garbage", func(c net.Conn) { io.WriteString(c, "ERR no\n") }, `unexpected answer "ERR no"`, nil},
		{"bare OK", func(c net.Conn) { io.WriteString(c, "OK\n") }, `unexpected answer "OK"`, nil},
		{"bad port", func(c net.Conn) { io.WriteString(c, "OK 99999999999\n") }, "bad port in answer", nil},
		{"oversized", func(c net.Conn) { io.WriteString(c, "OK "+strings.Repeat("1", 100)+"\n") }, "longer than 32 bytes", nil},
		{"cut short", func(c net.Conn) { io.WriteString(c, "OK 12") }, "connection closed inside the answer", nil},
		{"silent", func(c net.Conn) { io.Copy(io.Discard, c) }, "no answer within 100ms", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := vsockServer(t, c.answer)
			start := time.Now()
			conn, err := dialTest(t, p, 100*time.Millisecond)
			if err == nil {
				conn.Close()
				t.Fatal("handshake succeeded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q lacks %q", err, c.want)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %v is not %v", err, c.is)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestVsockHandshakeContext(t *testing.T) {
	release := make(chan struct{})
	p := vsockServer(t, func(net.Conn) { <-release })
	defer close(release)
	dial := VsockDialer(p, 1024)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := dial(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled handshake: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("cancel took %v", d)
	}
	// A context deadline shorter than the handshake timeout wins.
	ctx, cancel2 := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel2()
	if _, err := dial(ctx); err == nil || time.Since(start) > 2*time.Second {
		t.Errorf("deadline: %v after %v", err, time.Since(start))
	}
}

func TestVsockNoSocket(t *testing.T) {
	_, err := VsockDialer(filepath.Join(t.TempDir(), "absent.sock"), 1024)(t.Context())
	if err == nil || !strings.Contains(err.Error(), "vsock:") {
		t.Errorf("dial to a missing socket: %v", err)
	}
}
