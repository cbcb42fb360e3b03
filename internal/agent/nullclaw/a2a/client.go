package a2a

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// This file is the client side of the A2A calls: requests, the task methods
// and the health check; stream.go has message/stream.

// Client talks to one nullclaw gateway's /a2a endpoint.
type Client struct {
	endpoint string
	baseErr  error
	hc       *http.Client
	token    string

	// Limits bound what is accepted; set before the first call.
	Limits Limits
	// IdleTimeout ends a stream when nothing at all arrives for this long; 0
	// waits for ever (the caller's context still applies). nullclaw sends
	// nothing while a tool runs, so keep it longer than the longest command.
	IdleTimeout time.Duration

	seq atomic.Uint64
}

// NewClient returns a client for the gateway at baseURL (for example
// "http://127.0.0.1:3000"; a URL already ending in /a2a is used as is). token
// is sent as "Authorization: Bearer <token>" when not empty. A nil
// httpClient uses one without an overall timeout, as streams last a turn.
func NewClient(baseURL string, httpClient *http.Client, token string) *Client {
	c := &Client{hc: httpClient, token: token}
	if c.hc == nil {
		c.hc = &http.Client{}
	}
	u, err := url.Parse(strings.TrimSpace(baseURL))
	switch {
	case err != nil:
		c.baseErr = fmt.Errorf("%w: base URL: %v", ErrRequest, err)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		c.baseErr = fmt.Errorf("%w: base URL %q is not an http(s) URL", ErrRequest, baseURL)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		c.baseErr = fmt.Errorf("%w: base URL %q has a query, fragment or user", ErrRequest, baseURL)
	default:
		u.Path = strings.TrimRight(u.Path, "/")
		if !strings.HasSuffix(u.Path, "/a2a") {
			u.Path += "/a2a"
		}
		c.endpoint = u.String()
	}
	if strings.ContainsAny(token, "\r\n") {
		c.baseErr = fmt.Errorf("%w: token has a line break", ErrRequest)
	}
	return c
}

// Endpoint is the /a2a URL requests go to.
func (c *Client) Endpoint() string { return c.endpoint }

func (c *Client) limits() Limits { return c.Limits.withDefaults() }

func (c *Client) nextID() string {
	return fmt.Sprintf("execlaw-%d-%s", c.seq.Add(1), randHex(4))
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type rpcRequest struct {
	JSONRPC string `json:"jsonrpc"`
	ID      string `json:"id"`
	Method  string `json:"method"`
	Params  any    `json:"params"`
}

type sendParams struct {
	Message Message `json:"message"`
}

type idParams struct {
	ID string `json:"id"`
}

// encodeRequest marshals without HTML escaping: nullclaw reads string fields
// of the request without JSON-unescaping them (extractObjectStringField in
// src/a2a.zig), so every escape it is sent reaches the model verbatim; this
// keeps those to the ones JSON requires.
func encodeRequest(req rpcRequest, max int) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(req); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRequest, err)
	}
	b := bytes.TrimRight(buf.Bytes(), "\n")
	if len(b) > max {
		return nil, fmt.Errorf("%w: request of %d bytes exceeds the gateway's %d", ErrRequest, len(b), max)
	}
	return b, nil
}

// ValidContextID reports whether s can be used as an A2A contextId with
// nullclaw: 1 to 128 of [A-Za-z0-9._:-]. nullclaw keys conversation history
// by it and does not unescape it, so only plain characters are allowed.
func ValidContextID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

func (c *Client) post(ctx context.Context, body []byte, accept string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRequest, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", accept)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("nullclaw: %w", err)
	}
	return resp, nil
}

// httpError reads a bounded {"error": "..."} body of a non-200 answer.
func (c *Client) httpError(resp *http.Response) error {
	lim := c.limits()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, int64(lim.MaxErrorBytes)*2))
	var body struct {
		Error string `json:"error"`
	}
	msg := ""
	if json.Unmarshal(b, &body) == nil {
		msg = body.Error
	}
	return &HTTPError{StatusCode: resp.StatusCode, Message: CleanText(msg, lim.MaxErrorBytes)}
}

// callTask sends a non-streaming JSON-RPC request about one task and
// returns the validated task it answers with.
func (c *Client) callTask(ctx context.Context, method, taskID string) (*Task, error) {
	if c.baseErr != nil {
		return nil, c.baseErr
	}
	lim := c.limits()
	if v := (validator{lim: lim}); !v.validID(taskID) {
		return nil, fmt.Errorf("%w: task id %q", ErrRequest, clip(taskID, 80))
	}
	id := c.nextID()
	body, err := encodeRequest(rpcRequest{JSONRPC: "2.0", ID: id, Method: method, Params: idParams{ID: taskID}}, lim.MaxRequestBytes)
	if err != nil {
		return nil, err
	}
	resp, err := c.post(ctx, body, "application/json")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, c.httpError(resp)
	}
	b, err := readBounded(resp.Body, lim.MaxResponseBytes)
	if err != nil {
		return nil, err
	}
	ev, err := decodeResponse(b, id, lim)
	if err != nil {
		return nil, err
	}
	if ev.Kind != KindTask {
		return nil, protoErr("%s answered with %s, not a task", method, ev.Kind)
	}
	if ev.Task.ID != taskID {
		return nil, protoErr("%s for %q answered with task %q", method, taskID, ev.Task.ID)
	}
	return ev.Task, nil
}

// Cancel asks the gateway to cancel a task (tasks/cancel). nullclaw marks
// the task canceled, interrupts the running turn, and the open stream ends
// with a final "canceled" status update. A task that already finished gives
// an error for which IsNotCancelable is true.
func (c *Client) Cancel(ctx context.Context, taskID string) error {
	t, err := c.callTask(ctx, "tasks/cancel", taskID)
	if err != nil {
		return err
	}
	if t.Status.State != StateCanceled {
		return protoErr("tasks/cancel answered with state %q", t.Status.State)
	}
	return nil
}

// GetTask fetches a task (tasks/get), with its reply artifact once finished.
func (c *Client) GetTask(ctx context.Context, taskID string) (*Task, error) {
	return c.callTask(ctx, "tasks/get", taskID)
}

// Health checks the gateway's GET /health (no auth), which nullclaw answers
// with 200 {"status":"ok"} or {"status":"degraded"}.
func (c *Client) Health(ctx context.Context) error {
	if c.baseErr != nil {
		return c.baseErr
	}
	u := strings.TrimSuffix(c.endpoint, "/a2a") + "/health"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRequest, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("nullclaw: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return &HTTPError{StatusCode: resp.StatusCode}
	}
	return nil
}
