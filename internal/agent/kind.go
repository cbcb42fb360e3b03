package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/execlaw/execlaw/internal/llm"
)

// Settings a session can ask for that some agents cannot honour, named as in
// the NewSession request.
const (
	SettingTemperature = "temperature"
	SettingMaxTokens   = "maxTokens"
	SettingThinking    = "thinking"
)

// settingWords is how an error message names a setting.
var settingWords = map[string]string{
	SettingTemperature: "temperature",
	SettingMaxTokens:   "max tokens",
	SettingThinking:    "thinking",
}

// Kind describes one kind of agent: everything the session manager, the API,
// the UI and the image build need to know about it, in one place.
type Kind struct {
	// Name is what a session asks for ("builtin", "claude-code"...).
	Name string `json:"name"`
	// Label and Hint are what the new-session form shows.
	Label string `json:"label"`
	Hint  string `json:"hint"`
	// Image names the agent CLI the guest image must carry (as `execlaw
	// image build --agents` installs it); empty for an agent that runs on
	// the host. Such an agent runs inside the sandbox, so it is offered only
	// with VM drivers whose image carries it.
	Image string `json:"image,omitempty"`
	// Providers the agent can talk to; empty means every provider.
	Providers []string `json:"providers,omitempty"`
	// Refuses lists the settings (Setting*) the agent cannot honour: a
	// request that sets one is refused rather than silently ignored.
	Refuses []string `json:"refuses,omitempty"`
	// New builds the agent of one session.
	New func(ctx context.Context, s Settings) (Agent, error) `json:"-"`
}

// Settings are what a session gives the agent it runs. Nothing here is
// stored in plain text: the key lives in LLM.APIKey, a redacting Secret.
type Settings struct {
	LLM            llm.Config
	SystemPrompt   string
	Temperature    *float64
	MaxTokens      *int64
	ThinkingBudget int64 // 0: no extended thinking
	// MaxSteps bounds model calls per turn and MaxRetries the retries of a
	// model call that failed before streaming (the built-in loop).
	MaxSteps   int
	MaxRetries int
	// History is the conversation stored so far, for an agent that
	// continues one.
	History []json.RawMessage
	// Resume is what a Resumable agent of this kind said of itself when
	// its session was paused; empty for a new session.
	Resume json.RawMessage
	Logger *slog.Logger
}

// Resumable is an agent with state of its own to carry across a pause (the
// built-in agent's is the stored history): an agent CLI's conversation id,
// say. ResumeState is asked after Close, and handed back in Settings.Resume
// when the session resumes; it must hold nothing secret.
type Resumable interface {
	ResumeState() json.RawMessage
}

// Check says whether a session with this provider that sets the given
// settings (Setting* names) can run this kind, in words for the user.
func (k Kind) Check(provider string, set []string) error {
	if len(k.Providers) > 0 && !slices.Contains(k.Providers, provider) {
		return fmt.Errorf("%s cannot use provider %s: use provider %s", k.Name, provider, strings.Join(k.Providers, " or "))
	}
	var refused []string
	for _, s := range k.Refuses {
		if slices.Contains(set, s) {
			refused = append(refused, s)
		}
	}
	if len(refused) == 0 {
		return nil
	}
	var words []string
	for _, s := range k.Refuses { // every one it refuses, so the user learns them at once
		words = append(words, settingWords[s])
	}
	return fmt.Errorf("%s chooses its own %s: leave them unset", k.Name, joinWords(words))
}

// joinWords writes a, b and c.
func joinWords(w []string) string {
	if len(w) < 2 {
		return strings.Join(w, "")
	}
	return strings.Join(w[:len(w)-1], ", ") + " and " + w[len(w)-1]
}

// Registry is the kinds of agent a server offers, the first being the
// default.
type Registry struct {
	kinds []Kind
}

// NewRegistry collects kinds; names must be unique and every kind must be
// constructible.
func NewRegistry(kinds ...Kind) (*Registry, error) {
	if len(kinds) == 0 {
		return nil, errors.New("agent registry: no kinds")
	}
	seen := map[string]bool{}
	for _, k := range kinds {
		switch {
		case k.Name == "" || k.New == nil:
			return nil, fmt.Errorf("agent registry: kind %q has no name or no constructor", k.Name)
		case seen[k.Name]:
			return nil, fmt.Errorf("agent registry: kind %q twice", k.Name)
		}
		for _, s := range k.Refuses {
			if _, ok := settingWords[s]; !ok {
				return nil, fmt.Errorf("agent registry: kind %q refuses unknown setting %q", k.Name, s)
			}
		}
		seen[k.Name] = true
	}
	return &Registry{kinds: slices.Clone(kinds)}, nil
}

// Kinds lists the kinds, the default first.
func (r *Registry) Kinds() []Kind { return slices.Clone(r.kinds) }

// Names lists the kinds' names, the default first.
func (r *Registry) Names() []string {
	names := make([]string, len(r.kinds))
	for i, k := range r.kinds {
		names[i] = k.Name
	}
	return names
}

// Default is the kind a session gets when it asks for none.
func (r *Registry) Default() Kind { return r.kinds[0] }

// Lookup finds a kind by name.
func (r *Registry) Lookup(name string) (Kind, bool) {
	i := slices.IndexFunc(r.kinds, func(k Kind) bool { return k.Name == name })
	if i < 0 {
		return Kind{}, false
	}
	return r.kinds[i], true
}

// Only keeps the named kinds, in the registry's order; naming one it does
// not hold is an error. The default stays first when it is kept.
func (r *Registry) Only(names []string) (*Registry, error) {
	for _, n := range names {
		if _, ok := r.Lookup(n); !ok {
			return nil, fmt.Errorf("unknown agent %q (known: %s)", n, strings.Join(r.Names(), ", "))
		}
	}
	return r.filter(func(k Kind) bool { return slices.Contains(names, k.Name) })
}

// Offered keeps the kinds a sandbox can run: those that run on the host, and,
// where sessions run a guest image (a VM or a pod) that carries them
// (imageHas), the in-sandbox ones.
func (r *Registry) Offered(guestImage bool, imageHas func(name string) bool) (*Registry, error) {
	return r.filter(func(k Kind) bool { return k.Image == "" || (guestImage && imageHas != nil && imageHas(k.Image)) })
}

func (r *Registry) filter(keep func(Kind) bool) (*Registry, error) {
	var kinds []Kind
	for _, k := range r.kinds {
		if keep(k) {
			kinds = append(kinds, k)
		}
	}
	if len(kinds) == 0 {
		return nil, errors.New("no kind of agent can run here")
	}
	return &Registry{kinds: kinds}, nil
}
