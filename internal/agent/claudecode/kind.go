package claudecode

import (
	"context"
	"encoding/json"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/image"
	"github.com/execlaw/execlaw/internal/llm"
)

// Name is Claude Code's kind.
const Name = image.AgentClaudeCode

// Kind describes Claude Code: its CLI runs in the VM (the image must carry
// it), speaks only Anthropic's API, and picks its own sampling and thinking,
// which it would otherwise ignore without a word.
var Kind = agent.Kind{
	Name:      Name,
	Label:     "Claude Code",
	Hint:      "Anthropic's Claude Code CLI, inside the VM. Your key stays on the server: the VM only gets a per-session token.",
	Image:     image.AgentClaudeCode,
	Providers: []string{llm.Anthropic},
	Refuses:   []string{agent.SettingTemperature, agent.SettingMaxTokens, agent.SettingThinking},
	New: func(_ context.Context, s agent.Settings) (agent.Agent, error) {
		var r resumeState
		if len(s.Resume) > 0 && (json.Unmarshal(s.Resume, &r) != nil || !validSessionID(r.SessionID)) {
			r.SessionID = "" // a damaged state starts a new conversation
		}
		return New(Config{LLM: s.LLM, SystemPrompt: s.SystemPrompt, Logger: s.Logger, ResumeSession: r.SessionID})
	},
}
