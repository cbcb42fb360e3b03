package api_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	shlex "github.com/anmitsu/go-shlex"

	"github.com/execlaw/execlaw/internal/api"
	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/testutil"
)

const exeToken = "exe0.eyJjbWRzIjpbIm5ldyJdfQ.c2lnbmF0dXJl-_x"

// exeCall is one request the fake exe.dev received.
type exeCall struct {
	Method, Path, Auth, ContentType string
	Body                            string
}

// fakeExeDev is exe.dev's /exec endpoint: it records requests and answers
// with the status and body the test sets.
type fakeExeDev struct {
	*httptest.Server
	mu     sync.Mutex
	calls  []exeCall
	status int
	answer string
	hang   chan struct{} // when set, requests wait on it (or their end)
}

func newFakeExeDev(t *testing.T) *fakeExeDev {
	f := &fakeExeDev{status: 200}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.calls = append(f.calls, exeCall{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(body)})
		status, answer, hang := f.status, f.answer, f.hang
		f.mu.Unlock()
		if hang != nil {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		io.WriteString(w, answer)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeExeDev) reply(status int, answer string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status, f.answer = status, answer
}

func (f *fakeExeDev) taken() []exeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

// parsePrompt splits a command the way exe.dev does (go-shlex, POSIX mode)
// and returns the --prompt value, checking the rest of the command.
func parsePrompt(t *testing.T, body, vm string) string {
	t.Helper()
	words, err := shlex.Split(body, true)
	if err != nil {
		t.Fatalf("exe.dev could not split %q: %v", body, err)
	}
	if len(words) != 4 || words[0] != "new" || words[1] != "--json" || words[2] != "--name="+vm || !strings.HasPrefix(words[3], "--prompt=") {
		t.Fatalf("command splits into %q", words)
	}
	return strings.TrimPrefix(words[3], "--prompt=")
}

func exeDevHarness(t *testing.T, f *fakeExeDev, opts apitest.Options) *apitest.Harness {
	opts.ExeDev = api.ExeDevOptions{Enabled: true, APIURL: f.URL, Timeout: opts.ExeDev.Timeout}
	return apitest.New(t, opts)
}

func TestExeDevNewRequest(t *testing.T) {
	f := newFakeExeDev(t)
	f.reply(200, `{"vm_name":"my-vm","ssh_dest":"my-vm.exe.xyz","https_url":"https://my-vm.exe.xyz"}`)
	var logs testutil.SyncBuffer
	h := exeDevHarness(t, f, apitest.Options{Log: &logs})

	var platform struct {
		Features map[string]bool `json:"features"`
	}
	h.Must(200, "GET", "/api/platform", nil).JSON(t, &platform)
	if !platform.Features["exedevNew"] {
		t.Errorf("features = %v", platform.Features)
	}

	var out map[string]any
	h.Must(200, "POST", "/api/exedev/new", map[string]string{"vmName": "my-vm", "prompt": "fix it", "token": exeToken}).JSON(t, &out)
	if out["ok"] != true || out["vmName"] != "my-vm" || out["url"] != "https://my-vm.exe.xyz/" || out["shelleyUrl"] != "https://my-vm.shelley.exe.xyz/" || out["truncated"] != false {
		t.Errorf("answer %v", out)
	}
	calls := f.taken()
	if len(calls) != 1 {
		t.Fatalf("%d requests", len(calls))
	}
	c := calls[0]
	if c.Method != "POST" || c.Path != "/exec" || c.Auth != "Bearer "+exeToken || c.ContentType != "text/plain; charset=utf-8" {
		t.Errorf("request %s %s, Authorization %q, Content-Type %q", c.Method, c.Path, c.Auth, c.ContentType)
	}
	if c.Body != "new --json --name=my-vm --prompt='fix it'" {
		t.Errorf("body %q", c.Body)
	}
	if strings.Contains(logs.String(), exeToken) || strings.Contains(logs.String(), "exe0.") {
		t.Errorf("the token is in the log:\n%s", logs.String())
	}
}

func TestExeDevPromptQuoting(t *testing.T) {
	f := newFakeExeDev(t)
	f.reply(200, `{}`)
	h := exeDevHarness(t, f, apitest.Options{})
	for _, prompt := range []string{
		`It's "quoted" -- isn't it?`,
		"line one\nline two\n\n\ttabbed\r\nwindows",
		"$(rm -rf /) and `id` and ${HOME} and $PATH",
		`back\slash \n \' \" \\ trailing\`,
		`''''`,
		`'`,
		`a'b"c'd"e`,
		"--prompt=x --name=evil; new --name=other | cat & # not a comment",
		"-starts with a dash",
		"ünïcödé ✓ 漢字 🙂",
		"   spaces around   ",
		"#hash first",
	} {
		h.Must(200, "POST", "/api/exedev/new", map[string]string{"vmName": "q-1", "prompt": prompt, "token": exeToken})
		calls := f.taken()
		if len(calls) != 1 {
			t.Fatalf("%d requests", len(calls))
		}
		want := strings.TrimSpace(prompt)
		if got := parsePrompt(t, calls[0].Body, "q-1"); got != want {
			t.Errorf("prompt %q came back as %q from %q", want, got, calls[0].Body)
		}
	}
	// NUL bytes are refused by exe.dev, so they are left out.
	h.Must(200, "POST", "/api/exedev/new", map[string]string{"vmName": "q-1", "prompt": "a\x00b", "token": exeToken})
	if got := parsePrompt(t, f.taken()[0].Body, "q-1"); got != "ab" {
		t.Errorf("NUL: %q", got)
	}
	// No prompt at all: no --prompt.
	h.Must(200, "POST", "/api/exedev/new", map[string]string{"vmName": "q-1", "token": exeToken})
	if b := f.taken()[0].Body; b != "new --json --name=q-1" {
		t.Errorf("without a prompt: %q", b)
	}
}

func TestExeDevTranscriptHandoff(t *testing.T) {
	f := newFakeExeDev(t)
	f.reply(200, `{}`)
	h := exeDevHarness(t, f, apitest.Options{})
	s := conversation(t, h)
	h.Must(200, "POST", "/api/exedev/new", map[string]string{"vmName": "handoff", "prompt": "Carry on, please.", "token": exeToken, "sessionId": s.ID})
	prompt := parsePrompt(t, f.taken()[0].Body, "handoff")
	for _, want := range []string{"Carry on, please.", "## User", "What is six times seven? Use the shell.", "### Tool call: bash", "tool-output-42", "The answer is **42**."} {
		if !strings.Contains(prompt, want) {
			t.Errorf("prompt lacks %q:\n%s", want, prompt)
		}
	}
	if strings.Contains(prompt, testAPIKey) {
		t.Error("the API key is in the prompt")
	}
	if !strings.HasPrefix(prompt, "Carry on, please.\n\n") {
		t.Errorf("the user's words come first: %q", prompt[:40])
	}
	// Someone else's or an unknown session: 404, nothing sent.
	for _, id := range []string{"s_000000000000000000000000", "../etc/passwd"} {
		if r := h.Do("POST", "/api/exedev/new", map[string]string{"vmName": "handoff", "token": exeToken, "sessionId": id}, nil); r.Status != 404 {
			t.Errorf("session %q: %d %s", id, r.Status, r.Body)
		}
	}
	if n := len(f.taken()); n != 0 {
		t.Errorf("%d requests for unknown sessions", n)
	}
}

func TestExeDevOversizedPrompt(t *testing.T) {
	f := newFakeExeDev(t)
	f.reply(200, `{}`)
	h := exeDevHarness(t, f, apitest.Options{})
	// Quotes cost four bytes each once quoted, so this is far over the limit.
	prompt := strings.Repeat("it's ", 30000) + "THE-END"
	var out map[string]any
	h.Must(200, "POST", "/api/exedev/new", map[string]string{"vmName": "big", "prompt": prompt, "token": exeToken}).JSON(t, &out)
	if out["truncated"] != true {
		t.Errorf("answer %v", out)
	}
	body := f.taken()[0].Body
	if len(body) > api.MaxExeDevCommand || len(body) < api.MaxExeDevCommand-64 {
		t.Errorf("command is %d bytes; want just under %d", len(body), api.MaxExeDevCommand)
	}
	got := parsePrompt(t, body, "big")
	i := strings.Index(got, "\n\n[… truncated by ExeClaw")
	if i < 0 || !strings.HasPrefix(prompt, got[:i]) || strings.Contains(got, "THE-END") {
		t.Fatalf("truncated prompt is not a prefix plus a note: ...%q", got[max(0, len(got)-300):])
	}
	if left := len(prompt) - i; !strings.Contains(got[i:], "the last "+strconv.Itoa(left)+" bytes were left out") {
		t.Errorf("note %q, want %d bytes", got[i:], left)
	}
}

func TestExeDevErrors(t *testing.T) {
	f := newFakeExeDev(t)
	h := exeDevHarness(t, f, apitest.Options{ExeDev: api.ExeDevOptions{Timeout: 300 * time.Millisecond}})
	post := func(body any) apitest.Response { return h.Do("POST", "/api/exedev/new", body, nil) }
	good := map[string]string{"vmName": "my-vm", "prompt": "p", "token": exeToken}

	for _, c := range []struct {
		status int
		answer string
		want   int
		says   []string
	}{
		{401, `{"error":"invalid token"}`, 400, []string{"ssh exe.dev token", "invalid token", "401"}},
		{403, `{"error":"command not allowed by token permissions"}`, 400, []string{"not allowed", "ssh exe.dev token"}},
		{422, `{"error":"VM name already taken"}`, 400, []string{"already taken", "422"}},
		{429, `{"error":"rate limit exceeded"}`, 429, []string{"rate limit"}},
		{500, `{"error":"internal error"}`, 502, []string{"exe.dev failed (HTTP 500)", "internal error"}},
		{502, `<html>bad gateway</html>`, 502, []string{"HTTP 502"}},
		{504, `{"error":"command timed out"}`, 502, []string{"timed out", "ssh exe.dev ls"}},
		{500, `{"error":"echo ` + exeToken + `"}`, 502, []string{"[token]"}},
	} {
		f.reply(c.status, c.answer)
		r := post(good)
		if r.Status != c.want {
			t.Errorf("exe.dev %d: we answered %d %s; want %d", c.status, r.Status, r.Body, c.want)
		}
		for _, s := range c.says {
			if !strings.Contains(string(r.Body), s) {
				t.Errorf("exe.dev %d: %s does not say %q", c.status, r.Body, s)
			}
		}
		if strings.Contains(string(r.Body), exeToken) {
			t.Errorf("exe.dev %d: the answer repeats the token", c.status)
		}
		f.taken()
	}

	// Too slow: the request is abandoned after the timeout.
	f.mu.Lock()
	f.hang = make(chan struct{})
	f.mu.Unlock()
	start := time.Now()
	r := post(good)
	if r.Status != http.StatusGatewayTimeout || !strings.Contains(string(r.Body), "did not answer") {
		t.Errorf("timeout: %d %s", r.Status, r.Body)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the timeout took %s", took)
	}
	f.mu.Lock()
	close(f.hang)
	f.hang = nil
	f.mu.Unlock()
	f.taken()

	// Unreachable.
	down := apitest.New(t, apitest.Options{ExeDev: api.ExeDevOptions{Enabled: true, APIURL: "http://" + deadAddr(t)}})
	if r := down.Do("POST", "/api/exedev/new", good, nil); r.Status != 502 || !strings.Contains(string(r.Body), "cannot be reached") {
		t.Errorf("unreachable: %d %s", r.Status, r.Body)
	}

	// Refused before anything is sent.
	for _, body := range []any{
		map[string]string{"vmName": "", "token": exeToken},
		map[string]string{"vmName": "-dash", "token": exeToken},
		map[string]string{"vmName": "Upper", "token": exeToken},
		map[string]string{"vmName": "under_score", "token": exeToken},
		map[string]string{"vmName": "a b", "token": exeToken},
		map[string]string{"vmName": "evil --prompt=x", "token": exeToken},
		map[string]string{"vmName": "a\nb", "token": exeToken},
		map[string]string{"vmName": strings.Repeat("a", 31), "token": exeToken},
		map[string]string{"vmName": "my-vm", "token": ""},
		map[string]string{"vmName": "my-vm", "token": "has space"},
		map[string]string{"vmName": "my-vm", "token": "line\nbreak"},
		map[string]string{"vmName": "my-vm", "token": strings.Repeat("t", 9000)},
		map[string]any{"vmName": "my-vm", "token": exeToken, "extra": 1},
	} {
		if r := post(body); r.Status != 400 {
			t.Errorf("%v: %d %s", body, r.Status, r.Body)
		}
	}
	if r := post(map[string]string{"vmName": "my-vm", "token": ""}); !strings.Contains(string(r.Body), "ssh exe.dev token") {
		t.Errorf("missing token: %s", r.Body)
	}
	if n := len(f.taken()); n != 0 {
		t.Errorf("%d requests reached exe.dev for refused input", n)
	}
	f.reply(200, `{}`)
	if r := post(map[string]string{"vmName": strings.Repeat("a", 30), "token": exeToken}); r.Status != 200 {
		t.Errorf("30 characters: %d %s", r.Status, r.Body)
	}
}

func TestExeDevDisabled(t *testing.T) {
	h := apitest.New(t, apitest.Options{})
	var platform struct {
		Features map[string]bool `json:"features"`
	}
	h.Must(200, "GET", "/api/platform", nil).JSON(t, &platform)
	if platform.Features["exedevNew"] {
		t.Error("exedevNew offered without exe.dev")
	}
	if r := h.Do("POST", "/api/exedev/new", map[string]string{"vmName": "x", "token": "t"}, nil); r.Status != 501 {
		t.Errorf("disabled: %d %s", r.Status, r.Body)
	}
}

// A redirect from exe.dev is not followed: the token would go with it.
func TestExeDevNoRedirect(t *testing.T) {
	var hits sync.Map
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Store("auth", r.Header.Get("Authorization"))
	}))
	defer elsewhere.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/steal", http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	h := apitest.New(t, apitest.Options{ExeDev: api.ExeDevOptions{Enabled: true, APIURL: redirector.URL}})
	if r := h.Do("POST", "/api/exedev/new", map[string]string{"vmName": "my-vm", "token": exeToken}, nil); r.Status == 200 {
		t.Errorf("redirect: %d %s", r.Status, r.Body)
	}
	if _, ok := hits.Load("auth"); ok {
		t.Error("the redirect was followed")
	}
}

func deadAddr(t *testing.T) string {
	t.Helper()
	ts := httptest.NewServer(http.NotFoundHandler())
	addr := ts.Listener.Addr().String()
	ts.Close()
	return addr
}

// On exe.dev, /api/platform and /api/userinfo say so, with the proxy's user.
func TestExeDevPlatformAndUserInfo(t *testing.T) {
	h := apitest.New(t, apitest.Options{
		Auth:     api.Auth{Mode: api.AuthExeDev},
		Platform: api.Platform{IsExeDev: true, Sandbox: "process", SandboxReason: "test", Version: "test"},
		ExeDev:   api.ExeDevOptions{Enabled: true},
	})
	var platform struct {
		IsExeDev bool            `json:"isExeDev"`
		Auth     string          `json:"auth"`
		Features map[string]bool `json:"features"`
	}
	h.Must(200, "GET", "/api/platform", nil).JSON(t, &platform)
	if !platform.IsExeDev || platform.Auth != "exedev" || !platform.Features["exedevNew"] || platform.Features["email"] {
		t.Errorf("platform %+v", platform)
	}
	var info map[string]any
	h.Must(200, "GET", "/api/userinfo", nil).JSON(t, &info)
	if info["email"] != "alice@example.com" || info["userId"] != "alice" || info["isExeDev"] != true {
		t.Errorf("userinfo %v", info)
	}
	// Off exe.dev, with a token: the one owner, no address.
	plain := apitest.New(t, apitest.Options{})
	plain.Must(200, "GET", "/api/userinfo", nil).JSON(t, &info)
	if info["email"] != "" || info["userId"] != "owner" || info["isExeDev"] != false {
		t.Errorf("userinfo %v", info)
	}
}
