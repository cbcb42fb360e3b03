package api_test

import (
	"bytes"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/apitest"

	"github.com/execlaw/execlaw/internal/api"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

func TestTokenAuth(t *testing.T) {
	h := apitest.New(t, apitest.Options{Auth: api.Auth{Mode: api.AuthToken, Token: "s3cret-token"}})
	for _, hdr := range []http.Header{
		{},
		{"Authorization": {"Bearer wrong"}},
		{"Authorization": {"s3cret-token"}},
		{"Cookie": {"execlaw_session=forged"}},
	} {
		r := h.Do("GET", "/api/sessions", nil, hdr)
		if r.Status != http.StatusUnauthorized || !bytes.Contains(r.Body, []byte(`"error"`)) {
			t.Errorf("%v: got %d %s, want 401 JSON", hdr, r.Status, r.Body)
		}
	}
	h.Must(http.StatusOK, "GET", "/api/sessions", nil)
	// Health is public, for probes.
	if r := h.Do("GET", "/api/health", nil, http.Header{}); r.Status != http.StatusOK {
		t.Errorf("health without auth: %d", r.Status)
	}
	// A browser is sent to the login page.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(h.URL("/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("GET / without login: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}

	// Wrong token: the page again, no cookie.
	resp, err = client.PostForm(h.URL("/login"), url.Values{"token": {"nope"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Fatalf("bad login: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	resp, err = client.PostForm(h.URL("/login"), url.Values{"token": {"s3cret-token"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cookies := resp.Cookies()
	if resp.StatusCode != http.StatusSeeOther || len(cookies) != 1 {
		t.Fatalf("login: %d, cookies %v", resp.StatusCode, cookies)
	}
	c := cookies[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || strings.Contains(c.Value, "s3cret-token") {
		t.Fatalf("cookie must be HttpOnly, SameSite=Strict and not the token itself: %+v", c)
	}
	cookie := http.Header{"Cookie": {c.Name + "=" + c.Value}}
	if r := h.Do("GET", "/api/sessions", nil, cookie); r.Status != http.StatusOK {
		t.Fatalf("cookie auth: %d %s", r.Status, r.Body)
	}
	if r := h.Do("GET", "/", nil, cookie); r.Status != http.StatusOK || !strings.Contains(r.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("index with cookie: %d, CSP %q", r.Status, r.Header.Get("Content-Security-Policy"))
	}

	// A state-changing request from another site, riding on the cookie, is refused.
	cross := cookie.Clone()
	cross.Set("Sec-Fetch-Site", "cross-site")
	cross.Set("Origin", "https://evil.example")
	cross.Set("Content-Type", "application/json")
	r := h.Do("POST", "/api/sessions", `{"provider":"openai","apiKey":"k","model":"gpt-4o"}`, cross)
	if r.Status != http.StatusForbidden {
		t.Fatalf("cross-site POST: %d %s", r.Status, r.Body)
	}
	// No CORS grant for anyone.
	if r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("CORS header present")
	}
	// A form post (the classic CSRF shape) is not JSON and is refused too.
	same := cookie.Clone()
	same.Set("Content-Type", "application/x-www-form-urlencoded")
	if r := h.Do("POST", "/api/sessions", "provider=openai", same); r.Status != http.StatusUnsupportedMediaType {
		t.Fatalf("form POST: %d %s", r.Status, r.Body)
	}
}

func TestAuthNoneOnlyOnLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:8000": true, "[::1]:8000": true, "localhost:8000": true,
		"0.0.0.0:8000": false, ":8000": false, "192.168.1.5:8000": false, "[::]:80": false,
	} {
		err := api.CheckListen(api.AuthNone, addr)
		if (err == nil) != ok {
			t.Errorf("CheckListen(none, %s) = %v", addr, err)
		}
		if err := api.CheckListen(api.AuthToken, addr); err != nil {
			t.Errorf("token auth on %s refused: %v", addr, err)
		}
	}
}

// In exedev mode each exe.dev user sees only their own sessions; someone
// else's answers 404 everywhere, exactly like one that does not exist.
func TestOtherUsersSessionsAre404(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{Auth: api.Auth{Mode: api.AuthExeDev}})
	s := h.AnthropicSession(fake, nil)
	var info map[string]any
	h.Must(http.StatusOK, "GET", "/api/userinfo", nil).JSON(t, &info)
	if info["userId"] != "alice" || info["email"] != "alice@example.com" {
		t.Fatalf("userinfo: %v", info)
	}
	bob := http.Header{"X-Exedev-Userid": {"bob"}, "Content-Type": {"application/json"}}
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/status", ""},
		{"GET", "/stream", ""},
		{"GET", "/transcript", ""},
		{"POST", "/input", `{"message":"hi"}`},
		{"POST", "/cancel", ""},
		{"POST", "/email", `{"to":"bob@example.com"}`},
		{"DELETE", "", ""},
	} {
		var body any
		if c.body != "" {
			body = c.body
		}
		r := h.Do(c.method, "/api/sessions/"+s.ID+c.path, body, bob)
		if r.Status != http.StatusNotFound || !bytes.Contains(r.Body, []byte(`"error"`)) {
			t.Errorf("bob %s %s: %d %s", c.method, c.path, r.Status, r.Body)
		}
	}
	var list struct{ Sessions []map[string]any }
	if r := h.Do("GET", "/api/sessions", nil, bob); r.Status != http.StatusOK {
		t.Fatalf("bob's list: %d", r.Status)
	} else {
		r.JSON(t, &list)
	}
	if len(list.Sessions) != 0 {
		t.Fatalf("bob sees %d sessions", len(list.Sessions))
	}
	// Without the proxy's headers there is no user at all.
	if r := h.Do("GET", "/api/sessions", nil, http.Header{}); r.Status != http.StatusUnauthorized {
		t.Fatalf("no identity: %d", r.Status)
	}
	// Alice's session is untouched.
	h.WaitState(s.ID, "active")
}

// Fifty kinds of bad request all get a 4xx with a JSON error, and the server
// carries on.
func TestMalformedRequests(t *testing.T) {
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "still fine"}).Attach(t)
	h := apitest.New(t, apitest.Options{})
	s := h.AnthropicSession(fake, nil)
	sp := "/api/sessions/" + s.ID
	big := strings.Repeat("x", 2<<20)
	type req struct {
		method, path, body, ctype string
	}
	valid := func(extra string) string {
		return `{"provider":"anthropic","apiKey":"k","model":"claude-sonnet-4-20250514"` + extra + `}`
	}
	cases := []req{
		{"POST", "/api/sessions", "", "application/json"},
		{"POST", "/api/sessions", "{", "application/json"},
		{"POST", "/api/sessions", "[]", "application/json"},
		{"POST", "/api/sessions", "null", "application/json"},
		{"POST", "/api/sessions", `"string"`, "application/json"},
		{"POST", "/api/sessions", `{}`, "application/json"},
		{"POST", "/api/sessions", `{"provider":"nope","apiKey":"k","model":"m"}`, "application/json"},
		{"POST", "/api/sessions", `{"provider":"anthropic","model":"m"}`, "application/json"},
		{"POST", "/api/sessions", `{"provider":"openai-compatible","model":"m"}`, "application/json"},
		{"POST", "/api/sessions", valid(`,"baseUrl":"ftp://x"`), "application/json"},
		{"POST", "/api/sessions", valid(`,"baseUrl":"http://user:pw@host/v1"`), "application/json"},
		{"POST", "/api/sessions", valid(`,"baseUrl":"not a url"`), "application/json"},
		{"POST", "/api/sessions", valid(`,"idleTimeoutMin":4`), "application/json"},
		{"POST", "/api/sessions", valid(`,"idleTimeoutMin":10081`), "application/json"},
		{"POST", "/api/sessions", valid(`,"idleTimeoutMin":"ten"`), "application/json"},
		{"POST", "/api/sessions", valid(`,"temperature":3`), "application/json"},
		{"POST", "/api/sessions", valid(`,"temperature":-1`), "application/json"},
		{"POST", "/api/sessions", valid(`,"maxTokens":0`), "application/json"},
		{"POST", "/api/sessions", valid(`,"network":"some"`), "application/json"},
		{"POST", "/api/sessions", valid(`,"agent":"skynet"`), "application/json"},
		{"POST", "/api/sessions", valid(`,"vcpus":0`), "application/json"},
		{"POST", "/api/sessions", valid(`,"vcpus":999`), "application/json"},
		{"POST", "/api/sessions", valid(`,"memoryMiB":1`), "application/json"},
		{"POST", "/api/sessions", valid(`,"name":"` + strings.Repeat("n", 200) + `"`), "application/json"},
		{"POST", "/api/sessions", valid(`,"name":"bad\u0000name"`), "application/json"},
		{"POST", "/api/sessions", valid(`,"unknownField":1`), "application/json"},
		{"POST", "/api/sessions", valid(``) + valid(``), "application/json"},
		{"POST", "/api/sessions", valid(``), "text/plain"},
		{"POST", "/api/sessions", valid(``), "multipart/form-data"},
		{"POST", "/api/sessions", `{"provider":"anthropic","apiKey":"` + big + `"}`, "application/json"},
		{"POST", "/api/sessions", valid(`,"systemPrompt":"` + strings.Repeat("p", 70<<10) + `"`), "application/json"},
		{"POST", sp + "/input", ``, "application/json"},
		{"POST", sp + "/input", `{"message":""}`, "application/json"},
		{"POST", sp + "/input", `{"message":"   "}`, "application/json"},
		{"POST", sp + "/input", `{"message":42}`, "application/json"},
		{"POST", sp + "/input", `{"msg":"hi"}`, "application/json"},
		{"POST", sp + "/input", `{"message":"` + strings.Repeat("m", 300<<10) + `"}`, "application/json"},
		{"POST", "/api/sessions/s_000000000000000000000000/input", `{"message":"hi"}`, "application/json"},
		{"POST", "/api/sessions/../../etc/passwd/input", `{"message":"hi"}`, "application/json"},
		{"GET", "/api/sessions/" + strings.Repeat("a", 5000) + "/status", "", ""},
		{"GET", "/api/sessions/%00/status", "", ""},
		{"GET", sp + "/stream?after=-1", "", ""},
		{"GET", sp + "/stream?after=abc", "", ""},
		{"GET", sp + "/transcript?format=pdf", "", ""},
		{"GET", "/api/models/skynet", "", ""},
		{"GET", "/api/models/openai-compatible", "", ""},
		{"GET", "/api/models/openrouter?baseUrl=javascript:alert(1)", "", ""},
		{"PUT", "/api/sessions", valid(``), "application/json"},
		{"DELETE", "/api/sessions", "", ""},
		{"GET", "/api/nothing-here", "", ""},
	}
	if len(cases) != 50 {
		t.Fatalf("want 50 cases, have %d", len(cases))
	}
	for i, c := range cases {
		hdr := h.AuthHeader()
		if c.ctype != "" {
			hdr.Set("Content-Type", c.ctype)
		}
		var body any
		if c.body != "" {
			body = c.body
		}
		r := h.Do(c.method, c.path, body, hdr)
		if r.Status < 400 || r.Status >= 500 {
			t.Errorf("case %d %s %s: status %d, want 4xx: %.200s", i, c.method, c.path, r.Status, r.Body)
			continue
		}
		if !bytes.HasPrefix(r.Body, []byte(`{"error":"`)) || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			t.Errorf("case %d %s %s: body is not a JSON error: %.200s", i, c.method, c.path, r.Body)
		}
	}
	h.Must(http.StatusOK, "GET", "/api/health", nil)
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "are you ok?")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	var list struct{ Sessions []map[string]any }
	h.Must(http.StatusOK, "GET", "/api/sessions", nil).JSON(t, &list)
	if len(list.Sessions) != 1 {
		t.Fatalf("bad requests created sessions: %d", len(list.Sessions))
	}
}

// The API key is held in memory only: it is in no file under the data
// directory (database, WAL, sandbox files) and in no event, even when the
// provider echoes it back in an error.
func TestAPIKeyIsNeverStored(t *testing.T) {
	const key = "sk-ant-api03-UNIQUEKEYMATERIAL-0123456789abcdef"
	fake := llmtest.NewAnthropic(
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"env; echo done"}`}}},
		llmtest.Turn{Text: "Here is your environment."},
		llmtest.Turn{Error: &llmtest.ErrorReply{Status: 401, Message: "invalid x-api-key: " + key}},
	).Attach(t)
	h := apitest.New(t, apitest.Options{})
	s := h.Create(map[string]any{"provider": "anthropic", "apiKey": key, "model": "claude-sonnet-4-20250514", "baseUrl": fake.BaseURL()})
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "show env")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	h.Input(s.ID, "again")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 2)
	// The key did reach the provider, so the test would see it if it leaked.
	if got := fake.Requests()[0].Header.Get("X-Api-Key"); got != key {
		t.Fatalf("provider got key %q", got)
	}
	// The sandbox's environment did not contain it.
	res := st.WaitType(t, apitest.Wait, event.ToolResult, 1)
	if !strings.Contains(res.Field("output"), "PATH=") {
		t.Fatalf("env output: %s", res.Data)
	}
	for _, e := range st.Events() {
		if bytes.Contains(e.Data, []byte(key)) || bytes.Contains(e.Data, []byte("UNIQUEKEYMATERIAL")) {
			t.Errorf("event %d %s contains the key: %s", e.ID, e.Type, e.Data)
		}
	}
	scan := func() {
		t.Helper()
		filepath.WalkDir(h.DataDir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !d.Type().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err == nil && (bytes.Contains(b, []byte(key)) || bytes.Contains(b, []byte("UNIQUEKEYMATERIAL"))) {
				t.Errorf("%s contains the API key", p)
			}
			return nil
		})
	}
	scan() // while running, WAL included
	md := h.Must(http.StatusOK, "GET", "/api/sessions/"+s.ID+"/transcript", nil)
	if bytes.Contains(md.Body, []byte("UNIQUEKEYMATERIAL")) {
		t.Error("transcript contains the key")
	}
	h.Must(http.StatusOK, "DELETE", "/api/sessions/"+s.ID, nil)
	h.Stop()
	scan() // after shutdown and checkpoint
}

// Unknown paths and methods get JSON errors, not the mux's plain text.
func TestMethodNotAllowedIsJSON(t *testing.T) {
	h := apitest.New(t, apitest.Options{})
	r := h.Do("PATCH", "/api/sessions", "{}", nil)
	if r.Status != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "GET, POST" {
		t.Fatalf("PATCH /api/sessions: %d allow=%q %s", r.Status, r.Header.Get("Allow"), r.Body)
	}
	if !bytes.HasPrefix(r.Body, []byte(`{"error"`)) {
		t.Fatalf("405 body: %s", r.Body)
	}
}
