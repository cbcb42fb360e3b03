// Package credproxy is the host end of the LLM tunnels that agent CLIs
// running inside a VM use. The agent holds a per-session token instead of
// the API key; the proxy checks the token, lets through only the provider's
// model endpoints, adds the real key, and streams the answer back while
// counting the tokens used. So the key never enters the VM, and usage is
// counted on the host as it is for the built-in agent.
//
// The proxy serves HTTP/1.1 on connections it is handed (ServeConn), as
// guest.ServeTunnel hands them over; it never listens on a network itself.
package credproxy

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/execlaw/execlaw/internal/llm"
)

// Config configures one Proxy: one provider, one key, one session's token.
type Config struct {
	// Provider is llm.Anthropic, llm.OpenAI, llm.OpenRouter or
	// llm.OpenAICompatible; it decides the endpoints, the auth header and
	// the error shape.
	Provider string
	// BaseURL is the upstream, as llm.Config.BaseURL spells it (Anthropic's
	// without /v1, the others' with it). Empty means the provider's default;
	// openai-compatible has none and needs one.
	BaseURL string
	// APIKey is the real key, revealed only when a request is sent. Empty
	// sends no auth header (a local model server without keys).
	APIKey llm.Secret
	// Token is what the agent in the VM presents instead of the key
	// (x-api-key or Authorization: Bearer). Use NewToken.
	Token string
	// Client sends the upstream requests; nil means llm.DefaultHTTPClient.
	// Its outbound policy decides where they may go: a session's client
	// is llm.HTTPClient(the server's policy), so the base URL cannot reach
	// what the policy refuses.
	// The proxy uses a copy that never follows redirects (Go would resend
	// x-api-key to another host) and carries no cookie jar.
	Client *http.Client
	// OnUsage, if set, is called once for every upstream response that
	// reported token usage, after the response ended. Connections are
	// served concurrently, so it may be called concurrently.
	OnUsage func(Usage)
	Logger  *slog.Logger
}

// Usage is what one upstream response reported. InputTokens excludes the
// cached part for every provider (OpenAI counts it inside prompt_tokens;
// it is moved to CacheReadTokens here), as fantasy.Usage does.
type Usage struct {
	Model            string
	InputTokens      int64
	OutputTokens     int64
	CacheReadTokens  int64
	CacheWriteTokens int64
}

// Proxy serves the agent's LLM requests. It is safe for concurrent use.
type Proxy struct {
	d       dialect
	base    string // without a trailing slash
	key     llm.Secret
	token   []byte
	client  *http.Client
	onUsage func(Usage)
	log     *slog.Logger

	inflight inflight
	conns    chan struct{} // one token per connection served (MaxConns)
}

// minTokenLen keeps a guessable token from being configured by mistake.
const minTokenLen = 16

// New checks cfg and returns a proxy.
func New(cfg Config) (*Proxy, error) {
	d, ok := dialects[cfg.Provider]
	if !ok {
		return nil, fmt.Errorf("credproxy: unknown provider %q (want one of %s)", cfg.Provider, strings.Join(llm.Providers, ", "))
	}
	base := cfg.BaseURL
	if base == "" {
		if d.defaultBase == "" {
			return nil, fmt.Errorf("credproxy: provider %s needs a base URL", cfg.Provider)
		}
		base = d.defaultBase
	}
	if err := llm.ValidateBaseURL(base); err != nil {
		return nil, fmt.Errorf("credproxy: %w", err)
	}
	if len(cfg.Token) < minTokenLen {
		return nil, errors.New("credproxy: token missing or too short (use NewToken)")
	}
	client := cfg.Client
	if client == nil {
		client = llm.DefaultHTTPClient()
	}
	cc := *client
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cc.Jar = nil
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Proxy{
		d:       d,
		base:    strings.TrimRight(base, "/"),
		key:     cfg.APIKey,
		token:   []byte(cfg.Token),
		client:  &cc,
		onUsage: cfg.OnUsage,
		log:     log.With("provider", cfg.Provider),
		conns:   make(chan struct{}, MaxConns),
	}, nil
}

// NewToken returns a fresh session token: 32 random bytes, hex-encoded.
func NewToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand crashes the program instead)
	return hex.EncodeToString(b)
}

// authorized reports whether the request presents the token, in either of
// the headers the SDKs use for their key. Comparisons are constant-time.
func (p *Proxy) authorized(h http.Header) bool {
	ok := false
	for _, v := range h.Values("X-Api-Key") {
		ok = subtle.ConstantTimeCompare([]byte(v), p.token) == 1 || ok
	}
	for _, v := range h.Values("Authorization") {
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			ok = subtle.ConstantTimeCompare([]byte(strings.TrimSpace(v[7:])), p.token) == 1 || ok
		}
	}
	return ok
}
