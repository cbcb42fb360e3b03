// Package llm builds language models for the providers ExeClaw supports, and
// knows their model catalogues and prices.
package llm

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"charm.land/fantasy"
	"charm.land/fantasy/providers/anthropic"
	"charm.land/fantasy/providers/openai"
	"charm.land/fantasy/providers/openaicompat"
	"charm.land/fantasy/providers/openrouter"

	"github.com/execlaw/execlaw/internal/egress"
)

// Provider names as the API spells them.
const (
	Anthropic        = "anthropic"
	OpenAI           = "openai"
	OpenRouter       = "openrouter"
	OpenAICompatible = "openai-compatible"
)

// Providers lists every provider name the API accepts.
var Providers = []string{Anthropic, OpenAI, OpenRouter, OpenAICompatible}

// ValidProvider reports whether name is a provider the API accepts.
func ValidProvider(name string) bool {
	for _, p := range Providers {
		if p == name {
			return true
		}
	}
	return false
}

// Config says which model to talk to and how.
type Config struct {
	Provider string
	Model    string
	APIKey   Secret
	// BaseURL overrides the provider's endpoint; required for openai-compatible.
	BaseURL string
	// HTTPClient is used for every request; nil means DefaultHTTPClient. A
	// server passes HTTPClient(its policy).
	HTTPClient *http.Client
}

// MaxBaseURLLen bounds a base URL.
const MaxBaseURLLen = 2048

// ValidateBaseURL checks a user-supplied base URL: an absolute http(s) URL
// without user info, query or fragment (paths such as /models and
// /chat/completions are appended to it, so a query would let the caller pick
// the whole URL), at most MaxBaseURLLen bytes. Where it leads is checked by
// CheckBaseURL and, for good, when a connection is made.
func ValidateBaseURL(raw string) error {
	if len(raw) > MaxBaseURLLen {
		return fmt.Errorf("baseUrl must be at most %d bytes", MaxBaseURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("baseUrl must be an absolute http(s) URL, got %q", raw)
	}
	if u.User != nil {
		return fmt.Errorf("baseUrl must not carry credentials; pass the key as apiKey")
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(raw, "?#") {
		return fmt.Errorf("baseUrl must not have a query (?) or fragment (#): the API's paths are appended to it")
	}
	return nil
}

// DefaultPolicy is the outbound policy of DefaultHTTPClient and of a Lister
// without a client: public and loopback addresses, so a model server on this
// host (Ollama, llama.cpp) works. A server passes its own (serve's
// --model-hosts).
func DefaultPolicy() *egress.Policy { return egress.PublicAndLoopback() }

// CheckBaseURL is ValidateBaseURL plus an early look at where the URL leads:
// its host is resolved and checked against the outbound policy of client
// (nil: DefaultPolicy), so that a URL the policy refuses is refused when it
// is given, with a clear message, rather than on the first model call. A
// client without an egress policy is not checked; a name that does not
// resolve now passes. The check when a connection is made is the one that
// holds.
func CheckBaseURL(ctx context.Context, client *http.Client, raw string) error {
	if err := ValidateBaseURL(raw); err != nil {
		return err
	}
	p := DefaultPolicy()
	if client != nil {
		p = egress.PolicyOf(client.Transport)
	}
	if p == nil {
		return nil
	}
	u, _ := url.Parse(raw) // valid: checked above
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("baseUrl has an invalid port %q", port)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := p.CheckHost(ctx, u.Hostname(), uint16(n)); err != nil {
		return fmt.Errorf("baseUrl %s: %w", u.Host, err)
	}
	return nil
}

// NewModel builds the language model cfg names.
func NewModel(ctx context.Context, cfg Config) (fantasy.LanguageModel, error) {
	if cfg.Model == "" {
		return nil, fmt.Errorf("no model given")
	}
	if cfg.BaseURL != "" {
		if err := ValidateBaseURL(cfg.BaseURL); err != nil {
			return nil, err
		}
	}
	client := cfg.HTTPClient
	if client == nil {
		client = DefaultHTTPClient()
	}
	key := cfg.APIKey.Reveal()
	base := strings.TrimRight(cfg.BaseURL, "/")

	var (
		p   fantasy.Provider
		err error
	)
	switch cfg.Provider {
	case Anthropic:
		opts := []anthropic.Option{anthropic.WithAPIKey(key), anthropic.WithHTTPClient(client)}
		if base != "" {
			opts = append(opts, anthropic.WithBaseURL(base))
		}
		p, err = anthropic.New(opts...)
	case OpenAI:
		opts := []openai.Option{openai.WithAPIKey(key), openai.WithHTTPClient(client)}
		if base != "" {
			opts = append(opts, openai.WithBaseURL(base))
		}
		p, err = openai.New(opts...)
	case OpenRouter:
		if base != "" {
			// The OpenRouter provider has no base URL option; its requests are
			// rewritten onto the override instead, keeping its request shaping.
			client = withBaseRewrite(client, openrouter.DefaultURL, base)
		}
		p, err = openrouter.New(openrouter.WithAPIKey(key), openrouter.WithHTTPClient(client))
	case OpenAICompatible:
		if base == "" {
			return nil, fmt.Errorf("provider openai-compatible needs a baseUrl (for example http://localhost:11434/v1)")
		}
		p, err = openaicompat.New(openaicompat.WithBaseURL(base), openaicompat.WithAPIKey(key),
			openaicompat.WithHTTPClient(client))
	default:
		return nil, fmt.Errorf("unknown provider %q (want one of %s)", cfg.Provider, strings.Join(Providers, ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("set up provider %s: %w", cfg.Provider, err)
	}
	m, err := p.LanguageModel(ctx, cfg.Model)
	if err != nil {
		return nil, fmt.Errorf("set up model %s: %w", cfg.Model, err)
	}
	return m, nil
}

// HTTPClient is the client for provider calls under the outbound policy p
// (nil: DefaultPolicy): connections only where p allows, checked on the
// resolved address when they are made; no proxy from the environment; no
// redirects (the request fails with an egress.RedirectError); error answers
// cut down to their JSON error message (see errorGuard). No overall
// timeout, since a streamed answer may take minutes, but bounded connection
// set-up.
func HTTPClient(p *egress.Policy) *http.Client {
	if p == nil {
		p = DefaultPolicy()
	}
	return &http.Client{Transport: errorGuard{next: egress.NewTransport(p)}, CheckRedirect: egress.NoRedirects}
}

// DefaultHTTPClient is HTTPClient(DefaultPolicy()): what model calls use
// when no client is configured.
func DefaultHTTPClient() *http.Client { return HTTPClient(nil) }

// withBaseRewrite sends requests for from... to to... instead.
func withBaseRewrite(c *http.Client, from, to string) *http.Client {
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	cc := *c
	cc.Transport = rewriteTransport{from: strings.TrimRight(from, "/"), to: to, next: next}
	return &cc
}

type rewriteTransport struct {
	from, to string
	next     http.RoundTripper
}

func (t rewriteTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	s := r.URL.String()
	if !strings.HasPrefix(s, t.from) {
		return t.next.RoundTrip(r)
	}
	u, err := url.Parse(t.to + strings.TrimPrefix(s, t.from))
	if err != nil {
		return nil, err
	}
	r2 := r.Clone(r.Context())
	r2.URL = u
	r2.Host = u.Host
	return t.next.RoundTrip(r2)
}
