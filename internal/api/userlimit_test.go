package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/api"
	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

// Through the API, with exe.dev's users: one user past their own limit gets
// 429 with a JSON error that says the limit, while another user can still
// start sessions; a full server is 503.
func TestPerUserLimitAPI(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{Auth: api.Auth{Mode: api.AuthExeDev}, MaxSessions: 3, MaxSessionsPerUser: 2})
	h.AnthropicSession(fake, nil)
	h.AnthropicSession(fake, nil)
	create := func(user string) apitest.Response {
		hdr := http.Header{"X-Exedev-Userid": {user}, "Content-Type": {"application/json"}}
		return h.Do("POST", "/api/sessions", map[string]any{"provider": "anthropic", "apiKey": "k",
			"model": "claude-sonnet-4-20250514", "baseUrl": fake.BaseURL()}, hdr)
	}
	r := create("alice")
	var body struct{ Error string }
	if err := json.Unmarshal(r.Body, &body); err != nil || r.Status != http.StatusTooManyRequests || !strings.Contains(body.Error, "2 sessions") {
		t.Fatalf("alice's third session: %d %s", r.Status, r.Body)
	}
	if r := create("bob"); r.Status != http.StatusCreated {
		t.Fatalf("bob's first session: %d %s", r.Status, r.Body)
	}
	if r := create("carol"); r.Status != http.StatusServiceUnavailable || !strings.Contains(string(r.Body), "at most 3 sessions") {
		t.Fatalf("a session past the server's limit: %d %s", r.Status, r.Body)
	}
}
