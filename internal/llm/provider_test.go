package llm

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"charm.land/fantasy"

	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

// turnResult is what one streamed model call yielded.
type turnResult struct {
	text  string
	parts []fantasy.StreamPart
	err   error // the stream's error part, if any
}

func (r turnResult) started() bool {
	for _, p := range r.parts {
		if p.Type != fantasy.StreamPartTypeWarnings && p.Type != fantasy.StreamPartTypeError {
			return true
		}
	}
	return false
}

// streamTurn sends one user message and reads the whole answer.
func streamTurn(t *testing.T, ctx context.Context, m fantasy.LanguageModel, prompt string) turnResult {
	t.Helper()
	stream, err := m.Stream(ctx, fantasy.Call{Prompt: fantasy.Prompt{fantasy.NewUserMessage(prompt)}})
	if err != nil {
		return turnResult{err: err}
	}
	var r turnResult
	for p := range stream {
		r.parts = append(r.parts, p)
		switch p.Type {
		case fantasy.StreamPartTypeTextDelta:
			r.text += p.Delta
		case fantasy.StreamPartTypeError:
			r.err = p.Error
		}
	}
	return r
}

func newModel(t *testing.T, cfg Config) fantasy.LanguageModel {
	t.Helper()
	m, err := NewModel(t.Context(), cfg)
	if err != nil {
		t.Fatalf("NewModel(%s): %v", cfg.Provider, err)
	}
	return m
}

func TestNewModelTalksToEachProvider(t *testing.T) {
	const key = "sk-test-0123456789abcdef"
	cases := []struct {
		provider, model string
		fake            func(...llmtest.Turn) *llmtest.Server
		// keyHeader is where the key must arrive; wrongHeader must not carry it.
		keyHeader   func(http.Header) string
		wrongHeader string
		path        string
	}{
		{Anthropic, "claude-sonnet-4-20250514", llmtest.NewAnthropic,
			func(h http.Header) string { return h.Get("X-Api-Key") }, "Authorization", "/v1/messages"},
		{OpenAI, "gpt-4o", llmtest.NewOpenAI,
			func(h http.Header) string { return strings.TrimPrefix(h.Get("Authorization"), "Bearer ") }, "X-Api-Key", "/v1/chat/completions"},
		{OpenRouter, "anthropic/claude-sonnet-4", llmtest.NewOpenAI,
			func(h http.Header) string { return strings.TrimPrefix(h.Get("Authorization"), "Bearer ") }, "X-Api-Key", "/v1/chat/completions"},
		{OpenAICompatible, "qwen2.5-coder", llmtest.NewOpenAI,
			func(h http.Header) string { return strings.TrimPrefix(h.Get("Authorization"), "Bearer ") }, "X-Api-Key", "/v1/chat/completions"},
	}
	for _, c := range cases {
		t.Run(c.provider, func(t *testing.T) {
			fake := c.fake(llmtest.Turn{Text: "Hello from the fake."}).Attach(t)
			fake.RequireKey(key)
			m := newModel(t, Config{Provider: c.provider, Model: c.model, APIKey: NewSecret(key), BaseURL: fake.BaseURL()})
			if m.Model() != c.model {
				t.Errorf("Model() = %q, want %q", m.Model(), c.model)
			}

			r := streamTurn(t, t.Context(), m, "hi")
			if r.err != nil || r.text != "Hello from the fake." {
				t.Fatalf("turn: text %q, err %v", r.text, r.err)
			}
			reqs := fake.Requests()
			if len(reqs) != 1 {
				t.Fatalf("the fake got %d requests, want 1", len(reqs))
			}
			if reqs[0].Path != c.path {
				t.Errorf("path %q, want %q", reqs[0].Path, c.path)
			}
			if got := c.keyHeader(reqs[0].Header); got != key {
				t.Errorf("key arrived as %q", got)
			}
			if strings.Contains(reqs[0].Header.Get(c.wrongHeader), key) {
				t.Errorf("key also sent in %s", c.wrongHeader)
			}
			if got, _ := reqs[0].JSON["model"].(string); got != c.model {
				t.Errorf("request model %q, want %q", got, c.model)
			}
		})
	}
}

func TestNewModelBuildsWithoutBaseURL(t *testing.T) {
	// Building talks to nobody; only openai-compatible needs an endpoint.
	for _, p := range []string{Anthropic, OpenAI, OpenRouter} {
		if _, err := NewModel(t.Context(), Config{Provider: p, Model: "some-model", APIKey: NewSecret("k")}); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestNewModelRejectsBadConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"openai-compatible without baseUrl", Config{Provider: OpenAICompatible, Model: "llama3"}, "baseUrl"},
		{"no model", Config{Provider: OpenAI}, "no model"},
		{"unknown provider", Config{Provider: "acme", Model: "m"}, "unknown provider"},
		{"relative baseUrl", Config{Provider: OpenAI, Model: "m", BaseURL: "/v1"}, "absolute http(s) URL"},
		{"ftp baseUrl", Config{Provider: OpenAICompatible, Model: "m", BaseURL: "ftp://example.com/v1"}, "absolute http(s) URL"},
		{"baseUrl without host", Config{Provider: Anthropic, Model: "m", BaseURL: "http://"}, "absolute http(s) URL"},
		{"unparsable baseUrl", Config{Provider: OpenRouter, Model: "m", BaseURL: "http://[::1"}, "absolute http(s) URL"},
		{"baseUrl with credentials", Config{Provider: OpenAICompatible, Model: "m", BaseURL: "https://user:pw@example.com/v1"}, "credentials"},
	}
	for _, c := range cases {
		_, err := NewModel(t.Context(), c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "pw@") {
			t.Errorf("%s: error quotes the credentials: %v", c.name, err)
		}
	}
}

func TestValidProvider(t *testing.T) {
	for _, p := range Providers {
		if !ValidProvider(p) {
			t.Errorf("ValidProvider(%q) = false", p)
		}
	}
	for _, p := range []string{"", "Anthropic", "openai_compatible", "gemini"} {
		if ValidProvider(p) {
			t.Errorf("ValidProvider(%q) = true", p)
		}
	}
}

// countingTransport counts the requests that go through it.
type countingTransport struct {
	n    atomic.Int32
	next http.RoundTripper
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(r)
}

// The OpenRouter provider has no base URL option of its own: the override
// must still be where the request goes, through the caller's HTTP client.
func TestOpenRouterBaseURLOverrideReachesTheOverride(t *testing.T) {
	fake := llmtest.NewOpenAI(llmtest.Turn{Text: "Routed to the override."}).Attach(t)
	transport := &countingTransport{next: http.DefaultTransport}
	m := newModel(t, Config{
		Provider: OpenRouter, Model: "openai/gpt-4o", APIKey: NewSecret("sk-or-v1-abc"),
		BaseURL:    fake.BaseURL() + "/", // a trailing slash must not double up
		HTTPClient: &http.Client{Transport: transport},
	})
	r := streamTurn(t, t.Context(), m, "hi")
	if r.err != nil || r.text != "Routed to the override." {
		t.Fatalf("turn: text %q, err %v", r.text, r.err)
	}
	reqs := fake.Requests()
	if len(reqs) != 1 || reqs[0].Path != "/v1/chat/completions" {
		t.Fatalf("override got %+v, want one POST /v1/chat/completions", reqs)
	}
	if transport.n.Load() != 1 {
		t.Errorf("the configured HTTP client carried %d requests, want 1", transport.n.Load())
	}
	// OpenRouter's own request shaping survives the rewrite.
	if _, ok := reqs[0].JSON["usage"]; !ok {
		t.Logf("request body: %s", reqs[0].Body)
		t.Error("the request lacks OpenRouter's usage accounting option; was it sent by the OpenRouter provider?")
	}
}

func TestRewriteTransportLeavesOtherHostsAlone(t *testing.T) {
	fake := llmtest.NewOpenAI().Attach(t)
	c := withBaseRewrite(&http.Client{}, "https://openrouter.ai/api/v1", "http://unused.invalid/v1")
	resp, err := c.Get(fake.BaseURL() + "/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(fake.Requests()) != 1 {
		t.Errorf("a request for another host was not passed through unchanged: %s, %d requests", resp.Status, len(fake.Requests()))
	}
}
