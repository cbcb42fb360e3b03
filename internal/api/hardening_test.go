package api_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/api"
	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/store"
	"github.com/execlaw/execlaw/internal/testutil"
)

func port(h *apitest.Harness) string {
	_, p, _ := net.SplitHostPort(h.TS.Listener.Addr().String())
	return p
}

// raw sends one request exactly as written and returns the answer.
func raw(t *testing.T, h *apitest.Harness, request string) (int, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", h.TS.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%q: %v", request, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func errorMessage(t *testing.T, body []byte) string {
	t.Helper()
	var e struct{ Error string }
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
		t.Fatalf("not a JSON error: %s", body)
	}
	return e.Error
}

// The DNS-rebinding attack of the issue: a page on attacker.example, its
// name rebound to 127.0.0.1, posts to the server with --auth none. Origin
// and Host agree (both attacker.example), so the origin check lets it
// through; the Host check refuses it with 421 and nothing is created.
func TestDNSRebindingRefused(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{Auth: api.Auth{Mode: api.AuthNone}})
	evil := "attacker.example:" + port(h)
	body, _ := json.Marshal(map[string]any{"provider": "anthropic", "apiKey": "k", "model": "claude-sonnet-4-20250514", "baseUrl": fake.BaseURL()})
	for _, c := range []struct{ method, path string }{
		{"POST", "/api/sessions"}, {"GET", "/api/sessions"}, {"GET", "/"}, {"GET", "/api/health"},
		{"GET", "/login"}, {"POST", "/logout"}, {"GET", "/static/css/login.css"}, {"GET", "/metrics"}, {"GET", "/nowhere"},
	} {
		var rd io.Reader
		if c.method == "POST" {
			rd = bytes.NewReader(body)
		}
		req, _ := http.NewRequest(c.method, h.URL(c.path), rd)
		req.Host = evil
		req.Header.Set("Origin", "http://"+evil)
		req.Header.Set("Sec-Fetch-Site", "same-origin") // what the browser sends: the page's origin is the target's
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("%s %s for %s: %d %s, want 421", c.method, c.path, evil, resp.StatusCode, b)
			continue
		}
		if msg := errorMessage(t, b); !strings.Contains(msg, `"attacker.example:`) || !strings.Contains(msg, "localhost") {
			t.Errorf("421 message: %s", msg)
		}
		if resp.Header.Get("Content-Security-Policy") == "" {
			t.Error("421 without the security headers")
		}
	}
	var list struct{ Sessions []session.View }
	h.Must(http.StatusOK, "GET", "/api/sessions", nil).JSON(t, &list)
	if len(list.Sessions) != 0 {
		t.Fatalf("the rebound page created %d sessions", len(list.Sessions))
	}
	// The same request by the server's own name works.
	h.Must(http.StatusCreated, "POST", "/api/sessions", json.RawMessage(body))
}

// Host headers as they come: ports, case, trailing dots, IPv6 brackets, no
// Host, and absolute-form request targets (whose authority is the host).
func TestHostHeaderVariants(t *testing.T) {
	h := apitest.New(t, apitest.Options{})
	p := port(h)
	get := func(target, hostLine, proto string) string {
		return "GET " + target + " " + proto + "\r\n" + hostLine + "Connection: close\r\n\r\n"
	}
	for _, c := range []struct {
		name, request string
		want          int
	}{
		{"address and port", get("/api/health", "Host: 127.0.0.1:"+p+"\r\n", "HTTP/1.1"), 200},
		{"no port", get("/api/health", "Host: 127.0.0.1\r\n", "HTTP/1.1"), 200},
		{"localhost, other case, trailing dot", get("/api/health", "Host: LocalHost.:"+p+"\r\n", "HTTP/1.1"), 200},
		{"subdomain of localhost", get("/api/health", "Host: dev.localhost:"+p+"\r\n", "HTTP/1.1"), 200},
		{"IPv6 loopback", get("/api/health", "Host: [::1]:"+p+"\r\n", "HTTP/1.1"), 200},
		{"IPv6 loopback, long form", get("/api/health", "Host: [0:0::1]\r\n", "HTTP/1.1"), 200},
		{"other name", get("/api/health", "Host: attacker.example\r\n", "HTTP/1.1"), 421},
		{"other name and port", get("/api/health", "Host: attacker.example:"+p+"\r\n", "HTTP/1.1"), 421},
		{"other name, upper case", get("/api/health", "Host: ATTACKER.EXAMPLE.\r\n", "HTTP/1.1"), 421},
		{"loopback as a prefix", get("/api/health", "Host: 127.0.0.1.attacker.example\r\n", "HTTP/1.1"), 421},
		{"localhost as a prefix", get("/api/health", "Host: localhost.attacker.example\r\n", "HTTP/1.1"), 421},
		{"other address", get("/api/health", "Host: 192.0.2.1:"+p+"\r\n", "HTTP/1.1"), 421},
		{"IPv4 in brackets", get("/api/health", "Host: [127.0.0.1]:"+p+"\r\n", "HTTP/1.1"), 421},
		{"unclosed bracket", get("/api/health", "Host: [::1\r\n", "HTTP/1.1"), 421},
		{"empty Host", get("/api/health", "Host: \r\n", "HTTP/1.1"), 421},
		{"no Host, HTTP/1.0", get("/api/health", "", "HTTP/1.0"), 421},
		{"no Host, HTTP/1.1", get("/api/health", "", "HTTP/1.1"), 400}, // net/http's own refusal
		{"absolute-form, other host", get("http://attacker.example:"+p+"/api/health", "Host: 127.0.0.1:"+p+"\r\n", "HTTP/1.1"), 421},
		{"absolute-form, own host", get("http://127.0.0.1:"+p+"/api/health", "Host: attacker.example\r\n", "HTTP/1.1"), 200},
	} {
		status, body := raw(t, h, c.request)
		if status != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, status, body, c.want)
			continue
		}
		if status == 421 {
			errorMessage(t, body)
		}
	}
}

// --allowed-hosts adds names and wildcards; the metrics listener checks
// the Host too.
func TestAllowedHostsOption(t *testing.T) {
	policy, err := api.NewHostPolicy(api.AuthToken, []string{"execlaw.example.com", "*.corp.example"})
	if err != nil {
		t.Fatal(err)
	}
	h := apitest.New(t, apitest.Options{AllowedHosts: policy, MetricsElsewhere: true})
	for host, want := range map[string]int{
		"execlaw.example.com": 200, "EXECLAW.EXAMPLE.COM.:443": 200, "ci.corp.example:8000": 200, "a.b.corp.example": 200,
		"corp.example": 421, "example.com": 421, "execlaw.example.com.evil": 421, "localhost": 200,
	} {
		req, _ := http.NewRequest("GET", h.URL("/api/sessions"), nil)
		req.Host = host
		req.Header = h.AuthHeader()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d %s, want %d", host, resp.StatusCode, b, want)
		}
		if want == 421 && !strings.Contains(errorMessage(t, b), "--allowed-hosts") {
			t.Errorf("421 does not say how to allow the host: %s", b)
		}
	}
	metrics := httptest.NewServer(h.Srv.MetricsHandler(true))
	defer metrics.Close()
	for host, want := range map[string]int{"127.0.0.1": 200, "ci.corp.example": 200, "attacker.example": 421} {
		req, _ := http.NewRequest("GET", metrics.URL+"/metrics", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("metrics for %s: %d, want %d", host, resp.StatusCode, want)
		}
	}
	// A server with auth none never answers to other names, whatever it is given.
	h2 := apitest.New(t, apitest.Options{Auth: api.Auth{Mode: api.AuthNone}, AllowedHosts: policy})
	req, _ := http.NewRequest("GET", h2.URL("/api/sessions"), nil)
	req.Host = "execlaw.example.com"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("auth none served another name: %d", resp.StatusCode)
	}
}

// The cross-origin refusal is a JSON error like every other.
func TestCrossOriginRefusalIsJSON(t *testing.T) {
	h := apitest.New(t, apitest.Options{})
	hdr := h.AuthHeader()
	hdr.Set("Sec-Fetch-Site", "cross-site")
	hdr.Set("Content-Type", "application/json")
	r := h.Do("POST", "/api/sessions", `{}`, hdr)
	if r.Status != http.StatusForbidden || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("cross-site POST: %d %q %s", r.Status, r.Header.Get("Content-Type"), r.Body)
	}
	if msg := errorMessage(t, r.Body); !strings.Contains(msg, "cross-origin") {
		t.Fatalf("403 message: %s", msg)
	}
}

// In exedev mode the identity headers count only from a loopback peer or a
// trusted proxy; from anyone else the request has no user. (httptest's
// peers are all loopback, so the peer is set on the request here.)
func TestExeDevHeadersFromUntrustedPeer(t *testing.T) {
	log := &testutil.SyncBuffer{}
	h := apitest.New(t, apitest.Options{Log: log, Auth: api.Auth{Mode: api.AuthExeDev,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16"), netip.MustParsePrefix("2001:db8::/32")}}})
	serve := func(method, path, peer, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Host = "127.0.0.1"
		req.RemoteAddr = peer
		req.Header.Set("X-ExeDev-UserID", "victim")
		req.Header.Set("X-ExeDev-Email", "attacker@evil.example")
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		rec := httptest.NewRecorder()
		h.Srv.ServeHTTP(rec, req)
		return rec
	}
	if rec := serve("GET", "/api/sessions", "203.0.113.9:4444", ""); rec.Code != 401 {
		t.Errorf("sessions from an untrusted peer: %d %s", rec.Code, rec.Body)
	}
	for peer, want := range map[string]int{
		"203.0.113.9:4444": 401, "192.168.1.20:80": 401, "[2001:db9::1]:1": 401, "10.10.0.1:1": 401,
		"10.9.3.4:4444": 200, "[2001:db8::77]:1": 200, "127.0.0.1:5555": 200, "[::1]:5555": 200,
	} {
		rec := serve("GET", "/api/userinfo", peer, "")
		if rec.Code != want {
			t.Errorf("userinfo from %s: %d %s, want %d", peer, rec.Code, rec.Body, want)
			continue
		}
		if want == 200 && !strings.Contains(rec.Body.String(), `"victim"`) {
			t.Errorf("userinfo from trusted %s: %s", peer, rec.Body)
		}
		if want == 401 && !strings.Contains(errorMessage(t, rec.Body.Bytes()), "exe.dev proxy") {
			t.Errorf("401 from %s: %s", peer, rec.Body)
		}
	}
	// Nor may an untrusted peer create sessions or mail a transcript to the
	// address it claims as its own.
	if rec := serve("POST", "/api/sessions", "203.0.113.9:1", `{"provider":"anthropic","apiKey":"k"}`); rec.Code != 401 {
		t.Errorf("create from an untrusted peer: %d %s", rec.Code, rec.Body)
	}
	if rec := serve("POST", "/api/sessions/s_000000000000000000000000/email", "203.0.113.9:1", `{"to":"attacker@evil.example"}`); rec.Code != 401 {
		t.Errorf("email from an untrusted peer: %d %s", rec.Code, rec.Body)
	}
	if !strings.Contains(log.String(), "203.0.113.9") || !strings.Contains(log.String(), "--trusted-proxy") {
		t.Errorf("the operator is not told which peer was ignored:\n%s", log.String())
	}
}

func formLogin(peer, token string) *http.Request {
	req := httptest.NewRequest("POST", "/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Host = "127.0.0.1"
	req.RemoteAddr = peer
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

// Ten wrong tokens a minute per client, on the login form and in
// Authorization alike; then 429 with Retry-After, even for the right token,
// while other clients sign in as before.
func TestLoginBruteForceLimited(t *testing.T) {
	const token = "the-right-token-0123456789"
	h := apitest.New(t, apitest.Options{Auth: api.Auth{Mode: api.AuthToken, Token: token}})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(tok string) *http.Response {
		resp, err := noRedirect.PostForm(h.URL("/login"), url.Values{"token": {tok}})
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for i := range 10 {
		if resp := post("guess-" + strconv.Itoa(i)); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %d", i, resp.StatusCode)
		}
	}
	resp := post("guess-10")
	retry, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != http.StatusTooManyRequests || retry < 1 || retry > 60 {
		t.Fatalf("11th wrong token: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp := post(token); resp.StatusCode != http.StatusTooManyRequests || len(resp.Cookies()) != 0 {
		t.Fatalf("right token while blocked: %d %v", resp.StatusCode, resp.Cookies())
	}
	// The same client's bearer tokens are blocked too...
	hdr := h.AuthHeader()
	if r := h.Do("GET", "/api/sessions", nil, hdr); r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Fatalf("bearer from the blocked client: %d %s", r.Status, r.Body)
	} else if !strings.Contains(errorMessage(t, r.Body), "too many") {
		t.Fatalf("429 message: %s", r.Body)
	}
	// ...and another client signs in as usual.
	rec := httptest.NewRecorder()
	h.Srv.ServeHTTP(rec, formLogin("192.0.2.50:1234", token))
	if rec.Code != http.StatusSeeOther || len(rec.Result().Cookies()) != 1 {
		t.Fatalf("login from another client: %d %v", rec.Code, rec.Result().Cookies())
	}

	// Bearer tokens: successes cost nothing, failures are counted.
	bearer := func(peer, tok string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/api/sessions", nil)
		req.Host, req.RemoteAddr = "127.0.0.1", peer
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		h.Srv.ServeHTTP(rec, req)
		return rec
	}
	for i := range 30 {
		if rec := bearer("192.0.2.60:1", token); rec.Code != http.StatusOK {
			t.Fatalf("right bearer %d: %d", i, rec.Code)
		}
	}
	for i := range 10 {
		if rec := bearer("192.0.2.60:1", "wrong"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("wrong bearer %d: %d", i, rec.Code)
		}
	}
	for _, tok := range []string{"wrong", token} {
		rec := bearer("192.0.2.60:2", tok) // same address, another port: the same client
		if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
			t.Fatalf("bearer %q after 10 failures: %d %s", tok, rec.Code, rec.Body)
		}
		errorMessage(t, rec.Body.Bytes())
	}
	if rec := bearer("192.0.2.61:1", token); rec.Code != http.StatusOK {
		t.Fatalf("a neighbour's right bearer: %d", rec.Code)
	}
	// An IPv6 client cannot escape by changing the low bits of its address.
	for i := range 10 {
		bearer("[2001:db8:5:6::"+strconv.Itoa(i+1)+"]:1", "wrong")
	}
	if rec := bearer("[2001:db8:5:6::ffff]:1", token); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("a new address in the same /64: %d", rec.Code)
	}
}

func login(t *testing.T, h *apitest.Harness, token string) *http.Cookie {
	t.Helper()
	noRedirect := &http.Client{Transport: h.Client().Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.PostForm(h.URL("/login"), url.Values{"token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("login: %d %v", resp.StatusCode, resp.Cookies())
	}
	return resp.Cookies()[0]
}

func withCookie(c *http.Cookie) http.Header {
	return http.Header{"Cookie": {c.Name + "=" + c.Value}}
}

// The login cookie is a random value the server keeps (as a hash): each
// login gets its own, POST /logout ends it for every copy, and a server
// started with another token knows none of the old ones.
func TestLoginCookieRevocable(t *testing.T) {
	const token = "first-token-0123456789abcdef"
	h := apitest.New(t, apitest.Options{Auth: api.Auth{Mode: api.AuthToken, Token: token}})
	a, b := login(t, h, token), login(t, h, token)
	if a.Value == b.Value {
		t.Fatal("two logins got the same cookie: it is derived, not random")
	}
	if !a.HttpOnly || a.SameSite != http.SameSiteStrictMode || a.Secure || a.MaxAge != 30*24*3600 {
		t.Fatalf("cookie flags: %+v", a)
	}
	sum := sha256.Sum256([]byte(a.Value))
	if _, err := h.Store.GetLogin(t.Context(), hex.EncodeToString(sum[:])); err != nil {
		t.Fatalf("the login's hash is not stored: %v", err)
	}
	for _, c := range []*http.Cookie{a, b} {
		if r := h.Do("GET", "/api/sessions", nil, withCookie(c)); r.Status != http.StatusOK {
			t.Fatalf("cookie: %d", r.Status)
		}
	}

	// Logout ends that login, server-side: the old value is worth nothing.
	r := h.Do("POST", "/logout", nil, withCookie(a))
	if r.Status != http.StatusOK && r.Status != http.StatusSeeOther { // the client follows the redirect to /login
		t.Fatalf("logout: %d", r.Status)
	}
	if r := h.Do("GET", "/api/sessions", nil, withCookie(a)); r.Status != http.StatusUnauthorized {
		t.Fatalf("cookie after logout: %d %s", r.Status, r.Body)
	}
	if _, err := h.Store.GetLogin(t.Context(), hex.EncodeToString(sum[:])); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("login still stored after logout: %v", err)
	}
	if r := h.Do("GET", "/api/sessions", nil, withCookie(b)); r.Status != http.StatusOK {
		t.Fatalf("the other login ended too: %d", r.Status)
	}

	// A restart with the same token keeps logins...
	h.Stop()
	h.Start()
	if r := h.Do("GET", "/api/sessions", nil, withCookie(b)); r.Status != http.StatusOK {
		t.Fatalf("login lost in a restart: %d", r.Status)
	}
	// ...one with a new token ends them all.
	h.Stop()
	h.Opts.Auth.Token = "second-token-0123456789abcdef"
	h.Start()
	if r := h.Do("GET", "/api/sessions", nil, withCookie(b)); r.Status != http.StatusUnauthorized {
		t.Fatalf("old login after the token changed: %d", r.Status)
	}
	if r := h.Do("GET", "/", nil, withCookie(b)); r.Status != http.StatusOK || !bytes.Contains(r.Body, []byte(`name="token"`)) {
		t.Fatalf("a page with the old login does not lead to the login form: %d", r.Status) // the client followed 303 /login
	}

	// Neither cookie value is anywhere in the data directory.
	h.Stop()
	filepath.WalkDir(h.DataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if data, err := os.ReadFile(p); err == nil && (bytes.Contains(data, []byte(a.Value)) || bytes.Contains(data, []byte(b.Value))) {
			t.Errorf("%s holds a cookie value", p)
		}
		return nil
	})
}

// A client that sends its body slowly is cut off at the read timeout (the
// server had none), while an event stream, which outlives it by far, keeps
// going: net/http clears the read deadline when it starts its background
// read after the request's body, so ReadTimeout does not cancel a long
// response's context; this pins that down.
func TestSlowBodyCutStreamLives(t *testing.T) {
	const readTimeout = 400 * time.Millisecond
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{Heartbeat: 50 * time.Millisecond,
		Timeouts: api.Timeouts{Read: readTimeout, ReadHeader: readTimeout}})
	s := h.AnthropicSession(fake, nil)
	st := h.Stream(s.ID, "")
	opened := time.Now()

	conn, err := net.Dial("tcp", h.TS.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	conn.SetDeadline(start.Add(20 * time.Second))
	io.WriteString(conn, "POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ntoken=")
	go func() { // a byte now and then, never the whole body
		for range 400 {
			if _, err := conn.Write([]byte("a")); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond) // the slow client's pace
		}
	}()
	io.Copy(io.Discard, conn) // until the server closes the connection
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("a slow body held its connection for %v (read timeout %v)", took, readTimeout)
	}

	comments := st.Comments()
	testutil.Poll(t, "the stream outliving the read timeout", 20*time.Second, func() bool {
		return st.Ended() || (time.Since(opened) > 4*readTimeout && st.Comments() > comments+2)
	})
	if st.Ended() {
		t.Fatalf("the event stream ended after %v (read timeout %v)", time.Since(opened), readTimeout)
	}
}

// With TLS, the API answers over HTTPS and the login cookie is Secure.
func TestServeTLS(t *testing.T) {
	const token = "tls-token-0123456789abcdef"
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "over TLS"}).Attach(t)
	h := apitest.New(t, apitest.Options{TLS: true, Auth: api.Auth{Mode: api.AuthToken, Token: token}})
	if !strings.HasPrefix(h.TS.URL, "https://") {
		t.Fatalf("URL %s", h.TS.URL)
	}
	h.Must(http.StatusOK, "GET", "/api/health", nil)
	if c := login(t, h, token); !c.Secure || !c.HttpOnly {
		t.Fatalf("cookie over TLS: %+v", c)
	}
	s := h.AnthropicSession(fake, nil)
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "hello")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	// Plain HTTP to the TLS port gets nowhere.
	resp, err := http.Get("http://" + h.TS.Listener.Addr().String() + "/api/health")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP answered on the TLS port")
		}
	}
}

// Names that hide or reorder text are refused when creating and renaming.
func TestHostileSessionNames(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{})
	s := h.AnthropicSession(fake, map[string]any{"name": "plain"})
	base := map[string]any{"provider": "anthropic", "apiKey": "k", "model": "claude-sonnet-4-20250514", "baseUrl": fake.BaseURL()}
	for _, name := range []string{
		"invoice\u202Efdp.exe", // right-to-left override
		"zero\u200Bwidth",      // zero-width space
		"a\u200Db",             // zero-width joiner
		"\u2066isolate\u2069",  // left-to-right isolate
		"\uFEFFbom",            // byte order mark
		"soft\u00ADhyphen",     // soft hyphen
		"tag\U000E0041",        // tag character
		"bell\u0007",
		"line\u2028separator",
		"para\u2029separator",
		"esc\u001b[31mred",
		"del\u007f",
		"c1\u0085next-line",
	} {
		body := map[string]any{"name": name}
		for k, v := range base {
			body[k] = v
		}
		r := h.Do("POST", "/api/sessions", body, nil)
		if r.Status != http.StatusBadRequest {
			t.Errorf("create %q: %d %s", name, r.Status, r.Body)
		} else if msg := errorMessage(t, r.Body); !strings.Contains(msg, "name") {
			t.Errorf("create %q: %s", name, msg)
		}
		if r := h.Do("PATCH", "/api/sessions/"+s.ID, map[string]string{"name": name}, nil); r.Status != http.StatusBadRequest {
			t.Errorf("rename to %q: %d %s", name, r.Status, r.Body)
		}
	}
	for _, name := range []string{"Refactor the parser ✨", "日本語のセッション", "שלום עולם", "❤️ café", "مرحبا"} {
		var v session.View
		h.Must(http.StatusOK, "PATCH", "/api/sessions/"+s.ID, map[string]string{"name": name}).JSON(t, &v)
		if v.Name != name {
			t.Errorf("renamed to %q, got %q", name, v.Name)
		}
	}
}
