package agent_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/agent"
)

func newAgent(context.Context, agent.Settings) (agent.Agent, error) { return nil, nil }

var (
	host = agent.Kind{Name: "host", New: newAgent}
	inVM = agent.Kind{Name: "cli", Image: "cli", Providers: []string{"anthropic"},
		Refuses: []string{agent.SettingTemperature, agent.SettingThinking}, New: newAgent}
	other = agent.Kind{Name: "other", Image: "other", New: newAgent}
)

func TestRegistryRejectsBadKinds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		kinds []agent.Kind
		want  string
	}{
		{"none", nil, "no kinds"},
		{"unnamed", []agent.Kind{{New: newAgent}}, "no name"},
		{"no constructor", []agent.Kind{{Name: "x"}}, "no constructor"},
		{"twice", []agent.Kind{host, host}, `"host" twice`},
		{"unknown setting", []agent.Kind{{Name: "x", New: newAgent, Refuses: []string{"colour"}}}, `unknown setting "colour"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := agent.NewRegistry(tc.kinds...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestRegistryLookupOnlyOffered(t *testing.T) {
	r, err := agent.NewRegistry(host, inVM, other)
	if err != nil {
		t.Fatal(err)
	}
	if r.Default().Name != "host" || !slices.Equal(r.Names(), []string{"host", "cli", "other"}) {
		t.Fatalf("default %q, names %q", r.Default().Name, r.Names())
	}
	if k, ok := r.Lookup("cli"); !ok || k.Image != "cli" {
		t.Fatalf("lookup cli: %+v %v", k, ok)
	}
	if _, ok := r.Lookup("nope"); ok {
		t.Fatal("found a kind that is not there")
	}

	only, err := r.Only([]string{"other", "host"})
	if err != nil || !slices.Equal(only.Names(), []string{"host", "other"}) {
		t.Fatalf("only: %v %v (the registry's order, default first)", only, err)
	}
	if _, err := r.Only([]string{"host", "nope"}); err == nil || !strings.Contains(err.Error(), `unknown agent "nope"`) {
		t.Fatalf("only with an unknown name: %v", err)
	}

	carries := func(names ...string) func(string) bool {
		return func(n string) bool { return slices.Contains(names, n) }
	}
	for _, tc := range []struct {
		name  string
		vm    bool
		image func(string) bool
		want  []string
	}{
		{"process driver", false, carries("cli", "other"), []string{"host"}},
		{"VM without agents", true, carries(), []string{"host"}},
		{"VM with one", true, carries("other"), []string{"host", "other"}},
		{"VM with both", true, carries("cli", "other"), []string{"host", "cli", "other"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.Offered(tc.vm, tc.image)
			if err != nil || !slices.Equal(got.Names(), tc.want) {
				t.Fatalf("offered %v (%v), want %q", got.Names(), err, tc.want)
			}
		})
	}
	onlyVM, _ := agent.NewRegistry(inVM)
	if _, err := onlyVM.Offered(false, nil); err == nil {
		t.Fatal("a registry with nothing that runs here offered something")
	}
}

func TestKindCheck(t *testing.T) {
	for _, tc := range []struct {
		name     string
		kind     agent.Kind
		provider string
		set      []string
		want     string // "" for accepted
	}{
		{"any provider", host, "openai", []string{agent.SettingTemperature, agent.SettingThinking}, ""},
		{"its provider", inVM, "anthropic", []string{agent.SettingMaxTokens}, ""},
		{"wrong provider", inVM, "openai", nil, "cli cannot use provider openai: use provider anthropic"},
		{"refused setting", inVM, "anthropic", []string{agent.SettingThinking}, "cli chooses its own temperature and thinking: leave them unset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.kind.Check(tc.provider, tc.set)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
