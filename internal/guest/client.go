package guest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"
)

// DefaultCallTimeout bounds every non-exec call whose context has no deadline,
// so a guest that stops answering cannot hang the host forever.
const DefaultCallTimeout = 30 * time.Second

// execDeadlineSlack is added to an exec's TimeoutSec when the caller gave no
// deadline: the guest should end the command itself, but the host does not rely
// on that.
const execDeadlineSlack = 30 * time.Second

const (
	maxErrorBodyBytes = 64 << 10
	maxMessageBytes   = 4 << 10
	baseURL           = "http://guest" // the Dialer decides where requests go; the host name is a placeholder
)

// Dialer opens a fresh byte stream to the guest.
type Dialer func(ctx context.Context) (net.Conn, error)

// Client calls one guest's control API. It is safe for concurrent use.
type Client struct {
	dial Dialer // for upgraded connections, which never go back to the pool
	tr   *http.Transport
	hc   *http.Client
}

// NewClient returns a client that reaches the guest through dial.
func NewClient(dial Dialer) *Client {
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx)
		},
		Protocols:              protos,
		Proxy:                  nil, // never route guest traffic through a host proxy
		MaxIdleConns:           8,
		MaxIdleConnsPerHost:    8,
		IdleConnTimeout:        60 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		DisableCompression:     true, // a compressed body could expand past every limit below
	}
	return &Client{
		dial: dial,
		tr:   tr,
		hc: &http.Client{
			Transport: tr,
			// A redirect from the guest is never legitimate; surface it as an error.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Close closes idle connections. In-flight calls are not affected.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// Health asks the guest who it is; it doubles as the readiness probe.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.call(ctx, http.MethodGet, PathHealth, nil, &h)
	return h, err
}

// Stats reports the guest's resource use.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	err := c.call(ctx, http.MethodGet, PathStats, nil, &s)
	return s, err
}

// Read returns a slice of a file.
func (c *Client) Read(ctx context.Context, req ReadRequest) (ReadResponse, error) {
	var r ReadResponse
	if err := c.call(ctx, http.MethodPost, PathRead, req, &r); err != nil {
		return ReadResponse{}, err
	}
	limit := req.Limit
	if limit <= 0 || limit > MaxReadBytes {
		limit = MaxReadBytes
	}
	if int64(len(r.Data)) > limit {
		return ReadResponse{}, fmt.Errorf("guest read: answer has %d bytes, asked for at most %d", len(r.Data), limit)
	}
	return r, nil
}

// Write writes a file.
func (c *Client) Write(ctx context.Context, req WriteRequest) error {
	return c.call(ctx, http.MethodPost, PathWrite, req, nil)
}

// Stat describes one path.
func (c *Client) Stat(ctx context.Context, path string) (FileInfo, error) {
	var fi FileInfo
	err := c.call(ctx, http.MethodPost, PathStat, PathRequest{Path: path}, &fi)
	return fi, err
}

// List lists a directory.
func (c *Client) List(ctx context.Context, req ListRequest) (ListResponse, error) {
	var r ListResponse
	if err := c.call(ctx, http.MethodPost, PathList, req, &r); err != nil {
		return ListResponse{}, err
	}
	if len(r.Entries) > MaxListEntries || (req.Limit > 0 && len(r.Entries) > req.Limit) {
		return ListResponse{}, fmt.Errorf("guest list: answer has %d entries, more than asked for", len(r.Entries))
	}
	return r, nil
}

// Shutdown asks the guest to stop: it kills everything it started and exits.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, PathShutdown, struct{}{}, nil)
}

// Exec runs a command in the guest. output, when not nil, is called from the
// calling goroutine with each stdout or stderr chunk as it arrives; data is not
// reused afterwards. Ending ctx closes the stream, and the guest then kills the
// command's whole process group.
//
// A command that runs and fails is not an error: its exit code is in the
// result. Errors are for commands that could not be run, a guest that broke
// the protocol, or ctx ending.
func (c *Client) Exec(ctx context.Context, req ExecRequest, output func(stream string, data []byte)) (ExecResult, error) {
	if err := checkExec(req); err != nil {
		return ExecResult{}, err
	}
	if _, ok := ctx.Deadline(); !ok && req.TimeoutSec > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutSec)*time.Second+execDeadlineSlack)
		defer cancel()
	}

	resp, err := c.send(ctx, http.MethodPost, PathExec, req)
	if err != nil {
		return ExecResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ExecResult{}, readError(resp)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != ContentNDJSON {
		return ExecResult{}, fmt.Errorf("guest exec: unexpected content type %q", truncate(resp.Header.Get("Content-Type"), 100))
	}

	fr := newFrameReader(resp.Body)
	for {
		f, err := fr.next()
		if err != nil {
			if _, ok := errors.AsType[protocolError](err); ok {
				return ExecResult{}, fmt.Errorf("guest exec: %w", err)
			}
			return ExecResult{}, streamErr(ctx, err)
		}
		switch f.Type {
		case FrameStdout, FrameStderr:
			if output != nil && len(f.Data) > 0 {
				output(f.Type, f.Data)
			}
		case FrameExit:
			return f.Result(), nil
		case FrameError:
			return ExecResult{}, &Error{Status: resp.StatusCode, Code: CodeInternal, Message: f.Message}
		}
	}
}

// checkExec refuses what the guest would refuse anyway, without a round trip.
func checkExec(req ExecRequest) error {
	switch {
	case len(req.Argv) == 0:
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: "exec: empty argv"}
	case len(req.Stdin) > MaxStdinBytes:
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge,
			Message: fmt.Sprintf("exec: stdin is %d bytes, limit %d", len(req.Stdin), MaxStdinBytes)}
	case req.TimeoutSec < 0:
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: "exec: negative timeout"}
	}
	return nil
}

// streamErr prefers the caller's cancellation over the transport error it caused.
func streamErr(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("guest exec: %w", ctxErr)
	}
	if err == io.ErrUnexpectedEOF {
		return fmt.Errorf("guest exec: stream ended without an exit frame: %w", err)
	}
	return fmt.Errorf("guest exec: %w", err)
}

// call does one bounded request/response exchange. out == nil discards the body.
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultCallTimeout)
		defer cancel()
	}
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return readError(resp)
	}
	if out == nil {
		// Drain a little so the connection can be reused; a guest that sends
		// more than that just loses its connection.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil
	}
	if resp.ContentLength > MaxResponseBytes {
		return fmt.Errorf("guest %s: answer of %d bytes exceeds %d", path, resp.ContentLength, MaxResponseBytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("guest %s: reading answer: %w", path, err)
	}
	if len(body) > MaxResponseBytes {
		return fmt.Errorf("guest %s: answer exceeds %d bytes", path, MaxResponseBytes)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("guest %s: bad answer: %w", path, err)
	}
	return nil
}

// encodeRequest is a request body as JSON, refused when the guest would
// refuse it for its size.
func encodeRequest(path string, in any) ([]byte, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("guest %s: %w", path, err)
	}
	if len(b) > MaxRequestBytes {
		return nil, &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge,
			Message: fmt.Sprintf("%s: request of %d bytes exceeds %d", path, len(b), MaxRequestBytes)}
	}
	return b, nil
}

func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := encodeRequest(path, in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, baseURL+path, body)
	if err != nil {
		return nil, fmt.Errorf("guest %s: %w", path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("guest %s: %w", path, err)
	}
	return resp, nil
}

// readError turns a non-2xx answer into *Error, reading at most a small body.
func readError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
	e := &Error{Status: resp.StatusCode, Code: codeForStatus(resp.StatusCode)}
	var er ErrorResponse
	if json.Unmarshal(b, &er) == nil && er.Error != "" {
		e.Message = truncate(er.Error, maxMessageBytes)
		if knownCode(er.Code) {
			e.Code = er.Code
		}
	} else {
		e.Message = fmt.Sprintf("unexpected status %d", resp.StatusCode)
	}
	return e
}

func codeForStatus(status int) string {
	switch status {
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusBadRequest:
		return CodeInvalid
	case http.StatusRequestEntityTooLarge:
		return CodeTooLarge
	case http.StatusForbidden:
		return CodePermission
	case http.StatusConflict:
		return CodeConflict
	default:
		return CodeInternal
	}
}

func knownCode(c string) bool {
	switch c {
	case CodeNotFound, CodeInvalid, CodeTooLarge, CodeIsDir, CodePermission, CodeInternal, CodeConflict:
		return true
	}
	return false
}

// truncate bounds a guest-supplied string and keeps it valid UTF-8.
func truncate(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
