package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

// fuzzMethods are what a fuzzed request's first byte picks from.
var fuzzMethods = []string{"GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"}

// FuzzAPI sends every route hostile bodies, paths and headers: whatever
// arrives, the server answers with a status below 500, or a deliberate one
// (501 for a feature it does not offer, 503 when the fuzzer's sessions fill
// it), and keeps answering. Seeds are requests the API tests make; `make
// test` runs them and fuzzes for a bounded time (`make fuzz`).
func FuzzAPI(f *testing.F) {
	fake := llmtest.NewAnthropic()
	f.Cleanup(fake.Close)
	h := apitest.New(f, apitest.Options{MaxSessions: 4})
	// One session to aim at: many seeds name it.
	s := h.Create(map[string]any{"provider": "anthropic", "apiKey": "sk-ant-fuzz", "model": "claude-sonnet-4-20250514", "baseUrl": fake.BaseURL()})
	id := s.ID
	create := `{"provider":"anthropic","apiKey":"sk-ant-fuzz","model":"claude-sonnet-4-20250514","baseUrl":"` + fake.BaseURL() + `"}`

	for _, seed := range []struct {
		method      byte
		path, body  string
		hname, hval string
	}{
		{0, "/api/health", "", "", ""},
		{0, "/api/system", "", "", ""},
		{0, "/api/platform", "", "", ""},
		{0, "/api/userinfo", "", "", ""},
		{0, "/api/models/anthropic", "", "X-Api-Key", "sk-x"},
		{0, "/api/models/openai-compatible?baseUrl=http://127.0.0.1:1/v1", "", "", ""},
		{0, "/api/sessions", "", "", ""},
		{1, "/api/sessions", create, "Content-Type", "application/json"},
		{1, "/api/sessions", `{"provider":"anthropic","apiKey":"k","name":"\u202egnp.exe","temperature":3}`, "Content-Type", "application/json"},
		{1, "/api/sessions", `{"provider":1}`, "Content-Type", "text/plain"},
		{0, "/api/sessions/" + id + "/status", "", "", ""},
		{0, "/api/sessions/" + id + "/transcript?format=json", "", "", ""},
		{0, "/api/sessions/" + id + "/transcript?format=md", "", "", ""},
		{0, "/api/sessions/" + id + "/stream?after=-1", "", "Last-Event-ID", "99999999999999999999"},
		{1, "/api/sessions/" + id + "/input", `{"message":""}`, "Content-Type", "application/json"},
		{1, "/api/sessions/" + id + "/cancel", "", "", ""},
		{1, "/api/sessions/" + id + "/email", `{"to":"a@b"}`, "Content-Type", "application/json"},
		{2, "/api/sessions/" + id, `{"name":"new name"}`, "Content-Type", "application/json"},
		{3, "/api/sessions/s_000000000000000000000000", "", "", ""},
		{1, "/api/exedev/new", `{"vmName":"x","prompt":"p","token":"t"}`, "Content-Type", "application/json"},
		{1, "/login", "token=wrong", "Content-Type", "application/x-www-form-urlencoded"},
		{1, "/logout", "", "", ""},
		{0, "/static/js/app.js", "", "", ""},
		{0, "/static/../../etc/passwd", "", "", ""},
		{0, "/%2e%2e/%00", "", "Host", "attacker.example"},
		{4, "/api/sessions/" + id + "/input", strings.Repeat("{", 5000), "Content-Type", "application/json"},
		{1, "/api/sessions", `{"provider":"openai-compatible","model":"m","baseUrl":"http://169.254.169.254/latest?x=1#y"}`, "Content-Type", "application/json"},
		// The workspace routes (files.go).
		{0, "/api/sessions/" + id + "/files?path=..%2F..%2Fetc", "", "", ""},
		{0, "/api/sessions/" + id + "/files/content?path=%00%1b%5b31m", "", "Sec-Fetch-Site", "cross-site"},
		{4, "/api/sessions/" + id + "/files/content?path=a%2Fb.txt", "bytes", "Content-Type", "application/octet-stream"},
		{4, "/api/sessions/" + id + "/files/content?path=%2Fetc%2Fpasswd", "pwned", "Content-Length", "99999999999"},
		{0, "/api/sessions/" + id + "/workspace.tar.gz", "", "", ""},
		{0, "/api/sessions/" + id + "/changes", "", "", ""},
		{4, "/api/sessions/" + id + "/archive", "PK\x03\x04garbage", "Content-Type", "application/zip"},
		{1, "/api/sessions", `{"provider":"anthropic","apiKey":"k","repo":{"url":"https://127.0.0.1/x.git","ref":"--evil","token":"t"},"archiveUpload":true}`, "Content-Type", "application/json"},
	} {
		f.Add(seed.method, seed.path, []byte(seed.body), seed.hname, seed.hval)
	}

	client := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var mu sync.Mutex // one request at a time: sessions the fuzzer makes are ended before the next
	f.Fuzz(func(t *testing.T, method byte, path string, body []byte, hname, hval string) {
		mu.Lock()
		defer mu.Unlock()
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, fuzzMethods[int(method)%len(fuzzMethods)], h.URL("")+path, bytes.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		req.Header = h.AuthHeader()
		req.Header.Set("Content-Type", "application/json")
		if hname != "" && len(hname) < 256 && len(hval) < 8192 {
			req.Header[http.CanonicalHeaderKey(hname)] = []string{hval}
			if strings.EqualFold(hname, "Host") {
				req.Host = hval
			}
		}
		resp, err := client.Do(req)
		if err != nil {
			// The client refused to send it, or a stream outlived the
			// deadline: no answer to judge. The server must still be up.
			alive(t, client, h)
			return
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		intended := resp.StatusCode == http.StatusNotImplemented || // a feature this server does not offer
			resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), "at most") // the session limit
		if resp.StatusCode >= 500 && !intended {
			t.Fatalf("%s %q answered %d: %s", req.Method, path, resp.StatusCode, b)
		}
		if resp.StatusCode == http.StatusCreated && strings.HasPrefix(path, "/api/sessions") {
			var v struct{ ID string }
			if json.Unmarshal(b, &v) == nil && v.ID != "" && v.ID != id {
				del, _ := http.NewRequest("DELETE", h.URL("/api/sessions/"+v.ID), nil)
				del.Header = h.AuthHeader()
				if resp, err := client.Do(del); err == nil {
					resp.Body.Close()
				}
			}
		}
	})
}

// alive fails the test when the server no longer answers its health check.
func alive(t *testing.T, client *http.Client, h *apitest.Harness) {
	t.Helper()
	resp, err := client.Get(h.URL("/api/health"))
	if err != nil {
		t.Fatalf("the server stopped answering: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("health answered %d", resp.StatusCode)
	}
}
