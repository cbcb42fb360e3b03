// Package llm builds language models for the providers ExeClaw supports, and
// knows their model catalogues and prices.
package llm

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"charm.land/fantasy"
	"charm.land/fantasy/providers/anthropic"
	"charm.land/fantasy/providers/openai"
	"charm.land/fantasy/providers/openaicompat"
	"charm.land/fantasy/providers/openrouter"
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
	// HTTPClient is used for every request; nil means a client with sane timeouts.
	HTTPClient *http.Client
}

// ValidateBaseURL checks a user-supplied base URL.
func ValidateBaseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("baseUrl must be an absolute http(s) URL, got %q", raw)
	}
	if u.User != nil {
		return fmt.Errorf("baseUrl must not carry credentials; pass the key as apiKey")
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

// DefaultHTTPClient is the client for provider calls: no overall timeout (a
// streamed answer may take minutes) but bounded connection set-up.
func DefaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 0
	return &http.Client{Transport: t}
}

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
