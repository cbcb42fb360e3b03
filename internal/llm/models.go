package llm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"charm.land/fantasy/providers/openrouter"
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
type Lister struct {
	Client  *http.Client
	Timeout time.Duration // per live request; default 5s
	TTL     time.Duration // how long a live answer is served without asking again; default 10m

	mu    sync.Mutex
	cache map[string]cachedList
}

type cachedList struct {
	models []Model
	at     time.Time
}

// maxModelListBytes bounds what a model endpoint may send back.
const maxModelListBytes = 16 << 20

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
		return l.live(ctx, provider, base, key, CatalogueModels(OpenRouter)), nil
	case OpenAICompatible:
		if baseURL == "" {
			return ModelList{}, fmt.Errorf("openai-compatible needs a baseUrl to list models")
		}
		return l.live(ctx, provider, baseURL, key, nil), nil
	}
	return ModelList{}, fmt.Errorf("unknown provider %q (want one of %s)", provider, strings.Join(Providers, ", "))
}

func (l *Lister) live(ctx context.Context, provider, base string, key Secret, fallback []Model) ModelList {
	if err := ValidateBaseURL(base); err != nil {
		return ModelList{Models: fallback, Source: SourceCatalogue, Warning: err.Error()}
	}
	// The key is part of the cache key: an endpoint may list different models
	// to different keys, and one user's answer must not reach another, nor
	// make a wrong key look as if it worked.
	cacheKey := provider + " " + base + " " + keyID(key)
	l.mu.Lock()
	c, ok := l.cache[cacheKey]
	l.mu.Unlock()
	ttl := l.TTL
	if ttl == 0 {
		ttl = 10 * time.Minute
	}
	if ok && time.Since(c.at) < ttl {
		return ModelList{Models: c.models, Source: SourceCache}
	}
	models, err := l.fetch(ctx, base, key)
	if err == nil {
		l.mu.Lock()
		if l.cache == nil {
			l.cache = map[string]cachedList{}
		}
		l.cache[cacheKey] = cachedList{models, time.Now()}
		l.mu.Unlock()
		return ModelList{Models: models, Source: SourceLive}
	}
	warning := "live model list unavailable: " + key.Scrub(err.Error())
	if ok {
		return ModelList{Models: c.models, Source: SourceCache, Warning: warning}
	}
	return ModelList{Models: fallback, Source: SourceCatalogue, Warning: warning}
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
	client := l.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/models: %s", base, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxModelListBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxModelListBytes {
		return nil, fmt.Errorf("model list larger than %d bytes", maxModelListBytes)
	}
	var list openAIModels
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("model list is not the expected JSON: %w", err)
	}
	models := make([]Model, 0, len(list.Data))
	for _, d := range list.Data {
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
