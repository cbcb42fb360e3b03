package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxConfigBytes is nullclaw's cap on reading config.json
// (readToEndAlloc(…, 1024 * 64) in Config.load).
const maxConfigBytes = 64 << 10

// Defaults where config.json says nothing.
const (
	defaultPort        = 3000
	defaultTemperature = 0.7
	defaultMaxTokens   = 8192
)

// Dialects of the provider entry, as nullclaw's provider factory picks them.
const (
	dialectAnthropic  = "anthropic"
	dialectCompatible = "openai-compatible"
)

// config is what the stand-in takes from nullclaw's config.json and
// environment.
type config struct {
	Path      string // the config.json read
	Home      string // its directory: where the stand-in's own log goes
	Workspace string

	Provider    string // the models.providers entry named by primary
	Dialect     string // dialectAnthropic or dialectCompatible
	Model       string
	APIKey      string
	BaseURL     string
	Temperature float64
	MaxTokens   int

	Host            string
	Port            int
	RequirePairing  bool
	AllowPublicBind bool
	// PairedHashes are SHA-256 hex digests of the accepted bearer tokens.
	PairedHashes []string
	A2AEnabled   bool
}

// fileConfig is the part of config.json the stand-in reads. Field names and
// nesting are config_parse.zig's.
type fileConfig struct {
	DefaultProvider    json.RawMessage `json:"default_provider"`
	DefaultModel       json.RawMessage `json:"default_model"`
	DefaultTemperature *float64        `json:"default_temperature"`
	MaxTokens          int             `json:"max_tokens"`
	Models             struct {
		Providers map[string]struct {
			APIKey  string `json:"api_key"`
			BaseURL string `json:"base_url"`
			APIURL  string `json:"api_url"` // alias of base_url
		} `json:"providers"`
	} `json:"models"`
	Agents struct {
		Defaults struct {
			Model struct {
				Primary string `json:"primary"`
			} `json:"model"`
		} `json:"defaults"`
	} `json:"agents"`
	Gateway struct {
		Host            string   `json:"host"`
		Port            int      `json:"port"`
		RequirePairing  *bool    `json:"require_pairing"`
		AllowPublicBind bool     `json:"allow_public_bind"`
		PairedTokens    []string `json:"paired_tokens"`
	} `json:"gateway"`
	A2A struct {
		Enabled bool `json:"enabled"`
	} `json:"a2a"`
}

// configPath is where nullclaw looks: $NULLCLAW_HOME/config.json (newer
// releases), else ~/.nullclaw/config.json (older ones).
func configPath(getenv func(string) string) (string, error) {
	if h := getenv("NULLCLAW_HOME"); h != "" {
		return filepath.Join(h, "config.json"), nil
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".nullclaw", "config.json"), nil
	}
	return "", errors.New("neither NULLCLAW_HOME nor HOME is set")
}

// loadConfig reads config.json and applies the environment, as nullclaw's
// Config.load and applyEnvOverrides do for the keys the stand-in uses.
func loadConfig(getenv func(string) string) (*config, error) {
	path, err := configPath(getenv)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxConfigBytes {
		return nil, fmt.Errorf("%s is over nullclaw's %d bytes", path, maxConfigBytes)
	}
	c, err := parseConfig(raw, getenv)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.Path, c.Home = path, filepath.Dir(path)
	c.Workspace = getenv("NULLCLAW_WORKSPACE")
	if c.Workspace == "" {
		c.Workspace = filepath.Join(c.Home, "workspace")
	}
	return c, nil
}

func parseConfig(raw []byte, getenv func(string) string) (*config, error) {
	var fc fileConfig
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&fc); err != nil {
		return nil, fmt.Errorf("not nullclaw's config: %w", err)
	}
	// config validation rejects the old top-level keys.
	if fc.DefaultProvider != nil || fc.DefaultModel != nil {
		return nil, errors.New("default_provider and default_model are not accepted: use agents.defaults.model.primary")
	}
	c := &config{Temperature: defaultTemperature, MaxTokens: defaultMaxTokens, A2AEnabled: fc.A2A.Enabled}
	if fc.DefaultTemperature != nil {
		c.Temperature = *fc.DefaultTemperature
	}
	if fc.MaxTokens > 0 {
		c.MaxTokens = fc.MaxTokens
	}

	// splitPrimaryModelRef: the provider is everything before the first "/".
	primary := fc.Agents.Defaults.Model.Primary
	name, model, ok := strings.Cut(primary, "/")
	if !ok || name == "" || model == "" {
		return nil, fmt.Errorf("agents.defaults.model.primary %q is not <provider>/<model>", primary)
	}
	entry, ok := fc.Models.Providers[name]
	if !ok {
		return nil, fmt.Errorf("models.providers has no entry %q", name)
	}
	c.Provider, c.Model, c.APIKey = name, model, strings.TrimSpace(entry.APIKey)
	c.BaseURL = strings.TrimRight(entry.BaseURL, "/")
	if c.BaseURL == "" {
		c.BaseURL = strings.TrimRight(entry.APIURL, "/")
	}
	switch name {
	case "anthropic":
		c.Dialect = dialectAnthropic
	case "openai", "openrouter", "gemini", "ollama":
		// Their providers ignore base_url and call the public service,
		// which a test cannot reach.
		return nil, fmt.Errorf("provider %q would not use base_url; the stand-in cannot follow it", name)
	default:
		// factory.zig: a name nullclaw does not know, with a base_url, is
		// an OpenAI-compatible endpoint.
		c.Dialect = dialectCompatible
	}
	if c.BaseURL == "" {
		return nil, fmt.Errorf("provider %q has no base_url", name)
	}

	g := fc.Gateway
	c.Host, c.Port = g.Host, g.Port
	c.RequirePairing = g.RequirePairing == nil || *g.RequirePairing
	c.AllowPublicBind = g.AllowPublicBind
	for _, t := range g.PairedTokens {
		// pairing.zig: an entry of 64 hex digits is already a hash;
		// anything else is a plaintext token and is hashed.
		if isHexHash(t) {
			c.PairedHashes = append(c.PairedHashes, strings.ToLower(t))
		} else if t != "" {
			c.PairedHashes = append(c.PairedHashes, tokenHash(t))
		}
	}
	if v := getenv("NULLCLAW_GATEWAY_HOST"); v != "" {
		c.Host = v
	}
	if v := getenv("NULLCLAW_GATEWAY_PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("NULLCLAW_GATEWAY_PORT %q is not a port", v)
		}
		c.Port = p
	}
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.Port == 0 {
		c.Port = defaultPort
	}
	return c, nil
}

func isHexHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func tokenHash(t string) string {
	sum := sha256.Sum256([]byte(t))
	return hex.EncodeToString(sum[:])
}

// authorize is the gateway's bearer check (isWebhookAuthorized with
// pairing.zig): the token's SHA-256 must be one of the paired hashes.
func (c *config) authorize(authorization string) bool {
	if !c.RequirePairing {
		return true
	}
	tok, ok := strings.CutPrefix(authorization, "Bearer ")
	if !ok || tok == "" {
		return false
	}
	h := []byte(tokenHash(tok))
	found := false
	for _, p := range c.PairedHashes {
		if subtle.ConstantTimeCompare(h, []byte(p)) == 1 {
			found = true
		}
	}
	return found
}

// checkBind refuses a public address unless the config allows it, as the
// gateway does.
func (c *config) checkBind() error {
	if c.AllowPublicBind || c.Host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(c.Host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("refusing to bind %s: not a loopback address and gateway.allow_public_bind is false", c.Host)
}
