package nullclaw

import (
	"context"
	"encoding/json"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/image"
)

// Name is nullclaw's kind.
const Name = image.AgentNullclaw

// Kind describes nullclaw: its gateway runs in the VM (the image must carry
// it) and talks to any provider through the credential proxy.
var Kind = agent.Kind{
	Name:  Name,
	Label: "nullclaw",
	Hint:  "The nullclaw agent, inside the VM. Your key stays on the server: the VM only gets a per-session token.",
	Image: image.AgentNullclaw,
	New: func(_ context.Context, s agent.Settings) (agent.Agent, error) {
		var maxTokens int
		if s.MaxTokens != nil {
			maxTokens = int(*s.MaxTokens)
		}
		var r resumeState
		_ = json.Unmarshal(s.Resume, &r) // none, or damaged: a new conversation
		return NewAgent(AgentConfig{LLM: s.LLM, SystemPrompt: s.SystemPrompt,
			Temperature: s.Temperature, MaxTokens: maxTokens, Logger: s.Logger, ResumeContext: r.ContextID})
	},
}
