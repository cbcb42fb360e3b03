package guest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Upgraded connections (attach, tunnel accept) are HTTP/1.1 only up to the
// 101 Switching Protocols answer; afterwards the connection carries the
// named protocol. Both ends work on the raw net.Conn from then on, so that
// callers get deadlines and a real Close.

// maxHandshakeBytes bounds what the client reads of the guest's answer to an
// upgrade request: the head and, for a refusal, an error body.
const maxHandshakeBytes = 64<<10 + maxErrorBodyBytes + 4<<10

// errNoContent is the guest answering 204 instead of switching protocols.
var errNoContent = errors.New("guest answered 204 No Content")

// wantsUpgrade reports whether r asks to switch to proto.
func wantsUpgrade(r *http.Request, proto string) bool {
	if !strings.EqualFold(strings.TrimSpace(r.Header.Get("Upgrade")), proto) {
		return false
	}
	for _, v := range r.Header.Values("Connection") {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// switchProtocols answers 101 on the hijacked connection. The returned conn
// first yields whatever the server had buffered past the request, so no byte
// the host sent early is lost.
func switchProtocols(w http.ResponseWriter, proto string) (net.Conn, error) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+proto+"\r\n\r\n"); err != nil {
		conn.Close()
		return nil, err
	}
	return withBuffered(conn, brw.Reader), nil
}

// upgrade sends an upgrade request for proto on a fresh connection (an
// upgraded connection never returns to the pool) and returns it once the
// guest switched. ctx and limit bound the handshake only. A 204 answer is
// errNoContent; other answers are the guest's *Error.
func (c *Client) upgrade(ctx context.Context, path, proto string, in any, limit time.Duration) (net.Conn, error) {
	body, err := encodeRequest(path, in)
	if err != nil {
		return nil, err
	}
	conn, err := c.dial(ctx)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		return nil, fmt.Errorf("guest %s: %w", path, err)
	}
	// A deadline in the past unblocks whatever read or write is pending, which
	// is how ctx ending interrupts the handshake.
	_ = conn.SetDeadline(time.Now().Add(limit))
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (net.Conn, error) {
		stop()
		conn.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		if _, ok := errors.AsType[*Error](err); ok || err == errNoContent {
			return nil, err
		}
		return nil, fmt.Errorf("guest %s: %w", path, err)
	}

	req, err := http.NewRequest(http.MethodPost, baseURL+path, bytes.NewReader(body))
	if err != nil {
		return fail(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", proto)
	bw := bufio.NewWriter(conn)
	if err := req.Write(bw); err != nil {
		return fail(err)
	}
	if err := bw.Flush(); err != nil {
		return fail(err)
	}

	br := bufio.NewReader(&io.LimitedReader{R: conn, N: maxHandshakeBytes})
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fail(err)
	}
	switch {
	case resp.StatusCode == http.StatusNoContent:
		return fail(errNoContent)
	case resp.StatusCode != http.StatusSwitchingProtocols:
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return fail(fmt.Errorf("unexpected status %d", resp.StatusCode))
		}
		return fail(readError(resp))
	case !strings.EqualFold(resp.Header.Get("Upgrade"), proto):
		return fail(fmt.Errorf("guest switched to %q, not %q", truncate(resp.Header.Get("Upgrade"), 64), proto))
	}
	if !stop() {
		return fail(ctx.Err()) // ctx ended just as the answer came
	}
	_ = conn.SetDeadline(time.Time{})
	return withBuffered(conn, br), nil
}

// withBuffered returns conn, first yielding what br holds already (read from
// conn past the HTTP exchange).
func withBuffered(conn net.Conn, br *bufio.Reader) net.Conn {
	n := br.Buffered()
	if n == 0 {
		return conn
	}
	pre, _ := br.Peek(n)
	return &prefixConn{Conn: conn, pre: bytes.Clone(pre)}
}

// prefixConn is a net.Conn whose reads return pre before reading the conn.
type prefixConn struct {
	net.Conn
	mu  sync.Mutex
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}
