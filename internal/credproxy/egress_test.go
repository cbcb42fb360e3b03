package credproxy

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/execlaw/execlaw/internal/egress"
	"github.com/execlaw/execlaw/internal/llm"
)

// policyRig is a proxy with the given client (nil: the default) in front of
// baseURL, served on a loopback listener.
func policyRig(t *testing.T, provider, baseURL string, client *http.Client) *rig {
	t.Helper()
	r := &rig{t: t, token: NewToken(), usage: make(chan Usage, 16)}
	p, err := New(Config{Provider: provider, BaseURL: baseURL, APIKey: llm.NewSecret(realKey), Token: r.token, Client: client})
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
			wg.Go(func() { p.ServeConn(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return r
}

type anthropicError struct {
	Type  string
	Error struct{ Type, Message string }
}

// The upstream requests go where the client's outbound policy allows, and
// nowhere else: a refused address is an error answer naming the policy, and
// nothing reaches it.
func TestUpstreamHonoursThePolicy(t *testing.T) {
	var hits atomic.Int32
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer upstream.Close()

	for _, tc := range []struct {
		name   string
		base   string
		client *http.Client
	}{
		{"loopback under public", upstream.URL, llm.HTTPClient(egress.PublicOnly())},
		{"localhost under public", strings.Replace(upstream.URL, "127.0.0.1", "localhost", 1), llm.HTTPClient(egress.PublicOnly())},
		{"metadata address, default client", "http://169.254.169.254", nil},
		{"private address, default client", "http://10.0.0.1", nil},
		{"mapped metadata address, default client", "http://[::ffff:169.254.169.254]", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := policyRig(t, llm.Anthropic, tc.base, tc.client)
			resp, got := r.post("/v1/messages", anthropicStream, anthropicHeader(r.token))
			var e anthropicError
			if resp.StatusCode != http.StatusBadGateway || json.Unmarshal(got, &e) != nil || !strings.Contains(e.Error.Message, "outbound policy") {
				t.Errorf("status %d: %s", resp.StatusCode, got)
			}
			assertNoKey(t, resp.Header, got)
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the refused upstream got %d requests", n)
	}
	// The default client allows loopback (a model server on this host).
	r := policyRig(t, llm.Anthropic, upstream.URL, nil)
	if resp, got := r.post("/v1/messages", anthropicStream, anthropicHeader(r.token)); resp.StatusCode != http.StatusOK || hits.Load() != 1 {
		t.Errorf("loopback with the default client: %d %s", resp.StatusCode, got)
	}
}

// An upstream error answer reaches the agent as the provider's error shape
// with at most the upstream's JSON error message; any other body stays out.
func TestUpstreamErrorBodiesNotRelayed(t *testing.T) {
	for _, tc := range []struct {
		provider, path, body     string
		status                   int
		contentType, answer      string
		wantMessage, wantType    string
		header                   func(string) http.Header
		notInAnswer              []string
		wantRetryAfter, location bool
	}{
		{provider: llm.Anthropic, path: "/v1/messages", body: anthropicStream, status: 500, contentType: "text/html",
			answer: "<html>INTERNAL-ADMIN-PAGE</html>", wantMessage: "HTTP 500 from the endpoint: " + llm.NoErrorMessage,
			wantType: "api_error", header: anthropicHeader, notInAnswer: []string{"INTERNAL", "<html"}},
		{provider: llm.Anthropic, path: "/v1/messages", body: anthropicStream, status: 529, contentType: "application/json",
			answer:      `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_INTERNAL"}`,
			wantMessage: "Overloaded", wantType: "overloaded_error", header: anthropicHeader, notInAnswer: []string{"INTERNAL"}, wantRetryAfter: true},
		{provider: llm.OpenAICompatible, path: "/v1/chat/completions", body: "{}", status: 404, contentType: "application/json",
			answer: `{"detail":"INTERNAL-JSON"}`, wantMessage: "HTTP 404 from the endpoint: " + llm.NoErrorMessage,
			wantType: "invalid_request_error", header: bearer, notInAnswer: []string{"INTERNAL", "detail"}},
		{provider: llm.OpenAICompatible, path: "/v1/chat/completions", body: "{}", status: 404, contentType: "application/json",
			answer: `{"error":"model 'qwen9' not found"}`, wantMessage: "model 'qwen9' not found", wantType: "invalid_request_error", header: bearer},
		{provider: llm.OpenAICompatible, path: "/v1/chat/completions", body: "{}", status: 400, contentType: "application/json",
			answer:      `{"error":{"message":"context too long","type":"invalid_request_error","code":"context_length_exceeded"}}`,
			wantMessage: "context too long", wantType: "invalid_request_error", header: bearer},
		{provider: llm.Anthropic, path: "/v1/messages", body: anthropicStream, status: http.StatusTemporaryRedirect, contentType: "text/html",
			answer: "<a>INTERNAL</a>", wantMessage: "the endpoint redirected (HTTP 307); redirects are not followed",
			wantType: "api_error", header: anthropicHeader, notInAnswer: []string{"INTERNAL", "169.254"}, location: true},
	} {
		t.Run(fmt.Sprintf("%s %d %s", tc.provider, tc.status, tc.contentType), func(t *testing.T) {
			upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				w.Header().Set("Retry-After", "3")
				if tc.location {
					w.Header().Set("Location", "http://169.254.169.254/latest/meta-data/")
				}
				w.WriteHeader(tc.status)
				fmt.Fprint(w, tc.answer)
			}))
			defer upstream.Close()
			base := upstream.URL
			if tc.provider != llm.Anthropic {
				base += "/v1"
			}
			for name, client := range map[string]*http.Client{"default client": nil, "plain client": {}} {
				r := policyRig(t, tc.provider, base, client)
				resp, got := r.post(tc.path, tc.body, tc.header(r.token))
				if resp.StatusCode != tc.status {
					t.Errorf("%s: status %d, want the upstream's %d", name, resp.StatusCode, tc.status)
				}
				var e struct {
					Error struct {
						Type, Message string
						Code          any
					}
				}
				if err := json.Unmarshal(got, &e); err != nil || e.Error.Message != tc.wantMessage || e.Error.Type != tc.wantType {
					t.Errorf("%s: answer %s (%v), want message %q, type %q", name, got, err, tc.wantMessage, tc.wantType)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("%s: Content-Type %q", name, ct)
				}
				if resp.Header.Get("Location") != "" {
					t.Errorf("%s: Location %q passed on", name, resp.Header.Get("Location"))
				}
				if resp.Header.Get("Retry-After") != "3" {
					t.Errorf("%s: Retry-After not passed on", name)
				}
				for _, s := range tc.notInAnswer {
					if strings.Contains(string(got), s) {
						t.Errorf("%s: answer %s shows %q", name, got, s)
					}
				}
			}
		})
	}
}
