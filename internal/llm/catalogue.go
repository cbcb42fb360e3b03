package llm

import (
	"sort"
	"strings"
	"sync"

	"charm.land/catwalk/pkg/catwalk"
	"charm.land/catwalk/pkg/embedded"
)

// Model is one entry of a provider's model list, as /api/models answers it.
type Model struct {
	ID            string  `json:"id"`
	Name          string  `json:"name"`
	Default       bool    `json:"default"`
	ContextWindow int64   `json:"contextWindow,omitempty"`
	MaxTokens     int64   `json:"maxTokens,omitempty"`
	CanReason     bool    `json:"canReason"`
	CostPer1MIn   float64 `json:"costPer1MIn"`
	CostPer1MOut  float64 `json:"costPer1MOut"`
}

var (
	catalogueOnce sync.Once
	catalogue     map[string]catwalk.Provider // by our provider name
)

// catalogueProviders maps our provider names to catwalk's.
var catalogueProviders = map[string]catwalk.InferenceProvider{
	Anthropic:  catwalk.InferenceProviderAnthropic,
	OpenAI:     catwalk.InferenceProviderOpenAI,
	OpenRouter: catwalk.InferenceProviderOpenRouter,
}

func loadCatalogue() map[string]catwalk.Provider {
	catalogueOnce.Do(func() {
		catalogue = map[string]catwalk.Provider{}
		for _, p := range embedded.GetAll() {
			for ours, theirs := range catalogueProviders {
				if p.ID == theirs {
					catalogue[ours] = p
				}
			}
		}
	})
	return catalogue
}

// CatalogueModels returns the embedded catalogue's models for a provider, the
// provider's default first, then by name. openai-compatible has none: its
// models are whatever the endpoint serves.
func CatalogueModels(provider string) []Model {
	p, ok := loadCatalogue()[provider]
	if !ok {
		return nil
	}
	out := make([]Model, 0, len(p.Models))
	for _, m := range p.Models {
		out = append(out, fromCatwalk(m, m.ID == p.DefaultLargeModelID))
	}
	sortModels(out)
	return out
}

func fromCatwalk(m catwalk.Model, isDefault bool) Model {
	return Model{
		ID: m.ID, Name: m.Name, Default: isDefault,
		ContextWindow: m.ContextWindow, MaxTokens: m.DefaultMaxTokens, CanReason: m.CanReason,
		CostPer1MIn: m.CostPer1MIn, CostPer1MOut: m.CostPer1MOut,
	}
}

func sortModels(ms []Model) {
	sort.SliceStable(ms, func(i, j int) bool {
		if ms[i].Default != ms[j].Default {
			return ms[i].Default
		}
		return strings.ToLower(ms[i].Name) < strings.ToLower(ms[j].Name)
	})
}

// LookupModel finds a model in the catalogue. For openai-compatible endpoints
// nothing is known: zero Model, false.
func LookupModel(provider, id string) (Model, bool) {
	p, ok := loadCatalogue()[provider]
	if !ok {
		return Model{}, false
	}
	for _, m := range p.Models {
		if m.ID == id {
			return fromCatwalk(m, m.ID == p.DefaultLargeModelID), true
		}
	}
	return Model{}, false
}

// Price is what a model charges, in US dollars per million tokens.
type Price struct {
	In, Out, InCached, OutCached float64
}

// PriceOf returns a model's price from the catalogue; unknown models are free
// as far as ExeClaw can tell, and the UI shows their cost as 0.
func PriceOf(provider, id string) Price {
	p, ok := loadCatalogue()[provider]
	if !ok {
		return Price{}
	}
	for _, m := range p.Models {
		if m.ID == id {
			return Price{m.CostPer1MIn, m.CostPer1MOut, m.CostPer1MInCached, m.CostPer1MOutCached}
		}
	}
	return Price{}
}

// Cost is the price of one call. Catwalk's "in cached" rate is what writing
// the prompt cache costs and its "out cached" rate what reading it costs (for
// Anthropic: 1.25x and 0.1x the input rate), which is how they are billed here.
func (p Price) Cost(input, output, cacheWrite, cacheRead int64) float64 {
	const m = 1e6
	return float64(input)*p.In/m + float64(output)*p.Out/m +
		float64(cacheWrite)*p.InCached/m + float64(cacheRead)*p.OutCached/m
}
