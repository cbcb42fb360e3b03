package api_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/agent/builtin"
	"github.com/execlaw/execlaw/internal/agent/claudecode"
	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

// /api/platform lists the agents the server offers, sessions may ask for
// one of them, and the API refuses the rest, and settings an agent cannot
// honour, with a message that says why.
func TestAgentChoice(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	base := func(extra map[string]any) map[string]any {
		req := map[string]any{"provider": "anthropic", "apiKey": "sk-ant-test-key", "model": "claude-sonnet-4-20250514", "baseUrl": fake.BaseURL()}
		for k, v := range extra {
			req[k] = v
		}
		return req
	}
	platformAgents := func(h *apitest.Harness) []string {
		var p struct{ Agents []string }
		h.Must(http.StatusOK, "GET", "/api/platform", nil).JSON(t, &p)
		return p.Agents
	}
	refused := func(h *apitest.Harness, req map[string]any, want string) {
		t.Helper()
		var e struct{ Error string }
		h.Must(http.StatusBadRequest, "POST", "/api/sessions", req).JSON(t, &e)
		if !strings.Contains(e.Error, want) {
			t.Errorf("error %q, want it to say %q", e.Error, want)
		}
	}

	plain := apitest.New(t, apitest.Options{})
	if got := platformAgents(plain); !slices.Equal(got, []string{"builtin"}) {
		t.Errorf("default agents %q", got)
	}
	refused(plain, base(map[string]any{"agent": "claude-code"}), `agent "claude-code" is not available; this server provides: builtin`)
	refused(plain, base(map[string]any{"agent": strings.Repeat("<script>", 100)}), "agent given is not available")
	if v := plain.Create(base(nil)); v.Agent != "builtin" {
		t.Errorf("default session agent %q", v.Agent)
	}

	h := apitest.New(t, apitest.Options{Agents: []agent.Kind{builtin.Kind, claudecode.Kind}})
	if got := platformAgents(h); !slices.Equal(got, []string{"builtin", "claude-code"}) {
		t.Errorf("agents %q", got)
	}
	// The UI builds its picker from the same descriptors the server checks
	// requests against.
	var kinds struct {
		AgentKinds []struct {
			Name, Label, Image string
			Providers, Refuses []string
		}
	}
	h.Must(http.StatusOK, "GET", "/api/platform", nil).JSON(t, &kinds)
	if k := kinds.AgentKinds; len(k) != 2 || k[0].Name != "builtin" || k[0].Image != "" || len(k[0].Providers) != 0 ||
		k[1].Name != "claude-code" || k[1].Label != "Claude Code" || k[1].Image != "claude-code" ||
		!slices.Equal(k[1].Providers, []string{"anthropic"}) || !slices.Equal(k[1].Refuses, []string{"temperature", "maxTokens", "thinking"}) {
		t.Errorf("agentKinds %+v", k)
	}
	refused(h, base(map[string]any{"agent": "nullclaw"}), `agent "nullclaw" is not available; this server provides: builtin, claude-code`)
	refused(h, map[string]any{"provider": "openai", "apiKey": "sk-test", "model": "gpt-4o", "agent": "claude-code"}, "use provider anthropic")
	for _, extra := range []map[string]any{{"temperature": 0.2}, {"maxTokens": 1000}, {"thinking": true}} {
		extra["agent"] = "claude-code"
		refused(h, base(extra), "claude-code chooses its own temperature, max tokens and thinking")
	}
	v := h.Create(base(map[string]any{"agent": "claude-code", "systemPrompt": "Be brief."}))
	if v.Agent != "claude-code" {
		t.Fatalf("session agent %q", v.Agent)
	}
	var list struct{ Sessions []struct{ ID, Agent string } }
	h.Must(http.StatusOK, "GET", "/api/sessions", nil).JSON(t, &list)
	if !slices.ContainsFunc(list.Sessions, func(s struct{ ID, Agent string }) bool { return s.ID == v.ID && s.Agent == "claude-code" }) {
		t.Errorf("the session list does not say the agent: %+v", list)
	}
}
