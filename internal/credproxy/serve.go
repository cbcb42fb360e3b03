package credproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Limits on what the agent may send and how long it may take.
const (
	maxHeaderBytes = 64 << 10
	maxBodyBytes   = 32 << 20 // the largest request forwarded (images make big ones)
	maxErrorBody   = 1 << 20  // the largest upstream error answer relayed (scrubbed whole)
	idleTimeout    = 2 * time.Minute
	bodyTimeout    = time.Minute
	writeTimeout   = time.Minute // per write: an agent that stops reading is dropped
	lingerTimeout  = time.Second
	lingerBytes    = 1 << 20
	copyBufBytes   = 32 << 10
	// MaxConns bounds the connections one proxy (one session) serves at
	// once: the guest opens as many as it likes, the host holds this many.
	MaxConns = 16
)

// ServeConn serves the HTTP/1.1 requests arriving on conn, one after
// another (keep-alive), until the agent closes it, an idle timeout passes,
// or a request is refused; then it closes conn. Closing conn from elsewhere
// ends it too, and cancels the upstream request in flight.
//
// It does not use http.Server because the connections come one by one from
// a tunnel, and because the answer must be relayed exactly as it arrives.
func (p *Proxy) ServeConn(conn net.Conn) {
	defer conn.Close()
	select {
	case p.conns <- struct{}{}:
		defer func() { <-p.conns }()
	default:
		p.refuse(conn, http.StatusServiceUnavailable, fmt.Sprintf("more than %d connections at once", MaxConns), false)
		return
	}
	// The limit applies while a request head is read, so a head without end
	// cannot grow the buffer; the body is bounded on its own.
	lr := &io.LimitedReader{R: conn}
	br := bufio.NewReader(lr)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(idleTimeout))
		lr.N = maxHeaderBytes
		req, err := http.ReadRequest(br)
		if err != nil {
			var ne net.Error
			switch {
			case lr.N <= 0:
				p.refuse(conn, http.StatusRequestHeaderFieldsTooLarge, "request header too large", false)
			case err == io.EOF, errors.As(err, &ne), errors.Is(err, net.ErrClosed):
				// The agent closed an idle connection, or it timed out.
			default:
				p.refuse(conn, http.StatusBadRequest, "malformed request", false)
			}
			return
		}
		lr.N = math.MaxInt64
		if !p.serve(conn, br, req) {
			return
		}
	}
}

// serve answers one request and reports whether the connection may carry
// another.
func (p *Proxy) serve(conn net.Conn, br *bufio.Reader, req *http.Request) bool {
	start := time.Now()
	keep := !req.Close
	upPath, reason := p.check(req)
	if reason != "" {
		p.log.Warn("credproxy: refused", "method", req.Method, "target", clip(req.RequestURI), "reason", reason)
		p.refuse(conn, http.StatusForbidden, reason, false)
		return false
	}

	if req.ContentLength > maxBodyBytes {
		p.refuse(conn, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", maxBodyBytes), false)
		return false
	}
	if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
		// curl waits for this before sending a large body.
		_, _ = io.WriteString(deadlineWriter{conn}, "HTTP/1.1 100 Continue\r\n\r\n")
	}

	p.inflight.begin()
	defer p.inflight.end() // after OnUsage: Settle promises the usage is in
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The body goes upstream as it arrives, never whole in memory. Once it
	// has all been read, the connection is idle until the answer is
	// relayed, and watched: an agent that leaves cancels the upstream call.
	_ = conn.SetReadDeadline(time.Now().Add(bodyTimeout))
	var watch watcher
	body := newStreamedBody(req.Body, maxBodyBytes, func() {
		_ = conn.SetReadDeadline(time.Time{})
		watch.start(conn, br, cancel)
	})
	defer watch.stop()

	up, err := p.upstreamRequest(ctx, req, upPath, body)
	if err != nil {
		p.log.Error("credproxy: building upstream request", "err", p.key.Scrub(err.Error()))
		return p.refuse(conn, http.StatusBadGateway, "proxy could not build the upstream request", false)
	}
	resp, err := p.client.Do(up)
	// The transport may still be sending the body after the answer's head
	// (an upstream that answers early); the connection is read again only
	// once it is done with it, and reused only if the body ended cleanly.
	body.released(bodyTimeout)
	switch {
	case body.tooBig():
		if resp != nil {
			resp.Body.Close()
		}
		p.refuse(conn, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", maxBodyBytes), false)
		return false
	case !body.complete():
		keep = false
	}
	if err != nil {
		if ctx.Err() != nil || body.broken() {
			return false // the agent went away first, or stalled mid-body
		}
		msg := p.key.Scrub(err.Error())
		p.log.Warn("credproxy: upstream failed", "path", req.URL.Path, "err", msg)
		return p.refuse(conn, http.StatusBadGateway, "upstream request failed: "+msg, keep)
	}
	usage, seen, ok := p.relay(ctx, conn, req, resp, &keep)
	watch.stop()
	if seen && p.onUsage != nil {
		p.onUsage(usage)
	}
	p.log.Info("credproxy", "method", req.Method, "path", req.URL.Path, "status", resp.StatusCode,
		"ms", time.Since(start).Milliseconds(), "model", usage.Model, "in", usage.InputTokens, "out", usage.OutputTokens)
	return ok && keep
}

// check decides whether a request may go upstream, and where. The reason is
// empty when it may.
func (p *Proxy) check(req *http.Request) (upPath, reason string) {
	// Absolute-form ("GET http://elsewhere/ HTTP/1.1") would make this a
	// general forward proxy; authority-form and "*" serve no model call.
	if !strings.HasPrefix(req.RequestURI, "/") || req.URL.Scheme != "" || req.URL.Host != "" {
		return "", "only origin-form request targets are served"
	}
	host := req.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host != "127.0.0.1" && !strings.EqualFold(host, "localhost") {
		return "", "requests must be addressed to 127.0.0.1 or localhost"
	}
	if !p.authorized(req.Header) {
		return "", "invalid or missing token"
	}
	// The upstream path comes from the allow-list, never from the request,
	// so no spelling of the path (encoded slashes, dot segments) reaches
	// anything else.
	up, ok := p.d.route(req.Method, req.URL.Path)
	if !ok {
		return "", fmt.Sprintf("%s %s is not an endpoint this proxy serves", req.Method, clip(req.URL.Path))
	}
	return up, ""
}

func (p *Proxy) upstreamRequest(ctx context.Context, req *http.Request, upPath string, body *streamedBody) (*http.Request, error) {
	u := p.base + upPath
	if req.URL.RawQuery != "" {
		u += "?" + req.URL.RawQuery // e.g. Claude Code's /v1/messages?beta=true
	}
	var rb io.ReadCloser = body
	if req.ContentLength == 0 {
		rb = nil // no body, as the agent sent none (the transport then never reads it)
		body.Close()
		body.eof()
	}
	up, err := http.NewRequestWithContext(ctx, req.Method, u, rb)
	if err != nil {
		return nil, err
	}
	up.ContentLength = req.ContentLength // -1 (chunked) when the agent did not say
	for k, vs := range req.Header {
		if forwardHeader(k) {
			up.Header[k] = vs
		}
	}
	p.d.setKey(up.Header, p.key.Reveal())
	return up, nil
}

// relay writes the upstream response to the agent as it arrives: each chunk
// read is written and flushed at once, so an event stream stays live, and
// the bytes are the upstream's own. It meters usage on the way, clears keep
// when the framing cannot allow another request, and reports whether the
// response went out whole.
func (p *Proxy) relay(ctx context.Context, conn net.Conn, req *http.Request, resp *http.Response, keep *bool) (u Usage, seen, ok bool) {
	defer resp.Body.Close()
	h := responseHeader(resp.Header)
	bw := bufio.NewWriterSize(deadlineWriter{conn}, copyBufBytes+64)

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// Error answers are small: read whole, and answered with at most
		// their JSON error message (errorAnswer).
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody+1))
		if err != nil {
			return u, false, false
		}
		if len(b) > maxErrorBody {
			b, *keep = b[:maxErrorBody], false
		}
		b = p.errorAnswer(resp.StatusCode, b, h)
		if !bodyAllowed(resp.StatusCode) {
			b = nil
		} else {
			h.Set("Content-Length", strconv.Itoa(len(b)))
		}
		if !*keep {
			h.Set("Connection", "close")
		}
		writeHead(bw, resp.StatusCode, h)
		bw.Write(b)
		return u, false, bw.Flush() == nil
	}

	m := newMeter(p.d, resp.Header.Get("Content-Type"))
	finish := func() {
		if m != nil {
			u, seen = m.finish()
		}
	}
	var body io.Writer = bw
	var cw io.WriteCloser
	switch {
	case !bodyAllowed(resp.StatusCode):
		body = io.Discard
	case resp.ContentLength >= 0:
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	case req.ProtoAtLeast(1, 1):
		h.Set("Transfer-Encoding", "chunked")
		cw = httputil.NewChunkedWriter(bw)
		body = cw
	default:
		*keep = false // HTTP/1.0: the body ends when the connection does
	}
	if !*keep {
		h.Set("Connection", "close")
	}
	writeHead(bw, resp.StatusCode, h)
	if bw.Flush() != nil {
		finish()
		return u, seen, false
	}

	buf := make([]byte, copyBufBytes)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := body.Write(buf[:n]); err != nil || bw.Flush() != nil {
				finish()
				return u, seen, false
			}
			if m != nil {
				m.write(buf[:n])
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			// The upstream broke mid-answer (or the agent left, which
			// cancelled it). Without the final chunk the agent sees a
			// truncated answer, as it would from the provider.
			if ctx.Err() == nil {
				p.log.Warn("credproxy: upstream answer broke off", "path", req.URL.Path, "err", p.key.Scrub(rerr.Error()))
			}
			finish()
			return u, seen, false
		}
	}
	finish()
	if cw != nil {
		cw.Close()
		bw.WriteString("\r\n") // the (empty) trailer
	}
	return u, seen, bw.Flush() == nil
}

// hopByHop are the headers about one connection, never relayed.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// responseHeader is the upstream's header minus hop-by-hop fields, the
// framing (set anew) and cookies (the agent's requests never carry any).
func responseHeader(in http.Header) http.Header {
	h := in.Clone()
	for _, f := range in.Values("Connection") {
		for name := range strings.SplitSeq(f, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
	h.Del("Content-Length")
	h.Del("Set-Cookie")
	return h
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

func writeHead(w *bufio.Writer, status int, h http.Header) {
	text := http.StatusText(status)
	if text == "" {
		text = "status"
	}
	fmt.Fprintf(w, "HTTP/1.1 %03d %s\r\n", status, text)
	_ = h.Write(w) // Header.Write turns newlines in values into spaces
	w.WriteString("\r\n")
}

// refuse answers with an error in the provider's shape and reports whether
// the connection may go on (keep, and the answer went out).
func (p *Proxy) refuse(conn net.Conn, status int, msg string, keep bool) bool {
	body := p.d.errorBody(status, msg)
	h := http.Header{"Content-Type": {"application/json"}, "Content-Length": {strconv.Itoa(len(body))}}
	if !keep {
		h.Set("Connection", "close")
	}
	bw := bufio.NewWriter(deadlineWriter{conn})
	writeHead(bw, status, h)
	bw.Write(body)
	ok := bw.Flush() == nil
	if !keep {
		linger(conn)
	}
	return ok && keep
}

// linger lets the agent read a refusal before the connection closes:
// closing with unread input (the rest of a refused request) resets the
// connection, which can destroy the answer before the agent reads it.
func linger(conn net.Conn) {
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = conn.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, lingerBytes))
}

// deadlineWriter bounds every write, so an agent that stops reading cannot
// hold a connection (and its upstream request) forever.
type deadlineWriter struct{ c net.Conn }

func (w deadlineWriter) Write(p []byte) (int, error) {
	_ = w.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	return w.c.Write(p)
}

// watcher cancels the upstream request when the agent closes the
// connection before the answer is complete (it was killed, or gave up): the
// provider would go on generating, and billing, an answer nobody reads. It
// waits for a byte on the otherwise idle connection; stop ends the wait and
// must be called before the connection is read again. The zero value is
// ready; start and stop may come from different goroutines.
type watcher struct {
	mu       sync.Mutex
	stopping atomic.Bool
	conn     net.Conn
	done     chan struct{}
}

func (w *watcher) start(conn net.Conn, br *bufio.Reader, cancel context.CancelFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done != nil || w.stopping.Load() {
		return
	}
	w.conn, w.done = conn, make(chan struct{})
	go func() {
		defer close(w.done)
		// A byte (the next pipelined request) is left in br for later.
		if _, err := br.Peek(1); err != nil && !w.stopping.Load() {
			cancel()
		}
	}()
}

func (w *watcher) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopping.Swap(true) || w.done == nil {
		return
	}
	_ = w.conn.SetReadDeadline(time.Unix(1, 0))
	<-w.done
	_ = w.conn.SetReadDeadline(time.Time{})
}

// clip bounds agent-supplied text in logs and messages.
func clip(s string) string {
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

// streamedBody is the agent's request body as the upstream request reads
// it: bounded to max bytes, and telling the proxy when it has been read to
// the end (onEOF, once) and when the transport has let go of it (Close).
type streamedBody struct {
	r     io.Reader
	left  int64 // bytes it may still give
	onEOF func()

	mu      sync.Mutex
	ended   bool // read to the end
	over    bool // the agent sent more than max
	readErr bool // reading from the agent failed (it left, or stalled)
	closeCh chan struct{}
	closed  sync.Once
	eofOnce sync.Once
}

var errBodyTooBig = errors.New("request body too large")

func newStreamedBody(r io.Reader, max int64, onEOF func()) *streamedBody {
	return &streamedBody{r: r, left: max, onEOF: onEOF, closeCh: make(chan struct{})}
}

func (b *streamedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// At the bound: one more byte means the body is too large.
		var one [1]byte
		if n, _ := b.r.Read(one[:]); n > 0 {
			b.mu.Lock()
			b.over = true
			b.mu.Unlock()
			return 0, errBodyTooBig
		}
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.r.Read(p)
	if int64(n) > b.left {
		b.mu.Lock()
		b.over = true
		b.mu.Unlock()
		return 0, errBodyTooBig
	}
	b.left -= int64(n)
	switch {
	case err == io.EOF:
		b.eof()
	case err != nil:
		b.mu.Lock()
		b.readErr = true
		b.mu.Unlock()
	}
	return n, err
}

// eof marks the body read to its end.
func (b *streamedBody) eof() {
	b.eofOnce.Do(func() {
		b.mu.Lock()
		b.ended = true
		b.mu.Unlock()
		if b.onEOF != nil {
			b.onEOF()
		}
	})
}

// Close is the transport letting go of the body.
func (b *streamedBody) Close() error {
	b.closed.Do(func() { close(b.closeCh) })
	return nil
}

// released waits, at most d, until the transport has let go of the body.
func (b *streamedBody) released(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-b.closeCh:
	case <-t.C:
	}
}

func (b *streamedBody) tooBig() bool   { b.mu.Lock(); defer b.mu.Unlock(); return b.over }
func (b *streamedBody) complete() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.ended }
func (b *streamedBody) broken() bool   { b.mu.Lock(); defer b.mu.Unlock(); return b.readErr }
