package llm

import (
	"math"
	"strings"
	"testing"
)

func TestCatalogueModels(t *testing.T) {
	for _, provider := range []string{Anthropic, OpenAI, OpenRouter} {
		t.Run(provider, func(t *testing.T) {
			models := CatalogueModels(provider)
			if len(models) == 0 {
				t.Fatal("no models in the embedded catalogue")
			}
			defaults := 0
			for _, m := range models {
				if m.Default {
					defaults++
				}
				if m.ID == "" || m.Name == "" {
					t.Errorf("model without id or name: %+v", m)
				}
			}
			if defaults != 1 {
				t.Errorf("%d default models, want exactly 1", defaults)
			}
			if !models[0].Default {
				t.Errorf("first model %q is not the default", models[0].ID)
			}
			for i := 2; i < len(models); i++ {
				if strings.ToLower(models[i-1].Name) > strings.ToLower(models[i].Name) {
					t.Errorf("after the default, models are not sorted by name: %q before %q", models[i-1].Name, models[i].Name)
					break
				}
			}
			// The default is a model one can look up, and the lookup agrees.
			m, ok := LookupModel(provider, models[0].ID)
			if !ok || m != models[0] {
				t.Errorf("LookupModel(%q) = %+v, %v; want %+v", models[0].ID, m, ok, models[0])
			}
			// Callers may change what they get without changing the catalogue.
			models[0].Name = "changed"
			if again := CatalogueModels(provider); again[0].Name == "changed" {
				t.Error("CatalogueModels hands out shared state")
			}
		})
	}
	for _, provider := range []string{OpenAICompatible, "nope", ""} {
		if models := CatalogueModels(provider); len(models) != 0 {
			t.Errorf("CatalogueModels(%q) = %d models, want none", provider, len(models))
		}
	}
}

func TestLookupModel(t *testing.T) {
	m, ok := LookupModel(Anthropic, "claude-sonnet-4-20250514")
	if !ok {
		t.Fatal("claude-sonnet-4-20250514 is not in the anthropic catalogue")
	}
	if m.Name == "" || m.ContextWindow < 100_000 || m.MaxTokens <= 0 || m.CostPer1MIn != 3 || m.CostPer1MOut != 15 {
		t.Errorf("claude-sonnet-4-20250514 = %+v", m)
	}
	if _, ok := LookupModel(Anthropic, "gpt-4o"); ok {
		t.Error("an OpenAI model was found in the anthropic catalogue")
	}
	if _, ok := LookupModel(OpenAI, "no-such-model"); ok {
		t.Error("an unknown model was found")
	}
	if m, ok := LookupModel(OpenAICompatible, "llama3"); ok || m != (Model{}) {
		t.Errorf("openai-compatible lookup = %+v, %v; nothing is known about such endpoints", m, ok)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// Catwalk's CostPer1MInCached is the cache-write price and CostPer1MOutCached
// the cache-read price: for Anthropic 1.25x and 0.1x the input price.
func TestPriceOfFollowsCatwalkCacheSemantics(t *testing.T) {
	p := PriceOf(Anthropic, "claude-sonnet-4-20250514")
	if want := (Price{In: 3, Out: 15, InCached: 3.75, OutCached: 0.3}); p != want {
		t.Fatalf("PriceOf(claude-sonnet-4) = %+v, want %+v", p, want)
	}
	for _, m := range CatalogueModels(Anthropic) {
		p := PriceOf(Anthropic, m.ID)
		if p.In <= 0 || p.Out <= 0 {
			t.Errorf("%s has no price: %+v", m.ID, p)
			continue
		}
		if !near(p.InCached, 1.25*p.In) || !near(p.OutCached, 0.1*p.In) {
			t.Errorf("%s: cache prices %+v are not write 1.25x / read 0.1x of input", m.ID, p)
		}
	}
	if p := PriceOf(Anthropic, "no-such-model"); p != (Price{}) {
		t.Errorf("unknown model price = %+v, want zero", p)
	}
	if p := PriceOf(OpenAICompatible, "llama3"); p != (Price{}) {
		t.Errorf("openai-compatible price = %+v, want zero", p)
	}
}

func TestPriceCost(t *testing.T) {
	p := Price{In: 3, Out: 15, InCached: 3.75, OutCached: 0.3}
	cases := []struct {
		name                                 string
		input, output, cacheWrite, cacheRead int64
		want                                 float64
	}{
		{"nothing", 0, 0, 0, 0, 0},
		{"a million in", 1_000_000, 0, 0, 0, 3},
		{"a million out", 0, 1_000_000, 0, 0, 15},
		{"cache write", 0, 0, 1_000_000, 0, 3.75},
		{"cache read", 0, 0, 0, 1_000_000, 0.3},
		// 1200*3 + 350*15 + 2000*3.75 + 10000*0.3 = 3600+5250+7500+3000 = 19350 per million
		{"a typical turn", 1200, 350, 2000, 10_000, 0.01935},
	}
	for _, c := range cases {
		if got := p.Cost(c.input, c.output, c.cacheWrite, c.cacheRead); !near(got, c.want) {
			t.Errorf("%s: Cost = %v, want %v", c.name, got, c.want)
		}
	}
	if got := (Price{}).Cost(1e6, 1e6, 1e6, 1e6); got != 0 {
		t.Errorf("free model costs %v", got)
	}
}
