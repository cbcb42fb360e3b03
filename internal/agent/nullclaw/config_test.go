package nullclaw

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/agent/nullclaw/a2a"
)

func baseConfig() Config {
	return Config{
		Provider:     "anthropic",
		BaseURL:      "http://127.0.0.1:8090/",
		APIKey:       "proxy-token-1",
		Model:        "claude-sonnet-4-5",
		SystemPrompt: "You are ExeClaw's agent.",
		Workspace:    "/workspace",
		GatewayPort:  3111,
		GatewayToken: "gw-token-0123456789",
	}
}

func TestRenderConfigAnthropic(t *testing.T) {
	c := baseConfig()
	temp := 0.3
	c.Temperature, c.MaxTokens = &temp, 4096
	b, err := RenderConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]any
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	get := func(path string) any {
		var v any = f
		for _, k := range strings.Split(path, ".") {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		}
		return v
	}
	for path, want := range map[string]any{
		"models.providers.anthropic.api_key":        "proxy-token-1",
		"models.providers.anthropic.base_url":       "http://127.0.0.1:8090",
		"agents.defaults.model.primary":             "anthropic/claude-sonnet-4-5",
		"default_temperature":                       0.3,
		"max_tokens":                                float64(4096),
		"gateway.host":                              "127.0.0.1",
		"gateway.port":                              float64(3111),
		"gateway.require_pairing":                   true,
		"gateway.allow_public_bind":                 false,
		"a2a.enabled":                               true,
		"autonomy.level":                            "full",
		"autonomy.require_approval_for_medium_risk": false,
		"agent.session_idle_timeout_secs":           float64(604800),
		"secrets.encrypt":                           false,
		"security.sandbox.backend":                  "none",
	} {
		if got := get(path); got != want {
			t.Errorf("%s = %#v, want %#v", path, got, want)
		}
	}
	tokens, _ := get("gateway.paired_tokens").([]any)
	if len(tokens) != 1 || tokens[0] != TokenHash(c.GatewayToken) || len(TokenHash("x")) != 64 {
		t.Errorf("paired tokens %v", tokens)
	}
	if strings.Contains(string(b), c.GatewayToken) {
		t.Error("the gateway token is in the config in the clear")
	}
	if strings.Contains(string(b), c.SystemPrompt) {
		t.Error("the system prompt is in config.json")
	}
}

func TestRenderConfigOpenAICompatible(t *testing.T) {
	for _, p := range []string{"openai-compatible", "openai", "openrouter"} {
		c := baseConfig()
		c.Provider, c.BaseURL, c.Model = p, "http://127.0.0.1:8090/v1", "openai/gpt-4o"
		b, err := RenderConfig(c)
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Models struct {
				Providers map[string]struct {
					APIKey  string `json:"api_key"`
					BaseURL string `json:"base_url"`
				}
			}
			Agents struct {
				Defaults struct{ Model struct{ Primary string } }
			}
		}
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		e, ok := f.Models.Providers[ProxyProviderName]
		if !ok || len(f.Models.Providers) != 1 || e.BaseURL != "http://127.0.0.1:8090/v1" || e.APIKey != "proxy-token-1" {
			t.Errorf("%s: providers %+v", p, f.Models.Providers)
		}
		// nullclaw splits the primary model ref at the first slash.
		if f.Agents.Defaults.Model.Primary != ProxyProviderName+"/openai/gpt-4o" {
			t.Errorf("%s: primary %q", p, f.Agents.Defaults.Model.Primary)
		}
	}
}

func TestRenderConfigAnthropicDropsV1(t *testing.T) {
	c := baseConfig()
	c.BaseURL = "http://127.0.0.1:8090/v1/"
	b, err := RenderConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"base_url": "http://127.0.0.1:8090"`) {
		t.Errorf("config %s", b)
	}
}

func TestRenderConfigRejects(t *testing.T) {
	neg := -1.0
	for name, mut := range map[string]func(*Config){
		"provider":       func(c *Config) { c.Provider = "gemini" },
		"empty model":    func(c *Config) { c.Model = "" },
		"model space":    func(c *Config) { c.Model = "a b" },
		"empty key":      func(c *Config) { c.APIKey = "" },
		"key newline":    func(c *Config) { c.APIKey = "a\nb" },
		"base URL":       func(c *Config) { c.BaseURL = "127.0.0.1:8090" },
		"base URL query": func(c *Config) { c.BaseURL = "http://127.0.0.1:8090/?x=1" },
		"port 0":         func(c *Config) { c.GatewayPort = 0 },
		"port high":      func(c *Config) { c.GatewayPort = 70000 },
		"short token":    func(c *Config) { c.GatewayToken = "short" },
		"token space":    func(c *Config) { c.GatewayToken = "has a space in it ok" },
		"relative ws":    func(c *Config) { c.Workspace = "work" },
		"temperature":    func(c *Config) { c.Temperature = &neg },
		"max tokens":     func(c *Config) { c.MaxTokens = -5 },
		"huge prompt":    func(c *Config) { c.SystemPrompt = strings.Repeat("p", 20001) },
	} {
		c := baseConfig()
		mut(&c)
		if _, err := RenderConfig(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestLaunch(t *testing.T) {
	c := baseConfig()
	l, err := c.launch("/usr/local/bin/nullclaw", "/var/lib/execlaw/nullclaw")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(l.Argv, " ") != "/usr/local/bin/nullclaw gateway --host 127.0.0.1 --port 3111" {
		t.Errorf("argv %q", l.Argv)
	}
	env := strings.Join(l.Env, "\n")
	for _, want := range []string{"HOME=/var/lib/execlaw/nullclaw", "NULLCLAW_HOME=/var/lib/execlaw/nullclaw/.nullclaw",
		"NULLCLAW_WORKSPACE=/workspace", "NULLCLAW_GATEWAY_PORT=3111", "NULLCLAW_GATEWAY_HOST=127.0.0.1"} {
		if !strings.Contains(env, want) {
			t.Errorf("env lacks %s", want)
		}
	}
	if len(l.Files) != 2 || l.Files[0].Path != "/var/lib/execlaw/nullclaw/.nullclaw/config.json" || l.Files[0].Perm != 0o600 ||
		l.Files[1].Path != "/workspace/IDENTITY.md" || !l.Files[1].KeepExisting || string(l.Files[1].Data) != c.SystemPrompt {
		t.Errorf("files %+v", l.Files)
	}
	if l.BaseURL != "http://127.0.0.1:3111" || a2a.NewClient(l.BaseURL, nil, c.GatewayToken).Endpoint() != "http://127.0.0.1:3111/a2a" {
		t.Errorf("base URL %q", l.BaseURL)
	}
	c.SystemPrompt = "  "
	if l, _ := c.launch("nullclaw", "/s"); len(l.Files) != 1 {
		t.Errorf("blank prompt wrote %d files", len(l.Files))
	}
	if _, err := c.launch("nullclaw", "relative"); err == nil {
		t.Error("relative state dir accepted")
	}
}
