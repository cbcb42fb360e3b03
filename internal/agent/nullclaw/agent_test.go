package nullclaw

import (
	"testing"

	"github.com/execlaw/execlaw/internal/llm"
)

// nullclaw's state sits next to the workspace: in a VM at the root, with
// the process driver in the session's own sandbox directory (never a path
// shared by sessions on the host).
func TestStateDir(t *testing.T) {
	for ws, want := range map[string]string{
		"/workspace":                      "/.execlaw-nullclaw",
		"/data/sandboxes/s_1/workspace":   "/data/sandboxes/s_1/.execlaw-nullclaw",
		"/data/sandboxes/s_1/workspace/":  "/data/sandboxes/s_1/.execlaw-nullclaw",
		"/data/sandboxes/s_1/./workspace": "/data/sandboxes/s_1/.execlaw-nullclaw",
	} {
		if got := stateDir(ws); got != want {
			t.Errorf("StateDir(%q) = %q, want %q", ws, got, want)
		}
	}
}

func TestBinaryDefault(t *testing.T) {
	cfg := AgentConfig{LLM: llm.Config{Provider: llm.Anthropic, Model: "m"}}
	t.Setenv(binaryEnv, "")
	if a, err := NewAgent(cfg); err != nil || a.cfg.Binary != defaultBinary {
		t.Errorf("default binary %q, %v", a.cfg.Binary, err)
	}
	t.Setenv(binaryEnv, "/opt/nullclaw/bin/nullclaw")
	if a, err := NewAgent(cfg); err != nil || a.cfg.Binary != "/opt/nullclaw/bin/nullclaw" {
		t.Errorf("binary from %s: %q, %v", binaryEnv, a.cfg.Binary, err)
	}
	cfg.Binary = "/explicit"
	if a, err := NewAgent(cfg); err != nil || a.cfg.Binary != "/explicit" {
		t.Errorf("explicit binary: %q, %v", a.cfg.Binary, err)
	}
}
