package nullclaw

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
)

// This file renders a session's nullclaw config. Config, RenderConfig,
// TokenHash and ProxyProviderName are exported for the stand-in's tests
// (nullclawtest/standin), which read the rendered file as nullclaw would.

// ProxyProviderName is the models.providers entry the OpenAI-compatible
// proxy gets. nullclaw treats a provider name it does not know, that has a
// base_url, as an OpenAI-compatible endpoint (ProviderHolder.fromConfig in
// src/providers/factory.zig); its own "openai" entry ignores base_url.
const ProxyProviderName = "execlaw"

// Config is what a session's nullclaw needs. It renders to nullclaw's
// config.json (RenderConfig) and to the files, arguments and environment of
// its gateway process (launch).
type Config struct {
	// Provider is ExeClaw's provider name: "anthropic" speaks the Anthropic
	// Messages API to BaseURL; "openai-compatible", "openai" and "openrouter"
	// speak OpenAI chat completions to it.
	Provider string
	// BaseURL is the credential proxy, e.g. http://127.0.0.1:8090. nullclaw
	// appends "/v1/messages" for anthropic (a trailing /v1 here is dropped)
	// and "/chat/completions" for the OpenAI-compatible ones (so give
	// ".../v1" there).
	BaseURL string
	// APIKey is the proxy's token, never the user's key. nullclaw sends it as
	// x-api-key (anthropic; a key starting "sk-ant-oat01-" is sent as a
	// Bearer token instead) or as Authorization: Bearer.
	APIKey string
	// Model is the provider's model id; it may contain slashes.
	Model string
	// SystemPrompt has no place in config.json: nullclaw builds its system
	// prompt from workspace files (AGENTS.md, SOUL.md, TOOLS.md, IDENTITY.md,
	// USER.md, ...). launch writes it to IDENTITY.md in the workspace unless
	// that file exists.
	SystemPrompt string
	// Workspace is the absolute directory the agent works in (environment
	// NULLCLAW_WORKSPACE; config.json has no key for it).
	Workspace string
	// GatewayPort is where the gateway listens, on 127.0.0.1.
	GatewayPort int
	// GatewayToken is the bearer token for /a2a. config.json keeps only its
	// SHA-256 (nullclaw's gateway.paired_tokens accepts 64-hex hashes).
	GatewayToken string
	// Temperature, when set, is default_temperature (0 to 2).
	Temperature *float64
	// MaxTokens, when positive, caps the model's output (max_tokens).
	MaxTokens int
}

// Session-wide settings of the rendered config.
const (
	// sessionIdleSecs keeps nullclaw's conversation for as long as ExeClaw
	// keeps an idle session (10080 minutes at most); nullclaw's default
	// evicts after 30 minutes.
	sessionIdleSecs = 7 * 24 * 3600
	// gatewayBodyBytes raises the request body limit on versions that have
	// gateway.max_body_size_bytes; older ones stay at 64 KiB, which is what
	// a2a.Client.Limits.MaxRequestBytes assumes by default.
	gatewayBodyBytes = 1 << 20
)

type fileConfig struct {
	DefaultTemperature *float64       `json:"default_temperature,omitempty"`
	MaxTokens          int            `json:"max_tokens,omitempty"`
	Models             modelsSection  `json:"models"`
	Agents             agentsSection  `json:"agents"`
	Agent              agentSection   `json:"agent"`
	Gateway            gatewaySection `json:"gateway"`
	A2A                a2aSection     `json:"a2a"`
	Autonomy           autonomy       `json:"autonomy"`
	Memory             memorySection  `json:"memory"`
	Secrets            secrets        `json:"secrets"`
	Security           security       `json:"security"`
}

type modelsSection struct {
	Providers map[string]providerEntry `json:"providers"`
}

type providerEntry struct {
	APIKey  string `json:"api_key"`
	BaseURL string `json:"base_url"`
}

type agentsSection struct {
	Defaults struct {
		Model struct {
			Primary string `json:"primary"`
		} `json:"model"`
	} `json:"defaults"`
}

type agentSection struct {
	SessionIdleTimeoutSecs int `json:"session_idle_timeout_secs"`
}

type gatewaySection struct {
	Host                      string   `json:"host"`
	Port                      int      `json:"port"`
	RequirePairing            bool     `json:"require_pairing"`
	AllowPublicBind           bool     `json:"allow_public_bind"`
	PairedTokens              []string `json:"paired_tokens"`
	WebhookRateLimitPerMinute int      `json:"webhook_rate_limit_per_minute"`
	MaxBodySizeBytes          int      `json:"max_body_size_bytes"`
}

type a2aSection struct {
	Enabled     bool   `json:"enabled"`
	Name        string `json:"name"`
	Description string `json:"description"`
}

type autonomy struct {
	Level                        string   `json:"level"`
	WorkspaceOnly                bool     `json:"workspace_only"`
	MaxActionsPerHour            int      `json:"max_actions_per_hour"`
	AllowedCommands              []string `json:"allowed_commands"`
	AllowedPaths                 []string `json:"allowed_paths"`
	BlockHighRiskCommands        bool     `json:"block_high_risk_commands"`
	BlockMediumRiskCommands      bool     `json:"block_medium_risk_commands"`
	RequireApprovalForMediumRisk bool     `json:"require_approval_for_medium_risk"`
	AllowRawURLChars             bool     `json:"allow_raw_url_chars"`
}

type memorySection struct {
	Backend  string `json:"backend"`
	AutoSave bool   `json:"auto_save"`
}

type secrets struct {
	Encrypt bool `json:"encrypt"`
}

type security struct {
	Sandbox struct {
		Backend string `json:"backend"`
	} `json:"sandbox"`
	Audit struct {
		Enabled bool `json:"enabled"`
	} `json:"audit"`
}

// TokenHash is the form of a gateway token config.json keeps: lowercase hex
// SHA-256, which nullclaw's PairingGuard recognises as already hashed
// (src/security/pairing.zig).
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func (c Config) providerEntry() (name, baseURL string, err error) {
	u, err := url.Parse(strings.TrimSpace(c.BaseURL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", "", fmt.Errorf("nullclaw config: base URL %q is not an http(s) URL", c.BaseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Opaque != "" {
		return "", "", fmt.Errorf("nullclaw config: base URL %q has a query, fragment or user", c.BaseURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	switch c.Provider {
	case "anthropic":
		// AnthropicProvider posts to base_url + "/v1/messages".
		u.Path = strings.TrimSuffix(u.Path, "/v1")
		return "anthropic", u.String(), nil
	case "openai-compatible", "openai", "openrouter":
		// OpenAiCompatibleProvider posts to base_url + "/chat/completions".
		return ProxyProviderName, u.String(), nil
	}
	return "", "", fmt.Errorf("nullclaw config: provider %q is not anthropic or OpenAI-compatible", c.Provider)
}

func plainToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return false
		}
	}
	return s != ""
}

func (c Config) validate() error {
	var errs []error
	if !plainToken(c.Model) || len(c.Model) > 256 {
		errs = append(errs, fmt.Errorf("model %q is empty, too long or has spaces or control characters", c.Model))
	}
	if !plainToken(c.APIKey) || len(c.APIKey) > 4096 {
		errs = append(errs, errors.New("API key is empty or has spaces or control characters"))
	}
	if !plainToken(c.GatewayToken) || len(c.GatewayToken) < 16 || len(c.GatewayToken) > 512 {
		errs = append(errs, errors.New("gateway token must be 16 to 512 printable characters without spaces"))
	}
	if c.GatewayPort < 1 || c.GatewayPort > 65535 {
		errs = append(errs, fmt.Errorf("gateway port %d is out of range", c.GatewayPort))
	}
	if c.Workspace == "" || !path.IsAbs(c.Workspace) || strings.ContainsAny(c.Workspace, "\x00\n\r") {
		errs = append(errs, fmt.Errorf("workspace %q is not an absolute path", c.Workspace))
	}
	if c.Temperature != nil && (*c.Temperature < 0 || *c.Temperature > 2) {
		errs = append(errs, fmt.Errorf("temperature %v is not between 0 and 2", *c.Temperature))
	}
	if c.MaxTokens < 0 {
		errs = append(errs, fmt.Errorf("max tokens %d is negative", c.MaxTokens))
	}
	if len(c.SystemPrompt) > 20_000 {
		// nullclaw reads at most 20,000 characters of one workspace file.
		errs = append(errs, fmt.Errorf("system prompt of %d bytes exceeds nullclaw's 20000", len(c.SystemPrompt)))
	}
	if _, _, err := c.providerEntry(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("nullclaw config: %w", err)
	}
	return nil
}

// RenderConfig renders nullclaw's config.json for a session:
//
//	models.providers.<p>            {api_key: APIKey, base_url: BaseURL}, p = "anthropic" or ProxyProviderName
//	agents.defaults.model.primary   "<p>/<Model>" (nullclaw splits at the first "/")
//	default_temperature, max_tokens Temperature, MaxTokens when set
//	gateway                         127.0.0.1:GatewayPort, pairing required, paired_tokens [sha256(GatewayToken)]
//	a2a.enabled                     true: /a2a and the agent card
//	agent.session_idle_timeout_secs a week, so a conversation outlives idle time
//	autonomy                        full, no approvals (no one could give them over A2A): the VM is the sandbox
//	security.sandbox.backend        none, audit off; memory markdown without auto-save; secrets not encrypted
//
// Workspace and SystemPrompt are not config keys; see launch.
func RenderConfig(c Config) ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	name, base, _ := c.providerEntry()
	f := fileConfig{
		DefaultTemperature: c.Temperature,
		MaxTokens:          c.MaxTokens,
		Models:             modelsSection{Providers: map[string]providerEntry{name: {APIKey: c.APIKey, BaseURL: base}}},
		Agent:              agentSection{SessionIdleTimeoutSecs: sessionIdleSecs},
		Gateway: gatewaySection{
			Host:                      "127.0.0.1",
			Port:                      c.GatewayPort,
			RequirePairing:            true,
			PairedTokens:              []string{TokenHash(c.GatewayToken)},
			WebhookRateLimitPerMinute: 1000,
			MaxBodySizeBytes:          gatewayBodyBytes,
		},
		A2A: a2aSection{Enabled: true, Name: "ExeClaw nullclaw", Description: "nullclaw agent of an ExeClaw session"},
		Autonomy: autonomy{
			Level:             "full",
			MaxActionsPerHour: 1_000_000,
			AllowedCommands:   []string{"*"},
			AllowedPaths:      []string{"*"},
			AllowRawURLChars:  true,
		},
		Memory: memorySection{Backend: "markdown"},
	}
	f.Agents.Defaults.Model.Primary = name + "/" + c.Model
	f.Security.Sandbox.Backend = "none"

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(f); err != nil {
		return nil, fmt.Errorf("nullclaw config: %w", err)
	}
	if buf.Len() > 64<<10 {
		// nullclaw reads config.json with a 64 KiB cap (Config.load).
		return nil, fmt.Errorf("nullclaw config: %d bytes exceeds nullclaw's 64 KiB", buf.Len())
	}
	return buf.Bytes(), nil
}

// guestFile is a file launch wants in the guest before nullclaw starts.
type guestFile struct {
	Path string
	Data []byte
	Perm os.FileMode
	// KeepExisting: do not replace a file that is already there.
	KeepExisting bool
}

// gatewayLaunch is how to start a session's nullclaw gateway.
type gatewayLaunch struct {
	Argv []string // nullclaw gateway --host 127.0.0.1 --port N
	Env  []string // to add to the process environment
	// Files to write first: config.json, and IDENTITY.md with the system
	// prompt when there is one.
	Files []guestFile
	// BaseURL is what a2a.NewClient takes to reach the gateway.
	BaseURL string
}

// launch describes the gateway process for binary (the nullclaw executable)
// with its state under stateDir. config.json goes to stateDir/.nullclaw/,
// found both through HOME (older releases: ~/.nullclaw/config.json) and
// NULLCLAW_HOME (newer: $NULLCLAW_HOME/config.json).
func (c Config) launch(binary, stateDir string) (gatewayLaunch, error) {
	cfg, err := RenderConfig(c)
	if err != nil {
		return gatewayLaunch{}, err
	}
	if binary == "" || !path.IsAbs(stateDir) {
		return gatewayLaunch{}, fmt.Errorf("nullclaw launch: binary %q or state dir %q is not usable", binary, stateDir)
	}
	home := path.Join(stateDir, ".nullclaw")
	port := strconv.Itoa(c.GatewayPort)
	l := gatewayLaunch{
		Argv: []string{binary, "gateway", "--host", "127.0.0.1", "--port", port},
		Env: []string{
			"HOME=" + stateDir,
			"NULLCLAW_HOME=" + home,
			"NULLCLAW_WORKSPACE=" + c.Workspace,
			"NULLCLAW_GATEWAY_HOST=127.0.0.1",
			"NULLCLAW_GATEWAY_PORT=" + port,
		},
		Files:   []guestFile{{Path: path.Join(home, "config.json"), Data: cfg, Perm: 0o600}},
		BaseURL: "http://127.0.0.1:" + port,
	}
	if strings.TrimSpace(c.SystemPrompt) != "" {
		l.Files = append(l.Files, guestFile{
			Path:         path.Join(c.Workspace, "IDENTITY.md"),
			Data:         []byte(c.SystemPrompt),
			Perm:         0o644,
			KeepExisting: true,
		})
	}
	return l, nil
}
