package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/execlaw/execlaw/internal/api"
	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/session"
)

// term is a terminal WebSocket driven by a test.
type term struct {
	t    *testing.T
	c    *websocket.Conn
	out  strings.Builder
	last map[string]any // the last text message
	end  error          // how reading ended
}

func terminalURL(h *apitest.Harness, id, query string) string {
	return "ws" + strings.TrimPrefix(h.URL("/api/sessions/"+id+"/terminal"), "http") + query
}

// dialTerminal opens a terminal; it fails the test unless the handshake
// answers 101.
func dialTerminal(t *testing.T, h *apitest.Harness, id, query string, hdr http.Header) *term {
	t.Helper()
	if hdr == nil {
		hdr = h.AuthHeader()
	}
	ctx, cancel := context.WithTimeout(t.Context(), apitest.Wait)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, terminalURL(h, id, query), &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial terminal: %v (status %d)", err, status)
	}
	t.Cleanup(func() { c.CloseNow() })
	return &term{t: t, c: c}
}

// refusedTerminal tries a handshake and returns the HTTP status it got.
func refusedTerminal(t *testing.T, h *apitest.Harness, id, query string, hdr http.Header) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), apitest.Wait)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, terminalURL(h, id, query), &websocket.DialOptions{HTTPHeader: hdr})
	if err == nil {
		c.CloseNow()
		t.Fatalf("terminal %s%s opened; want it refused", id, query)
	}
	if resp == nil {
		t.Fatalf("no answer: %v", err)
	}
	return resp.StatusCode
}

func (m *term) send(s string) {
	m.t.Helper()
	if err := m.c.Write(m.t.Context(), websocket.MessageBinary, []byte(s)); err != nil {
		m.t.Fatal(err)
	}
}

func (m *term) resize(cols, rows int) {
	m.t.Helper()
	b, _ := json.Marshal(map[string]any{"type": "resize", "cols": cols, "rows": rows})
	if err := m.c.Write(m.t.Context(), websocket.MessageText, b); err != nil {
		m.t.Fatal(err)
	}
}

// next reads one message; false once the connection ended (m.end says how).
func (m *term) next() bool {
	ctx, cancel := context.WithTimeout(m.t.Context(), apitest.Wait)
	defer cancel()
	typ, b, err := m.c.Read(ctx)
	if err != nil {
		m.end = err
		return false
	}
	if typ == websocket.MessageBinary {
		m.out.Write(b)
		return true
	}
	m.last = map[string]any{}
	if err := json.Unmarshal(b, &m.last); err != nil {
		m.t.Fatalf("text message %q: %v", b, err)
	}
	return true
}

func (m *term) waitOutput(want string) {
	m.t.Helper()
	for !strings.Contains(m.out.String(), want) {
		if !m.next() {
			m.t.Fatalf("terminal ended (%v, last %v) before its output had %q; it has %q", m.end, m.last, want, m.out.String())
		}
	}
}

// waitEnd reads to the end and returns the last text message and the close status.
func (m *term) waitEnd() (map[string]any, websocket.StatusCode) {
	m.t.Helper()
	for m.next() {
	}
	return m.last, websocket.CloseStatus(m.end)
}

func newIdleSession(t *testing.T, h *apitest.Harness) session.View {
	t.Helper()
	fake := llmtest.NewAnthropic().Attach(t)
	s := h.AnthropicSession(fake, nil)
	h.WaitState(s.ID, "active")
	return s
}

// TestTerminal: a login shell in the session's workspace, on a terminal of
// the size asked for, that resizes, and whose exit ends the WebSocket.
func TestTerminal(t *testing.T) {
	// A short read timeout shows the WebSocket outlives it.
	h := apitest.New(t, apitest.Options{Timeouts: api.Timeouts{Read: time.Second}})
	s := newIdleSession(t, h)
	m := dialTerminal(t, h, s.ID, "?cols=100&rows=30", nil)
	m.send("stty size; echo hi-$((40+2)); pwd; echo $TERM\r")
	m.waitOutput("30 100")
	m.waitOutput("hi-42")
	m.waitOutput(h.Workspace(s.ID))
	m.waitOutput("xterm-256color")
	time.Sleep(1500 * time.Millisecond)
	m.resize(132, 43)
	m.send("stty size\r")
	m.waitOutput("43 132")
	m.send("exit 3\r")
	last, code := m.waitEnd()
	if last["type"] != "exit" || last["exitCode"] != float64(3) || code != websocket.StatusNormalClosure {
		t.Errorf("end: %v, close status %v", last, code)
	}
}

// TestTerminalRefused: credentials, origin, size and ownership are checked
// before anything runs.
func TestTerminalRefused(t *testing.T) {
	h := apitest.New(t, apitest.Options{Auth: api.Auth{Mode: api.AuthExeDev}})
	s := newIdleSession(t, h)
	with := func(kv ...string) http.Header {
		hd := h.AuthHeader()
		for i := 0; i < len(kv); i += 2 {
			hd.Set(kv[i], kv[i+1])
		}
		return hd
	}
	host := strings.TrimPrefix(h.TS.URL, "http://")
	for _, c := range []struct {
		name  string
		id    string
		query string
		hdr   http.Header
		want  int
	}{
		{"no credentials", s.ID, "", http.Header{}, http.StatusUnauthorized},
		{"another origin", s.ID, "", with("Origin", "http://evil.example"), http.StatusForbidden},
		{"another port of this host", s.ID, "", with("Origin", "http://127.0.0.1:1"), http.StatusForbidden},
		{"a null origin", s.ID, "", with("Origin", "null"), http.StatusForbidden},
		{"cross-site fetch metadata", s.ID, "", with("Sec-Fetch-Site", "cross-site"), http.StatusForbidden},
		{"same-site fetch metadata", s.ID, "", with("Sec-Fetch-Site", "same-site", "Origin", "http://"+host), http.StatusForbidden},
		{"someone else's session", s.ID, "", with("X-ExeDev-UserID", "mallory"), http.StatusNotFound},
		{"no such session", "s_000000000000000000000000", "", nil, http.StatusNotFound},
		{"a malformed id", "nope", "", nil, http.StatusNotFound},
		{"zero columns", s.ID, "?cols=0", nil, http.StatusBadRequest},
		{"too many rows", s.ID, "?rows=1001", nil, http.StatusBadRequest},
		{"not a number", s.ID, "?cols=80x", nil, http.StatusBadRequest},
	} {
		hdr := c.hdr
		if hdr == nil {
			hdr = h.AuthHeader()
		}
		if got := refusedTerminal(t, h, c.id, c.query, hdr); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	// This server's own page may.
	m := dialTerminal(t, h, s.ID, "", with("Origin", "http://"+host, "Sec-Fetch-Site", "same-origin"))
	m.send("echo ok-$((1+1))\r")
	m.waitOutput("ok-2")
	// A paused session has no sandbox to open one in.
	h.Must(http.StatusOK, "POST", "/api/sessions/"+s.ID+"/pause", nil)
	m.waitEnd()
	if got := refusedTerminal(t, h, s.ID, "", h.AuthHeader()); got != http.StatusConflict {
		t.Errorf("paused session: %d, want 409", got)
	}
}

// TestTerminalLimits: terminals per session and per user are bounded.
func TestTerminalLimits(t *testing.T) {
	h := apitest.New(t, apitest.Options{Terminal: api.TerminalOptions{MaxPerSession: 2, MaxPerUser: 3}})
	a := newIdleSession(t, h)
	b := newIdleSession(t, h)
	first := dialTerminal(t, h, a.ID, "", nil)
	dialTerminal(t, h, a.ID, "", nil)
	if got := refusedTerminal(t, h, a.ID, "", h.AuthHeader()); got != http.StatusTooManyRequests {
		t.Errorf("third on a session: %d, want 429", got)
	}
	dialTerminal(t, h, b.ID, "", nil)
	if got := refusedTerminal(t, h, b.ID, "", h.AuthHeader()); got != http.StatusTooManyRequests {
		t.Errorf("fourth of a user: %d, want 429", got)
	}
	first.send("exit\r")
	first.waitEnd()
	deadline := time.Now().Add(apitest.Wait)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), apitest.Wait)
		c, _, err := websocket.Dial(ctx, terminalURL(h, a.ID, ""), &websocket.DialOptions{HTTPHeader: h.AuthHeader()})
		cancel()
		if err == nil {
			c.CloseNow()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed terminal's place was not freed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTerminalHostileMessages: an oversized message or an unknown command
// ends the terminal, and the shell with it.
func TestTerminalHostileMessages(t *testing.T) {
	h := apitest.New(t, apitest.Options{})
	s := newIdleSession(t, h)

	m := dialTerminal(t, h, s.ID, "", nil)
	m.send("echo $$ > shell.pid\r")
	m.waitOutput("$")
	big := strings.Repeat("x", 70<<10)
	_ = m.c.Write(t.Context(), websocket.MessageBinary, []byte(big))
	if _, code := m.waitEnd(); code != websocket.StatusMessageTooBig {
		t.Errorf("oversized message: close status %v (%v), want 1009", code, m.end)
	}

	for _, msg := range []string{`{"type":"launch"}`, `not json`, `{"type":"resize","cols":5000,"rows":10}`, `{"type":"resize","cols":0,"rows":0}`} {
		m := dialTerminal(t, h, s.ID, "", nil)
		if err := m.c.Write(t.Context(), websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, code := m.waitEnd(); code != websocket.StatusPolicyViolation {
			t.Errorf("%s: close status %v (%v), want 1008", msg, code, m.end)
		}
	}
}

// TestTerminalEndsWithSession: ending the session closes its terminals and
// kills their shells; idle terminals close by themselves.
func TestTerminalEndsWithSession(t *testing.T) {
	h := apitest.New(t, apitest.Options{Terminal: api.TerminalOptions{Idle: 700 * time.Millisecond}})
	s := newIdleSession(t, h)

	idle := dialTerminal(t, h, s.ID, "", nil)
	last, _ := idle.waitEnd()
	if last["type"] != "closed" || !strings.Contains(last["reason"].(string), "nothing was typed") {
		t.Errorf("idle terminal: %v", last)
	}

	m := dialTerminal(t, h, s.ID, "", nil)
	m.send("sleep 1000 &\r")
	m.send("echo started-$((2+2))\r")
	m.waitOutput("started-4")
	h.Must(http.StatusOK, "DELETE", "/api/sessions/"+s.ID, nil)
	last, code := m.waitEnd()
	if last["type"] != "closed" || code != websocket.StatusGoingAway {
		t.Errorf("after the session ended: %v, status %v", last, code)
	}
	h.AssertNothingLeft()
	if got := refusedTerminal(t, h, s.ID, "", h.AuthHeader()); got != http.StatusConflict {
		t.Errorf("ended session: %d, want 409", got)
	}
}
