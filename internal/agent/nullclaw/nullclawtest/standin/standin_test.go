package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/agent/nullclaw"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// The stand-in reads what the adapter's RenderConfig writes, as nullclaw
// would.
func TestReadsRenderedConfig(t *testing.T) {
	temp := 0.3
	for _, c := range []struct {
		provider, base, wantName, wantDialect, wantBase string
	}{
		{"anthropic", "http://127.0.0.1:4002/v1", "anthropic", dialectAnthropic, "http://127.0.0.1:4002"},
		{"openai-compatible", "http://127.0.0.1:4002/v1", nullclaw.ProxyProviderName, dialectCompatible, "http://127.0.0.1:4002/v1"},
	} {
		raw, err := nullclaw.RenderConfig(nullclaw.Config{
			Provider: c.provider, BaseURL: c.base, APIKey: "proxy-token", Model: "org/model-x", Workspace: "/w",
			GatewayPort: 4100, GatewayToken: "gateway-token-0123456789", Temperature: &temp, MaxTokens: 99,
		})
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := parseConfig(raw, env(nil))
		if err != nil {
			t.Fatalf("%s: %v", c.provider, err)
		}
		if cfg.Provider != c.wantName || cfg.Dialect != c.wantDialect || cfg.BaseURL != c.wantBase ||
			cfg.Model != "org/model-x" || cfg.APIKey != "proxy-token" || cfg.Temperature != 0.3 || cfg.MaxTokens != 99 ||
			cfg.Host != "127.0.0.1" || cfg.Port != 4100 || !cfg.RequirePairing || !cfg.A2AEnabled {
			t.Errorf("%s: %+v", c.provider, cfg)
		}
		if !cfg.authorize("Bearer gateway-token-0123456789") {
			t.Errorf("%s: the gateway token is refused", c.provider)
		}
		for _, bad := range []string{"", "Bearer ", "Bearer wrong", "gateway-token-0123456789", "Bearer " + nullclaw.TokenHash("gateway-token-0123456789")} {
			if cfg.authorize(bad) {
				t.Errorf("%s: %q is accepted", c.provider, bad)
			}
		}
	}
}

func TestConfigRules(t *testing.T) {
	base := `"models":{"providers":{"p":{"api_key":"k","base_url":"http://h/v1/"}}},"agents":{"defaults":{"model":{"primary":"p/m"}}}`
	cfg, err := parseConfig([]byte(`{`+base+`,"gateway":{"paired_tokens":["plain-token"]}}`),
		env(map[string]string{"NULLCLAW_GATEWAY_PORT": "4555", "NULLCLAW_GATEWAY_HOST": "::1"}))
	if err != nil {
		t.Fatal(err)
	}
	// Defaults, env overrides, a plaintext paired token, a2a off.
	if cfg.Dialect != dialectCompatible || cfg.BaseURL != "http://h/v1" || cfg.Port != 4555 || cfg.Host != "::1" ||
		cfg.A2AEnabled || !cfg.RequirePairing || cfg.Temperature != defaultTemperature || cfg.MaxTokens != defaultMaxTokens {
		t.Errorf("%+v", cfg)
	}
	if !cfg.authorize("Bearer plain-token") || cfg.authorize("Bearer other") {
		t.Error("plaintext paired_tokens entry")
	}
	if err := cfg.checkBind(); err != nil {
		t.Error(err)
	}
	cfg.Host = "0.0.0.0"
	if cfg.checkBind() == nil {
		t.Error("a public address is accepted without allow_public_bind")
	}
	open, err := parseConfig([]byte(`{`+base+`,"gateway":{"require_pairing":false}}`), env(nil))
	if err != nil || !open.authorize("") || open.Port != defaultPort {
		t.Errorf("pairing off: %+v %v", open, err)
	}

	for name, bad := range map[string]string{
		"old keys":       `{` + base + `,"default_provider":"p"}`,
		"no primary":     `{"models":{"providers":{"p":{"base_url":"http://h"}}}}`,
		"no entry":       `{"models":{"providers":{}},"agents":{"defaults":{"model":{"primary":"p/m"}}}}`,
		"no base_url":    `{"models":{"providers":{"p":{"api_key":"k"}}},"agents":{"defaults":{"model":{"primary":"p/m"}}}}`,
		"public openai":  `{"models":{"providers":{"openai":{"api_key":"k","base_url":"http://h"}}},"agents":{"defaults":{"model":{"primary":"openai/m"}}}}`,
		"not json":       `{`,
		"no model after": `{"models":{"providers":{"p":{"base_url":"http://h"}}},"agents":{"defaults":{"model":{"primary":"p/"}}}}`,
	} {
		if _, err := parseConfig([]byte(bad), env(nil)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestConfigLocation(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	os.MkdirAll(filepath.Join(home, ".nullclaw"), 0o755)
	cfg := `{"models":{"providers":{"anthropic":{"api_key":"k","base_url":"http://h"}}},"agents":{"defaults":{"model":{"primary":"anthropic/m"}}}}`
	os.WriteFile(filepath.Join(home, ".nullclaw", "config.json"), []byte(cfg), 0o600)

	// Older releases: ~/.nullclaw/config.json, workspace beside it.
	c, err := loadConfig(env(map[string]string{"HOME": home}))
	if err != nil || c.Path != filepath.Join(home, ".nullclaw", "config.json") || c.Workspace != filepath.Join(home, ".nullclaw", "workspace") {
		t.Fatalf("%+v %v", c, err)
	}
	// Newer: $NULLCLAW_HOME wins, and NULLCLAW_WORKSPACE sets the workspace.
	nh := filepath.Join(dir, "nh")
	os.MkdirAll(nh, 0o755)
	os.WriteFile(filepath.Join(nh, "config.json"), []byte(cfg), 0o600)
	c, err = loadConfig(env(map[string]string{"HOME": home, "NULLCLAW_HOME": nh, "NULLCLAW_WORKSPACE": "/ws"}))
	if err != nil || c.Path != filepath.Join(nh, "config.json") || c.Workspace != "/ws" {
		t.Fatalf("%+v %v", c, err)
	}
	// nullclaw reads at most 64 KiB.
	big := cfg[:len(cfg)-1] + `,"pad":"` + strings.Repeat("x", maxConfigBytes) + `"}`
	os.WriteFile(filepath.Join(nh, "config.json"), []byte(big), 0o600)
	if _, err := loadConfig(env(map[string]string{"NULLCLAW_HOME": nh})); err == nil {
		t.Error("a config over 64 KiB is read")
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"agent"}, {"gateway", "extra"}, {"gateway", "--bogus"}, {"acp"}} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, env(nil), &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, %s", args, code, errb.String())
		}
	}
	var errb bytes.Buffer
	if code := run(context.Background(), []string{"gateway"}, env(map[string]string{"NULLCLAW_HOME": t.TempDir()}), &bytes.Buffer{}, &errb); code != 1 ||
		!strings.Contains(errb.String(), "config.json") {
		t.Errorf("without a config: exit %d, %s", code, errb.String())
	}
}
