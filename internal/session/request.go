package session

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/store"
	"github.com/execlaw/execlaw/internal/workspace"
)

// CreateRequest is the body of POST /api/sessions (NewSession in the contract).
type CreateRequest struct {
	Provider       string   `json:"provider"`
	APIKey         string   `json:"apiKey"`
	Model          string   `json:"model"`
	BaseURL        string   `json:"baseUrl,omitempty"`
	Name           string   `json:"name,omitempty"`
	SystemPrompt   string   `json:"systemPrompt,omitempty"`
	Temperature    *float64 `json:"temperature,omitempty"`
	MaxTokens      *int64   `json:"maxTokens,omitempty"`
	IdleTimeoutMin *int     `json:"idleTimeoutMin,omitempty"`
	Agent          string   `json:"agent,omitempty"`
	Network        string   `json:"network,omitempty"`
	VCPUs          *int     `json:"vcpus,omitempty"`
	MemoryMiB      *int     `json:"memoryMiB,omitempty"`
	// Thinking turns extended thinking on or off; by default it is on for
	// Anthropic models the catalogue marks as reasoning models.
	Thinking *bool `json:"thinking,omitempty"`
	// EmailOnIdle mails the transcript to the owner when the idle reaper
	// ends the session (an extension of NewSession).
	EmailOnIdle bool `json:"emailOnIdle,omitempty"`
	// EmailTo is where that mail goes. It is not read from the request: the
	// API fills it in from the signed-in user and the server's mail policy.
	EmailTo string `json:"-"`
	// Repo is a git repository cloned into the workspace before the first
	// turn; ArchiveUpload makes the session wait for an archive (PUT
	// /api/sessions/{id}/archive) to unpack there (extensions; workspace.go).
	Repo          *workspace.Repo `json:"repo,omitempty"`
	ArchiveUpload bool            `json:"archiveUpload,omitempty"`
}

// Limits of a session's settings.
const (
	DefaultIdleTimeoutMin = 72 * 60
	MinIdleTimeoutMin     = 5
	MaxIdleTimeoutMin     = 7 * 24 * 60
	DefaultVCPUs          = 2
	MaxVCPUs              = 16
	DefaultMemoryMiB      = 1024
	MinMemoryMiB          = 256
	MaxMemoryMiB          = 64 << 10
	MaxNameLen            = 100
	MaxSystemPromptLen    = 64 << 10
	MaxMessageLen         = 256 << 10
	MaxAPIKeyLen          = 4096
	DefaultThinkingBudget = 4096
)

// settings are a session's choices that are kept with it. Nothing secret.
type settings struct {
	BaseURL        string   `json:"baseUrl,omitempty"`
	SystemPrompt   string   `json:"systemPrompt,omitempty"`
	Temperature    *float64 `json:"temperature,omitempty"`
	MaxTokens      *int64   `json:"maxTokens,omitempty"`
	Network        string   `json:"network"`
	VCPUs          int      `json:"vcpus"`
	MemoryMiB      int      `json:"memoryMiB"`
	ThinkingBudget int64    `json:"thinkingBudget,omitempty"`
	EmailOnIdle    bool     `json:"emailOnIdle,omitempty"`
	EmailTo        string   `json:"emailTo,omitempty"`
	// Repo (without its token) and ArchiveUpload: what the workspace
	// started from.
	Repo          *workspace.Repo `json:"repo,omitempty"`
	ArchiveUpload bool            `json:"archiveUpload,omitempty"`
}

// ValidationError is a request the client must fix.
type ValidationError struct{ msg string }

func (e *ValidationError) Error() string { return e.msg }

func invalid(format string, args ...any) error {
	return &ValidationError{msg: fmt.Sprintf(format, args...)}
}

// checked is a valid request: the record to store (without id, user or
// times), the settings kept with it, the kind of agent and the key.
type checked struct {
	rec  store.Session
	set  settings
	kind agent.Kind
	key  llm.Secret
}

// validate checks a request and fills in defaults.
// The base URL is checked against the outbound policy of client, the
// manager's LLMClient (llm.CheckBaseURL: resolved and checked now, for a
// clear refusal; the check when connecting is the one that holds).
func (r CreateRequest) validate(ctx context.Context, agents *agent.Registry, client *http.Client) (checked, error) {
	if !llm.ValidProvider(r.Provider) {
		return checked{}, invalid("provider must be one of %s", strings.Join(llm.Providers, ", "))
	}
	key := strings.TrimSpace(r.APIKey)
	if key == "" && r.Provider != llm.OpenAICompatible {
		return checked{}, invalid("apiKey is required for %s", r.Provider)
	}
	if err := checkAPIKey(key); err != nil {
		return checked{}, err
	}
	model := strings.TrimSpace(r.Model)
	if model == "" {
		if r.Provider == llm.OpenAICompatible {
			return checked{}, invalid("model is required for openai-compatible")
		}
		for _, m := range llm.CatalogueModels(r.Provider) {
			if m.Default {
				model = m.ID
			}
		}
		if model == "" {
			return checked{}, invalid("model is required")
		}
	}
	if len(model) > 256 || strings.ContainsFunc(model, unicode.IsControl) {
		return checked{}, invalid("model is not a valid model id")
	}
	if r.BaseURL != "" {
		if err := llm.CheckBaseURL(ctx, client, r.BaseURL); err != nil {
			return checked{}, invalid("%v", err)
		}
	} else if r.Provider == llm.OpenAICompatible {
		return checked{}, invalid("baseUrl is required for openai-compatible (for example http://localhost:11434/v1)")
	}
	name := strings.TrimSpace(r.Name)
	if name == "" {
		name = randomName()
	}
	if err := validateName(name); err != nil {
		return checked{}, err
	}
	if len(r.SystemPrompt) > MaxSystemPromptLen || !utf8.ValidString(r.SystemPrompt) {
		return checked{}, invalid("systemPrompt must be valid UTF-8 of at most %d bytes", MaxSystemPromptLen)
	}
	if t := r.Temperature; t != nil && (*t < 0 || *t > 2) {
		return checked{}, invalid("temperature must be between 0 and 2")
	}
	if mt := r.MaxTokens; mt != nil && (*mt < 1 || *mt > 1_000_000) {
		return checked{}, invalid("maxTokens must be between 1 and 1000000")
	}
	idle := DefaultIdleTimeoutMin
	if r.IdleTimeoutMin != nil {
		idle = *r.IdleTimeoutMin
		if idle < MinIdleTimeoutMin || idle > MaxIdleTimeoutMin {
			return checked{}, invalid("idleTimeoutMin must be between %d and %d", MinIdleTimeoutMin, MaxIdleTimeoutMin)
		}
	}
	kind := agents.Default()
	if r.Agent != "" {
		var ok bool
		if kind, ok = agents.Lookup(r.Agent); !ok {
			shown := r.Agent
			if len(shown) > 32 || strings.ContainsFunc(shown, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
				shown = "given"
			} else {
				shown = strconv.Quote(shown)
			}
			return checked{}, invalid("agent %s is not available; this server provides: %s", shown, strings.Join(agents.Names(), ", "))
		}
	}
	var given []string // the settings this request makes, for agents that cannot honour some
	if r.Temperature != nil {
		given = append(given, agent.SettingTemperature)
	}
	if r.MaxTokens != nil {
		given = append(given, agent.SettingMaxTokens)
	}
	if r.Thinking != nil {
		given = append(given, agent.SettingThinking)
	}
	if err := kind.Check(r.Provider, given); err != nil {
		return checked{}, invalid("%v", err)
	}
	network := r.Network
	if network == "" {
		network = "full"
	}
	if network != "full" && network != "none" {
		return checked{}, invalid(`network must be "full" or "none"`)
	}
	vcpus := DefaultVCPUs
	if r.VCPUs != nil {
		vcpus = *r.VCPUs
		if vcpus < 1 || vcpus > MaxVCPUs {
			return checked{}, invalid("vcpus must be between 1 and %d", MaxVCPUs)
		}
	}
	mem := DefaultMemoryMiB
	if r.MemoryMiB != nil {
		mem = *r.MemoryMiB
		if mem < MinMemoryMiB || mem > MaxMemoryMiB {
			return checked{}, invalid("memoryMiB must be between %d and %d", MinMemoryMiB, MaxMemoryMiB)
		}
	}
	var budget int64
	thinking := r.Provider == llm.Anthropic
	if m, ok := llm.LookupModel(r.Provider, model); ok {
		thinking = thinking && m.CanReason
	} else {
		thinking = false
	}
	if r.Thinking != nil {
		thinking = *r.Thinking
	}
	if thinking && r.Provider == llm.Anthropic {
		budget = DefaultThinkingBudget
	}

	if r.EmailOnIdle && r.EmailTo == "" {
		return checked{}, invalid("emailOnIdle is not available: this server cannot e-mail you (no mail transport is configured, or your address is unknown and the operator allowed none)")
	}
	set := settings{
		BaseURL: r.BaseURL, SystemPrompt: r.SystemPrompt, Temperature: r.Temperature, MaxTokens: r.MaxTokens,
		Network: network, VCPUs: vcpus, MemoryMiB: mem, ThinkingBudget: budget,
		EmailOnIdle: r.EmailOnIdle,
	}
	if r.EmailOnIdle {
		set.EmailTo = r.EmailTo
	}
	raw, err := json.Marshal(set)
	if err != nil {
		return checked{}, err
	}
	rec := store.Session{
		Name: name, Provider: r.Provider, Model: model, Agent: kind.Name,
		Config: raw, IdleTimeoutMin: idle,
	}
	return checked{rec: rec, set: set, kind: kind, key: llm.NewSecret(key)}, nil
}

// validateName checks a session name, already trimmed: creating and renaming
// a session accept the same names. Valid UTF-8, at most
// MaxNameLen characters, and none that is invisible or rearranges what is
// shown: control characters (category Cc), format characters (Cf: bidi
// overrides and isolates such as U+202E and U+2066, zero-width spaces and
// joiners, the byte order mark...) and line or paragraph separators.
func validateName(name string) error {
	if utf8.RuneCountInString(name) > MaxNameLen || !utf8.ValidString(name) {
		return invalid("name must be at most %d printable characters", MaxNameLen)
	}
	if i := strings.IndexFunc(name, hiddenInName); i >= 0 {
		r, _ := utf8.DecodeRuneInString(name[i:])
		return invalid("name must be printable: it contains %U, a control or invisible formatting character (such as a bidi override or a zero-width space)", r)
	}
	return nil
}

func hiddenInName(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
}

func parseSettings(raw json.RawMessage) settings {
	var s settings
	_ = json.Unmarshal(raw, &s)
	return s
}

// LimitError is a request refused because the host is full.
type LimitError struct{ msg string }

func (e *LimitError) Error() string { return e.msg }

// Errors a session operation can end with.
var (
	ErrNotFound = errors.New("session not found")
	ErrBusy     = errors.New("a turn is already running; wait for it or cancel it")
	ErrEnded    = errors.New("the session has ended")
	ErrClosing  = errors.New("the server is shutting down")
)

var (
	nameAdjectives = []string{"amber", "brisk", "calm", "deft", "eager", "fleet", "gentle", "hardy", "keen", "lucid", "mellow", "nimble", "plucky", "quiet", "rapid", "sunny", "tidy", "vivid", "witty", "zesty"}
	nameNouns      = []string{"otter", "falcon", "badger", "heron", "lynx", "marten", "osprey", "panda", "quokka", "raven", "stoat", "tapir", "walrus", "yak", "finch", "gecko", "ibis", "koala", "lemur", "newt"}
)

// randomName gives a session a friendly default name.
func randomName() string {
	pick := func(list []string) string {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(list))))
		return list[n.Int64()]
	}
	return pick(nameAdjectives) + "-" + pick(nameNouns)
}

// View is a session as the API shows it (Session in the contract).
type View struct {
	ID             string      `json:"id"`
	Name           string      `json:"name"`
	State          string      `json:"state"`
	Provider       string      `json:"provider"`
	Model          string      `json:"model"`
	Agent          string      `json:"agent"`
	Sandbox        string      `json:"sandbox"`
	Isolated       bool        `json:"isolated"`
	CreatedAt      time.Time   `json:"createdAt"`
	LastActivity   time.Time   `json:"lastActivity"`
	Uptime         float64     `json:"uptime"`
	IdleTimeoutMin int         `json:"idleTimeoutMin"`
	Usage          store.Usage `json:"usage"`
	Error          string      `json:"error,omitempty"`
	// Beyond the contract: what the UI needs to show and resume a session.
	Network     string     `json:"network"`
	BaseURL     string     `json:"baseUrl,omitempty"`
	EndedAt     *time.Time `json:"endedAt,omitempty"`
	LastEventID int64      `json:"lastEventId"`
	EmailOnIdle bool       `json:"emailOnIdle,omitempty"`
	// A paused session: how it will resume (snapshot or cold), and whether
	// it needs its API key given again to.
	ResumeKind string `json:"resumeKind,omitempty"`
	KeyNeeded  bool   `json:"keyNeeded,omitempty"`
	// What the workspace started from: a repository (no token), an archive.
	Repo          *workspace.Repo `json:"repo,omitempty"`
	ArchiveUpload bool            `json:"archiveUpload,omitempty"`
}

func viewOf(rec store.Session, lastEventID int64, now time.Time) View {
	set := parseSettings(rec.Config)
	v := View{
		ID: rec.ID, Name: rec.Name, State: rec.State, Provider: rec.Provider, Model: rec.Model,
		Agent: rec.Agent, Sandbox: rec.Sandbox, Isolated: rec.Isolated,
		CreatedAt: rec.CreatedAt, LastActivity: rec.LastActivity, IdleTimeoutMin: rec.IdleTimeoutMin,
		Usage: rec.Usage, Error: rec.Error, Network: set.Network, BaseURL: set.BaseURL, LastEventID: lastEventID,
		EmailOnIdle: set.EmailOnIdle, Repo: set.Repo, ArchiveUpload: set.ArchiveUpload,
	}
	if rec.State == StatePaused {
		v.ResumeKind = parseResume(rec.Resume).Kind
	}
	end := now
	if !rec.EndedAt.IsZero() {
		t := rec.EndedAt
		v.EndedAt = &t
		end = t
	}
	v.Uptime = end.Sub(rec.CreatedAt).Round(time.Second).Seconds()
	return v
}

// checkAPIKey checks a key as given, for a new session or a resume.
func checkAPIKey(key string) error {
	if len(key) > MaxAPIKeyLen || strings.ContainsFunc(key, unicode.IsControl) {
		return invalid("apiKey is not a valid key")
	}
	return nil
}

// checkMessage checks a user message before anything is done for it.
func checkMessage(text string) error {
	if strings.TrimSpace(text) == "" {
		return invalid("message is empty")
	}
	if len(text) > MaxMessageLen || !utf8.ValidString(text) {
		return invalid("message must be valid UTF-8 of at most %d bytes", MaxMessageLen)
	}
	return nil
}
