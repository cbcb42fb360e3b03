package credproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/testutil"
)

const realKey = "sk-real-key-0123456789abcdefghij"

// rig is a proxy in front of an upstream, served on a loopback listener the
// way a tunnel would hand it connections.
type rig struct {
	t      *testing.T
	p      *Proxy
	addr   string
	token  string
	conns  atomic.Int32 // connections ServeConn was handed
	usage  chan Usage
	record *recorder
}

func newRig(t *testing.T, provider, baseURL string) *rig {
	t.Helper()
	r := &rig{t: t, token: NewToken(), usage: make(chan Usage, 16), record: &recorder{next: http.DefaultTransport}}
	p, err := New(Config{
		Provider: provider,
		BaseURL:  baseURL,
		APIKey:   llm.NewSecret(realKey),
		Token:    r.token,
		Client:   &http.Client{Transport: r.record},
		OnUsage:  func(u Usage) { r.usage <- u },
	})
	if err != nil {
		t.Fatal(err)
	}
	r.p = p
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.conns.Add(1)
			wg.Go(func() { p.ServeConn(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return r
}

// client is how the agent in the VM would call: plain HTTP to the tunnel.
func (r *rig) client() *http.Client {
	tr := &http.Transport{DisableCompression: true}
	r.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func (r *rig) post(path, body string, header http.Header) (*http.Response, []byte) {
	r.t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+r.addr+path, strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := r.client().Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return resp, b
}

// raw sends bytes on a fresh connection and reads one response.
func (r *rig) raw(request string) (*http.Response, []byte) {
	r.t.Helper()
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		r.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		r.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (r *rig) nextUsage() Usage {
	r.t.Helper()
	select {
	case u := <-r.usage:
		return u
	case <-time.After(10 * time.Second):
		r.t.Fatal("no usage reported")
		return Usage{}
	}
}

func (r *rig) noUsage() {
	r.t.Helper()
	select {
	case u := <-r.usage:
		r.t.Errorf("unexpected usage %+v", u)
	default:
	}
}

// recorder keeps every upstream response body exactly as it arrived.
type recorder struct {
	next   http.RoundTripper
	mu     sync.Mutex
	bodies []*bytes.Buffer
}

// lockedWriter appends to a recorder's buffer under its lock.
type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (rt *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	buf := new(bytes.Buffer)
	rt.mu.Lock()
	rt.bodies = append(rt.bodies, buf)
	rt.mu.Unlock()
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.TeeReader(resp.Body, lockedWriter{&rt.mu, buf}), resp.Body}
	return resp, nil
}

func (rt *recorder) body(i int) []byte {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return bytes.Clone(rt.bodies[i].Bytes())
}

func anthropicHeader(token string) http.Header {
	return http.Header{
		"X-Api-Key":         {token},
		"Anthropic-Version": {"2023-06-01"},
		"Content-Type":      {"application/json"},
		"X-Stainless-Lang":  {"go"},
		"Cookie":            {"session=abc"},
		"X-Forwarded-For":   {"10.0.0.1"},
	}
}

func bearer(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}}
}

const anthropicStream = `{"model":"claude-sonnet-4-20250514","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}]}`

func TestAnthropicStreamingPassthrough(t *testing.T) {
	turn := llmtest.Turn{Text: "Hello from upstream, streamed in pieces.", InputTokens: 11, OutputTokens: 7, CachedInputTokens: 3}
	fake := llmtest.NewAnthropic(turn).Attach(t)
	r := newRig(t, llm.Anthropic, fake.URL())

	resp, got := r.post("/v1/messages?beta=true", anthropicStream, anthropicHeader(r.token))
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d, content type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), got)
	}
	if want := r.record.body(0); !bytes.Equal(got, want) {
		t.Fatalf("the agent got\n%q\nthe upstream sent\n%q", got, want)
	}
	if !strings.Contains(string(got), `"text":"Hello"`) && !strings.Contains(string(got), "message_stop") {
		t.Errorf("not a message stream: %s", got)
	}

	reqs := fake.Requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream saw %d requests", len(reqs))
	}
	h := reqs[0].Header
	if h.Get("X-Api-Key") != realKey || h.Get("Authorization") != "" {
		t.Errorf("upstream auth: x-api-key %q, authorization %q", h.Get("X-Api-Key"), h.Get("Authorization"))
	}
	if h.Get("Anthropic-Version") != "2023-06-01" || h.Get("X-Stainless-Lang") != "go" {
		t.Errorf("safe headers were not forwarded: %v", h)
	}
	for k, vs := range h {
		for _, v := range vs {
			if strings.Contains(v, r.token) || k == "Cookie" || k == "X-Forwarded-For" {
				t.Errorf("upstream saw %s: %s", k, v)
			}
		}
	}
	if reqs[0].Path != "/v1/messages" || string(reqs[0].Body) != anthropicStream {
		t.Errorf("upstream got %s %s", reqs[0].Path, reqs[0].Body)
	}
	assertNoKey(t, resp.Header, got)

	u := r.nextUsage()
	want := Usage{Model: "claude-sonnet-4-20250514", InputTokens: 11, OutputTokens: 7, CacheReadTokens: 3}
	if u != want {
		t.Errorf("usage %+v, want %+v", u, want)
	}
}

func assertNoKey(t *testing.T, h http.Header, body []byte) {
	t.Helper()
	var head bytes.Buffer
	h.Write(&head)
	if strings.Contains(head.String()+string(body), realKey) {
		t.Error("the agent saw the real key")
	}
}

func TestOpenAIStreamingAndPaths(t *testing.T) {
	turn := llmtest.Turn{Text: "Hi from the OpenAI fake.", InputTokens: 20, OutputTokens: 5, CachedInputTokens: 4}
	fake := llmtest.NewOpenAI(turn, turn).Attach(t)
	r := newRig(t, llm.OpenAI, fake.BaseURL()) // ".../v1", like https://api.openai.com/v1
	body := `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`

	// Both spellings the SDKs use map onto the base URL.
	for i, path := range []string{"/v1/chat/completions", "/chat/completions"} {
		resp, got := r.post(path, body, bearer(r.token))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d: %s", path, resp.StatusCode, got)
		}
		if want := r.record.body(i); !bytes.Equal(got, want) {
			t.Fatalf("%s: the agent got\n%q\nthe upstream sent\n%q", path, got, want)
		}
		assertNoKey(t, resp.Header, got)
		u := r.nextUsage()
		if want := (Usage{Model: "gpt-4o", InputTokens: 20, OutputTokens: 5, CacheReadTokens: 4}); u != want {
			t.Errorf("usage %+v, want %+v", u, want)
		}
	}
	for _, req := range fake.Requests() {
		if req.Path != "/v1/chat/completions" || req.Header.Get("Authorization") != "Bearer "+realKey {
			t.Errorf("upstream got %s with authorization %q", req.Path, req.Header.Get("Authorization"))
		}
	}

	resp, got := r.post("/v1/models", "", bearer(r.token))
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST /v1/models: status %d: %s", resp.StatusCode, got)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+r.addr+"/models", nil)
	req.Header = bearer(r.token)
	mresp, err := r.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if mresp.StatusCode != http.StatusOK || !strings.Contains(string(mb), "gpt-4o") {
		t.Errorf("GET /models: %d %s", mresp.StatusCode, mb)
	}
	r.noUsage()
}

func TestNonStreamingUsage(t *testing.T) {
	turn := llmtest.Turn{Text: "A whole answer at once.", InputTokens: 30, OutputTokens: 9, CachedInputTokens: 2}
	t.Run("anthropic", func(t *testing.T) {
		fake := llmtest.NewAnthropic(turn).Attach(t)
		r := newRig(t, llm.Anthropic, fake.URL())
		resp, got := r.post("/v1/messages", strings.Replace(anthropicStream, `"stream":true`, `"stream":false`, 1), anthropicHeader(r.token))
		if resp.StatusCode != http.StatusOK || !bytes.Equal(got, r.record.body(0)) {
			t.Fatalf("status %d: %s", resp.StatusCode, got)
		}
		if u, want := r.nextUsage(), (Usage{Model: "claude-sonnet-4-20250514", InputTokens: 30, OutputTokens: 9, CacheReadTokens: 2}); u != want {
			t.Errorf("usage %+v, want %+v", u, want)
		}
	})
	t.Run("openai", func(t *testing.T) {
		fake := llmtest.NewOpenAI(turn).Attach(t)
		r := newRig(t, llm.OpenRouter, fake.BaseURL())
		resp, got := r.post("/v1/chat/completions", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`, bearer(r.token))
		if resp.StatusCode != http.StatusOK || !bytes.Equal(got, r.record.body(0)) {
			t.Fatalf("status %d: %s", resp.StatusCode, got)
		}
		if u, want := r.nextUsage(), (Usage{Model: "gpt-4o", InputTokens: 30, OutputTokens: 9, CacheReadTokens: 2}); u != want {
			t.Errorf("usage %+v, want %+v", u, want)
		}
	})
}

func TestRefusals(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	r := newRig(t, llm.Anthropic, fake.URL())
	body := anthropicStream
	req := func(method, target, host string, h http.Header) string {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", method, target, host, len(body))
		h.Write(&b)
		return b.String() + "\r\n" + body
	}
	good := anthropicHeader(r.token)
	wrong := anthropicHeader(NewToken())
	tests := []struct {
		name, request string
		status        int
	}{
		{"no token", req("POST", "/v1/messages", "127.0.0.1:4001", http.Header{"Content-Type": {"application/json"}}), 403},
		{"wrong token", req("POST", "/v1/messages", "127.0.0.1:4001", wrong), 403},
		{"real key as token", req("POST", "/v1/messages", "127.0.0.1", anthropicHeader(realKey)), 403},
		{"absolute form", req("POST", "http://evil.example/v1/messages", "127.0.0.1", good), 403},
		{"absolute form to upstream", req("POST", fake.URL()+"/v1/messages", "127.0.0.1", good), 403},
		{"other host", req("POST", "/v1/messages", "evil.example", good), 403},
		{"other host with port", req("POST", "/v1/messages", "10.0.0.1:4001", good), 403},
		{"files", req("POST", "/v1/files", "localhost:4001", good), 403},
		{"admin", req("GET", "/admin", "localhost", good), 403},
		{"wrong method", req("DELETE", "/v1/messages", "localhost", good), 403},
		{"dot segments", req("POST", "/v1/messages/../files", "localhost", good), 403},
		{"declared too large", "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: " + r.token + "\r\nContent-Length: 40000000\r\n\r\n", 413},
		{"huge header", "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Junk: " + strings.Repeat("a", 100<<10) + "\r\n\r\n", 431},
		{"not http", "hello there\r\n\r\n", 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, got := r.raw(tc.request)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, got)
			}
			// The agent's SDK reads the refusal like the provider's own.
			var e struct {
				Type  string `json:"type"`
				Error struct{ Type, Message string }
			}
			if err := json.Unmarshal(got, &e); err != nil || e.Type != "error" || e.Error.Message == "" {
				t.Errorf("body %s is not an Anthropic error", got)
			}
			if !resp.Close {
				t.Error("connection kept open after a refusal")
			}
		})
	}
	if n := len(fake.Requests()); n != 0 {
		t.Errorf("upstream called %d times", n)
	}
	r.noUsage()
}

func TestOpenAIErrorShape(t *testing.T) {
	fake := llmtest.NewOpenAI().Attach(t)
	r := newRig(t, llm.OpenAI, fake.BaseURL())
	resp, got := r.post("/v1/files", "{}", bearer(r.token))
	var e struct {
		Error struct{ Message, Type string }
	}
	if resp.StatusCode != http.StatusForbidden || json.Unmarshal(got, &e) != nil || e.Error.Type != "invalid_request_error" || e.Error.Message == "" {
		t.Errorf("status %d: %s", resp.StatusCode, got)
	}
}

func TestUpstreamFailures(t *testing.T) {
	// Nothing listens on the upstream address.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	r := newRig(t, llm.Anthropic, down)
	resp, got := r.post("/v1/messages", anthropicStream, anthropicHeader(r.token))
	var e struct {
		Type  string
		Error struct{ Type, Message string }
	}
	if resp.StatusCode != http.StatusBadGateway || json.Unmarshal(got, &e) != nil || e.Error.Type != "api_error" {
		t.Errorf("status %d: %s", resp.StatusCode, got)
	}

	// An upstream error answer is relayed with its status, the key scrubbed.
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s"}}`, req.Header.Get("Authorization"))
	}))
	defer echo.Close()
	r = newRig(t, llm.OpenAICompatible, echo.URL+"/v1")
	resp, got = r.post("/v1/chat/completions", "{}", bearer(r.token))
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(got), "[redacted]") {
		t.Errorf("status %d: %s", resp.StatusCode, got)
	}
	assertNoKey(t, resp.Header, got)

	// An answer that breaks off mid-stream reaches the agent broken off.
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "partial answer here", Hangup: true}).Attach(t)
	r = newRig(t, llm.Anthropic, fake.URL())
	req, _ := http.NewRequest(http.MethodPost, "http://"+r.addr+"/v1/messages", strings.NewReader(anthropicStream))
	req.Header = anthropicHeader(r.token)
	hresp, err := r.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(hresp.Body)
	hresp.Body.Close()
	if err == nil {
		t.Error("a broken-off upstream answer arrived whole")
	}
	// Usage up to the break still counts (message_start came).
	if u := r.nextUsage(); u.InputTokens == 0 {
		t.Errorf("usage %+v", u)
	}
}

func TestKeepAlive(t *testing.T) {
	turn := llmtest.Turn{Text: "again", InputTokens: 1, OutputTokens: 1}
	fake := llmtest.NewAnthropic(turn, turn).Attach(t)
	r := newRig(t, llm.Anthropic, fake.URL())
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	for i := range 2 {
		req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1/v1/messages", strings.NewReader(anthropicStream))
		req.Header = anthropicHeader(r.token)
		if err := req.Write(c); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK || resp.Close || !strings.Contains(string(b), "message_stop") {
			t.Fatalf("response %d: status %d, close %v, err %v: %s", i, resp.StatusCode, resp.Close, err, b)
		}
		r.nextUsage()
	}
	if n := r.conns.Load(); n != 1 {
		t.Errorf("%d connections", n)
	}
	if n := len(fake.Requests()); n != 2 {
		t.Errorf("upstream saw %d requests", n)
	}
}

func TestAgentLeavingCancelsUpstream(t *testing.T) {
	cancelled := make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: ping\ndata: {\"type\": \"ping\"}\n\n")
		w.(http.Flusher).Flush()
		<-req.Context().Done()
		close(cancelled)
	}))
	defer upstream.Close()
	r := newRig(t, llm.Anthropic, upstream.URL)

	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1/v1/messages", strings.NewReader(anthropicStream))
	req.Header = anthropicHeader(r.token)
	req.Write(c)
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "event: ping\n" {
		t.Fatalf("read %q, %v", line, err)
	}
	c.Close()
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request outlived the agent's connection")
	}
}

func TestNew(t *testing.T) {
	tok := NewToken()
	if len(tok) != 64 || tok == NewToken() {
		t.Errorf("token %q", tok)
	}
	for _, cfg := range []Config{
		{Provider: "bogus", Token: tok},
		{Provider: llm.OpenAICompatible, Token: tok},
		{Provider: llm.Anthropic, Token: "short"},
		{Provider: llm.Anthropic, Token: tok, BaseURL: "ftp://x"},
		{Provider: llm.Anthropic, Token: tok, BaseURL: "https://user:pw@x"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	for _, p := range llm.Providers {
		if p == llm.OpenAICompatible {
			continue
		}
		if _, err := New(Config{Provider: p, Token: tok}); err != nil {
			t.Errorf("%s with defaults: %v", p, err)
		}
	}
	// The caller's client is not changed by the proxy's copy.
	hc := &http.Client{}
	if _, err := New(Config{Provider: llm.Anthropic, Token: tok, Client: hc}); err != nil || hc.CheckRedirect != nil {
		t.Errorf("caller's client changed (err %v)", err)
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere.Add(1) }))
	defer other.Close()
	upstream := httptest.NewServer(http.RedirectHandler(other.URL+"/steal", http.StatusTemporaryRedirect))
	defer upstream.Close()
	r := newRig(t, llm.Anthropic, upstream.URL)
	resp, _ := r.post("/v1/messages", anthropicStream, anthropicHeader(r.token))
	if resp.StatusCode != http.StatusTemporaryRedirect || elsewhere.Load() != 0 {
		t.Errorf("status %d, redirect target called %d times", resp.StatusCode, elsewhere.Load())
	}
}

// Settle returns once no request is relayed, and by then the usage of the
// finished ones has been reported: a turn waits on it before it ends.
func TestSettle(t *testing.T) {
	gate := make(chan struct{})
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "Held after the first delta.", OutputTokens: 7, Gate: gate}).Attach(t)
	r := newRig(t, llm.Anthropic, fake.URL())

	settle := func(d time.Duration) error {
		ctx, cancel := context.WithTimeout(t.Context(), d)
		defer cancel()
		return r.p.Settle(ctx)
	}
	if err := settle(time.Second); err != nil {
		t.Fatalf("Settle with nothing in flight: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.post("/v1/messages", anthropicStream, anthropicHeader(r.token))
	}()
	testutil.Poll(t, "the request upstream", 10*time.Second, func() bool { return len(fake.Requests()) == 1 })
	if err := settle(50 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Settle with a request in flight: %v", err)
	}
	close(gate)
	if err := settle(10 * time.Second); err != nil {
		t.Fatalf("Settle after the request: %v", err)
	}
	select {
	case u := <-r.usage:
		if u.OutputTokens != 7 {
			t.Errorf("usage %+v", u)
		}
	default:
		t.Fatal("Settle returned before the usage was reported")
	}
	<-done
}
