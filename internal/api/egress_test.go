package api_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/egress"
	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

// countingEndpoint is a model endpoint that must not be asked.
func countingEndpoint(t *testing.T) (*httptest.Server, *atomic.Int32) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte(`{"data":[{"id":"m"}]}`))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func sessionCount(t *testing.T, h *apitest.Harness) int {
	t.Helper()
	var list struct{ Sessions []any }
	h.Must(http.StatusOK, "GET", "/api/sessions", nil).JSON(t, &list)
	return len(list.Sessions)
}

// A base URL carries no query, fragment or user info: paths are appended
// to it, and a query would let the caller pick the whole URL. Both routes
// that take one answer 400, and nothing is asked.
func TestBaseURLShapeRefused(t *testing.T) {
	h := apitest.New(t, apitest.Options{})
	srv, hits := countingEndpoint(t)
	for _, base := range []string{
		srv.URL + "/admin?path=",
		srv.URL + "/v1?",
		srv.URL + "/v1#models",
		strings.Replace(srv.URL, "http://", "http://user@", 1) + "/v1",
		strings.Replace(srv.URL, "http://", "http://user:pw@", 1) + "/v1",
	} {
		r := h.Do("GET", "/api/models/openai-compatible?baseUrl="+url.QueryEscape(base), nil, nil)
		if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "baseUrl") {
			t.Errorf("GET /api/models with %s: %d %s", base, r.Status, r.Body)
		}
		r = h.Do("POST", "/api/sessions", map[string]any{"provider": "openai-compatible", "model": "m", "baseUrl": base}, nil)
		if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "baseUrl") {
			t.Errorf("POST /api/sessions with %s: %d %s", base, r.Status, r.Body)
		}
		if strings.Contains(string(r.Body), "pw@") {
			t.Errorf("the answer quotes the credentials: %s", r.Body)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the endpoint got %d requests", n)
	}
	if n := sessionCount(t, h); n != 0 {
		t.Errorf("%d sessions created", n)
	}
}

// The metadata address and the private network are refused with 400 when
// they are given, on both routes, before anything is sent; under the
// harness's policy (the server's default for one user: public and
// loopback) a model server on this host is fine.
func TestBaseURLRefusedByPolicy(t *testing.T) {
	h := apitest.New(t, apitest.Options{})
	for _, base := range []string{
		"http://169.254.169.254/latest/meta-data",
		"http://[::ffff:169.254.169.254]/v1",
		"http://10.0.0.1:11434/v1",
		"http://[fd00:ec2::254]/v1",
		"http://0.0.0.0:8080/v1",
	} {
		r := h.Do("GET", "/api/models/openai-compatible?baseUrl="+url.QueryEscape(base), nil, nil)
		if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "outbound policy") {
			t.Errorf("GET /api/models with %s: %d %s", base, r.Status, r.Body)
		}
		r = h.Do("POST", "/api/sessions", map[string]any{"provider": "openai-compatible", "model": "m", "baseUrl": base}, nil)
		if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "outbound policy") {
			t.Errorf("POST /api/sessions with %s: %d %s", base, r.Status, r.Body)
		}
	}
	if n := sessionCount(t, h); n != 0 {
		t.Errorf("%d sessions created", n)
	}

	fake := llmtest.NewOpenAI().Attach(t)
	fake.SetModels("local-model")
	var list llm.ModelList
	h.Must(http.StatusOK, "GET", "/api/models/openai-compatible?baseUrl="+url.QueryEscape(fake.BaseURL()), nil).JSON(t, &list)
	if list.Source != llm.SourceLive || len(list.Models) != 1 {
		t.Errorf("loopback model list: %+v", list)
	}
	h.Create(map[string]any{"provider": "openai-compatible", "model": "m", "baseUrl": fake.BaseURL()})
}

// With a public policy (a server for many users) this host is out of reach
// too, by address or by name, on both routes.
func TestBaseURLLoopbackRefusedUnderPublic(t *testing.T) {
	h := apitest.New(t, apitest.Options{LLMClient: llm.HTTPClient(egress.PublicOnly())})
	srv, hits := countingEndpoint(t)
	for _, base := range []string{srv.URL + "/v1", strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/v1"} {
		r := h.Do("GET", "/api/models/openai-compatible?baseUrl="+url.QueryEscape(base), nil, nil)
		if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "loopback") {
			t.Errorf("GET /api/models with %s: %d %s", base, r.Status, r.Body)
		}
		r = h.Do("POST", "/api/sessions", map[string]any{"provider": "openai-compatible", "model": "m", "baseUrl": base}, nil)
		if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "loopback") {
			t.Errorf("POST /api/sessions with %s: %d %s", base, r.Status, r.Body)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the endpoint got %d requests", n)
	}
}
