package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/execlaw/execlaw/internal/guest"
)

// Hybrid vsock, host side (Firecracker docs/vsock.md, "Host-Initiated
// Connections"): connect to the Unix socket at the device's uds_path, send
// "CONNECT <port>\n", read "OK <assigned host port>\n"; from then on the
// stream is the guest's AF_VSOCK connection on <port>. When nothing in the
// guest listens on the port, Firecracker closes the connection instead of
// answering, which is what a still-booting guest looks like.

const (
	// defaultHandshakeTimeout bounds CONNECT/OK. Firecracker answers as soon
	// as the guest accepts, so this only matters for a wedged VMM.
	defaultHandshakeTimeout = 5 * time.Second
	// maxHandshakeLine bounds the reply: "OK " and a 32-bit port number fit
	// in 14 bytes; anything longer is not Firecracker.
	maxHandshakeLine = 32
)

// ErrVsockNoListener is returned (wrapped) when Firecracker closed the
// connection instead of answering the CONNECT: nothing in the guest is
// listening on the port (yet).
var ErrVsockNoListener = errors.New("vsock: connection closed before OK; nothing in the guest listens on the port (yet)")

// VsockDialer returns a guest.Dialer that reaches port in the guest through
// the hybrid vsock socket at udsPath (which must fit in a Unix socket
// address).
func VsockDialer(udsPath string, port uint32) guest.Dialer {
	return vsockDialer(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", udsPath)
	}, port, defaultHandshakeTimeout)
}

func vsockDialer(dial func(ctx context.Context) (net.Conn, error), port uint32, timeout time.Duration) guest.Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		conn, err := dial(ctx)
		if err != nil {
			return nil, fmt.Errorf("vsock: %w", err)
		}
		if err := vsockHandshake(ctx, conn, port, timeout); err != nil {
			conn.Close()
			return nil, err
		}
		return conn, nil
	}
}

// vsockHandshake does CONNECT/OK on conn, within timeout and ctx.
func vsockHandshake(ctx context.Context, conn net.Conn, port uint32, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return fmt.Errorf("vsock: %w", err)
	}
	// Cancelling ctx interrupts a blocked read or write at once.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	line, err := exchange(conn, port)
	if !stop() {
		return fmt.Errorf("vsock: connect to port %d: %w", port, ctx.Err())
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("vsock: connect to port %d: no answer within %s", port, timeout)
		}
		return fmt.Errorf("vsock: connect to port %d: %w", port, err)
	}
	rest, ok := strings.CutPrefix(line, "OK ")
	if !ok {
		return fmt.Errorf("vsock: connect to port %d: unexpected answer %q", port, clip(line, 64))
	}
	if _, err := strconv.ParseUint(rest, 10, 32); err != nil {
		return fmt.Errorf("vsock: connect to port %d: bad port in answer %q", port, clip(line, 64))
	}
	// The stream is the guest's from here; the caller sets its own deadlines.
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("vsock: %w", err)
	}
	return nil
}

// exchange writes the CONNECT line and reads the answer line. It reads one
// byte at a time so that nothing after the newline (already the guest's
// bytes) is consumed; this happens once per connection.
func exchange(conn net.Conn, port uint32) (string, error) {
	if _, err := io.WriteString(conn, "CONNECT "+strconv.FormatUint(uint64(port), 10)+"\n"); err != nil {
		return "", err
	}
	var buf [maxHandshakeLine]byte
	var b [1]byte
	n := 0
	for {
		_, err := conn.Read(b[:])
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isConnReset(err) {
				if n == 0 {
					return "", ErrVsockNoListener
				}
				return "", fmt.Errorf("connection closed inside the answer %q", clip(string(buf[:n]), 64))
			}
			return "", err
		}
		if b[0] == '\n' {
			return string(buf[:n]), nil
		}
		if n == len(buf) {
			return "", fmt.Errorf("answer longer than %d bytes", maxHandshakeLine)
		}
		buf[n] = b[0]
		n++
	}
}

func isConnReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }
