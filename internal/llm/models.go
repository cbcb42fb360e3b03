package llm

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"charm.land/fantasy/providers/openrouter"

	"github.com/execlaw/execlaw/internal/egress"
)

// Where a model list came from.
const (
	SourceCatalogue = "catalogue" // catwalk's embedded catalogue
	SourceLive      = "live"      // the provider answered just now
	SourceCache     = "cache"     // an earlier live answer, because this one failed
)

// ModelList is the answer of /api/models/{provider}.
type ModelList struct {
	Models  []Model `json:"models"`
	Source  string  `json:"source"`
	Warning string  `json:"warning,omitempty"`
}

// Lister answers model lists: the embedded catalogue for providers that have a
// fixed one, and a live listing for OpenRouter and OpenAI-compatible endpoints,
// cached so a slow or failing endpoint still gives the last good answer.
//
// Anyone who may list models can name any base URL, so the cache is bounded:
// at most MaxEntries lists and MaxBytes (estimated) in all, the least
// recently used going first, and none older than TTL plus MaxStale. A
// fetched list is bounded too, before it is parsed (maxModelListBytes) and
// before it is kept (maxModels).
type Lister struct {
	// Client fetches live lists; nil means DefaultHTTPClient. A server
	// passes HTTPClient(its outbound policy): a base URL that the policy
	// refuses answers an error (the API's 400), not a warning.
	Client  *http.Client
	Timeout time.Duration // per live request; default 5s
	TTL     time.Duration // how long a live answer is served without asking again; default 10m
	// MaxStale is how long past TTL a list is kept, to answer when its
	// endpoint fails; default 1h.
	MaxStale time.Duration
	// MaxEntries and MaxBytes bound the cache; defaults 256 lists and 16 MiB.
	MaxEntries int
	MaxBytes   int64

	mu       sync.Mutex
	cache    listCache
	initOnce sync.Once
	client   *http.Client
}

// Limits of live lists and their cache.
const (
	// maxModelListBytes bounds what a model endpoint may send back.
	maxModelListBytes = 8 << 20
	// maxModels bounds the models of one list.
	maxModels = 5000

	defaultMaxCacheEntries = 256
	defaultMaxCacheBytes   = 16 << 20
	defaultMaxStale        = time.Hour
)

// List returns the models of provider. baseURL and key matter only for live listings.
func (l *Lister) List(ctx context.Context, provider, baseURL string, key Secret) (ModelList, error) {
	switch provider {
	case Anthropic, OpenAI:
		return ModelList{Models: CatalogueModels(provider), Source: SourceCatalogue}, nil
	case OpenRouter:
		base := baseURL
		if base == "" {
			base = openrouter.DefaultURL
		}
		return l.live(ctx, provider, base, key, CatalogueModels(OpenRouter))
	case OpenAICompatible:
		if baseURL == "" {
			return ModelList{}, fmt.Errorf("openai-compatible needs a baseUrl to list models")
		}
		return l.live(ctx, provider, baseURL, key, nil)
	}
	return ModelList{}, fmt.Errorf("unknown provider %q (want one of %s)", provider, strings.Join(Providers, ", "))
}

func (l *Lister) init() {
	l.initOnce.Do(func() {
		l.client = l.Client
		if l.client == nil {
			l.client = DefaultHTTPClient()
		}
		l.cache = listCache{
			ttl:        orDuration(l.TTL, 10*time.Minute),
			maxStale:   orDuration(l.MaxStale, defaultMaxStale),
			maxEntries: l.MaxEntries,
			maxBytes:   l.MaxBytes,
		}
		if l.cache.maxEntries <= 0 {
			l.cache.maxEntries = defaultMaxCacheEntries
		}
		if l.cache.maxBytes <= 0 {
			l.cache.maxBytes = defaultMaxCacheBytes
		}
	})
}

func orDuration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (l *Lister) live(ctx context.Context, provider, base string, key Secret, fallback []Model) (ModelList, error) {
	l.init()
	if err := ValidateBaseURL(base); err != nil {
		return ModelList{Models: fallback, Source: SourceCatalogue, Warning: err.Error()}, nil
	}
	// The key is part of the cache key: an endpoint may list different models
	// to different keys, and one user's answer must not reach another, nor
	// make a wrong key look as if it worked.
	cacheKey := provider + " " + base + " " + keyID(key)
	now := time.Now()
	l.mu.Lock()
	c, fresh, ok := l.cache.get(cacheKey, now)
	l.mu.Unlock()
	if ok && fresh {
		return ModelList{Models: c, Source: SourceCache}, nil
	}
	// An early, clear refusal of what the policy refuses; the dial checks
	// again, and that check holds.
	if err := CheckBaseURL(ctx, l.client, base); err != nil {
		return ModelList{}, errors.New(key.Scrub(err.Error()))
	}
	models, err := l.fetch(ctx, base, key)
	if err == nil {
		l.mu.Lock()
		l.cache.put(cacheKey, models, time.Now())
		l.mu.Unlock()
		return ModelList{Models: models, Source: SourceLive}, nil
	}
	var refused *egress.RefusedError
	if errors.As(err, &refused) {
		// The caller's doing, not the endpoint's: said as an error. (A name
		// that resolved to an allowed address a moment ago.)
		return ModelList{}, fmt.Errorf("baseUrl: %s", key.Scrub(refused.Error()))
	}
	warning := "live model list unavailable: " + key.Scrub(err.Error())
	if ok {
		return ModelList{Models: c, Source: SourceCache, Warning: warning}, nil
	}
	return ModelList{Models: fallback, Source: SourceCatalogue, Warning: warning}, nil
}

// listCache is an LRU cache of live lists, bounded in entries, estimated
// bytes and age. Its user holds the lock.
type listCache struct {
	ttl, maxStale time.Duration
	maxEntries    int
	maxBytes      int64

	entries map[string]*list.Element // of *cachedList
	order   list.List                // most recently used first
	bytes   int64
}

type cachedList struct {
	key    string
	models []Model
	at     time.Time
	size   int64
}

// get returns the list kept for key, and whether it is younger than the TTL.
func (c *listCache) get(key string, now time.Time) (models []Model, fresh, ok bool) {
	el, ok := c.entries[key]
	if !ok {
		return nil, false, false
	}
	e := el.Value.(*cachedList)
	age := now.Sub(e.at)
	if age >= c.ttl+c.maxStale {
		c.remove(el)
		return nil, false, false
	}
	c.order.MoveToFront(el)
	return e.models, age < c.ttl, true
}

// put keeps models for key, then drops the least recently used lists until
// the cache is within its bounds. A list larger than the whole cache is not
// kept.
func (c *listCache) put(key string, models []Model, now time.Time) {
	if el, ok := c.entries[key]; ok {
		c.remove(el)
	}
	e := &cachedList{key: key, models: models, at: now, size: listSize(key, models)}
	if e.size > c.maxBytes {
		return
	}
	if c.entries == nil {
		c.entries = map[string]*list.Element{}
	}
	c.entries[key] = c.order.PushFront(e)
	c.bytes += e.size
	for c.order.Len() > c.maxEntries || c.bytes > c.maxBytes {
		c.remove(c.order.Back())
	}
}

func (c *listCache) remove(el *list.Element) {
	e := el.Value.(*cachedList)
	c.order.Remove(el)
	delete(c.entries, e.key)
	c.bytes -= e.size
}

// listSize estimates the memory a cached list holds.
func listSize(key string, models []Model) int64 {
	const perEntry, perModel = 256, 112 // list element, map slot; a Model's fields and string headers
	n := int64(perEntry + len(key))
	for _, m := range models {
		n += int64(perModel + len(m.ID) + len(m.Name))
	}
	return n
}

// keyID names a key in the cache without keeping the key itself.
func keyID(key Secret) string {
	if key.Empty() {
		return ""
	}
	sum := sha256.Sum256([]byte(key.Reveal()))
	return hex.EncodeToString(sum[:16])
}

// openAIModels is the OpenAI-style GET /models answer; OpenRouter adds names,
// context lengths and per-token prices as decimal strings.
type openAIModels struct {
	Data []struct {
		ID            string `json:"id"`
		Name          string `json:"name"`
		ContextLength int64  `json:"context_length"`
		Pricing       *struct {
			Prompt     string `json:"prompt"`
			Completion string `json:"completion"`
		} `json:"pricing"`
	} `json:"data"`
}

func (l *Lister) fetch(ctx context.Context, base string, key Secret) ([]Model, error) {
	timeout := l.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/models", nil)
	if err != nil {
		return nil, err
	}
	if !key.Empty() {
		req.Header.Set("Authorization", "Bearer "+key.Reveal())
	}
	req.Header.Set("Accept", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The status and at most the answer's JSON error message: the
		// endpoint is whatever the caller named.
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorAnswer))
		return nil, fmt.Errorf("GET %s/models: %s: %s", base, statusText(resp.StatusCode), ErrorAnswerMessage(body))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxModelListBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxModelListBytes {
		return nil, fmt.Errorf("model list larger than %d bytes", maxModelListBytes)
	}
	var answer openAIModels
	if err := json.Unmarshal(body, &answer); err != nil {
		return nil, fmt.Errorf("model list is not the expected JSON: %w", err)
	}
	if len(answer.Data) > maxModels {
		return nil, fmt.Errorf("model list has %d models, more than the %d taken", len(answer.Data), maxModels)
	}
	models := make([]Model, 0, len(answer.Data))
	for _, d := range answer.Data {
		if d.ID == "" || len(d.ID) > 256 {
			continue
		}
		m := Model{ID: d.ID, Name: d.Name, ContextWindow: d.ContextLength}
		if m.Name == "" || len(m.Name) > 256 {
			m.Name = d.ID
		}
		if d.Pricing != nil {
			m.CostPer1MIn = perTokenToPerMillion(d.Pricing.Prompt)
			m.CostPer1MOut = perTokenToPerMillion(d.Pricing.Completion)
		}
		models = append(models, m)
	}
	sortModels(models)
	return models, nil
}

func perTokenToPerMillion(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0
	}
	return f * 1e6
}
