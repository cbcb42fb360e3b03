package builtin

import (
	"context"

	"github.com/execlaw/execlaw/internal/agent"
)

// Name is the built-in agent's kind, the default of every session.
const Name = "builtin"

// Kind describes the built-in agent: it runs on the host, talks to any
// provider and honours every setting.
var Kind = agent.Kind{
	Name:  Name,
	Label: "ExeClaw's agent",
	Hint:  "Runs on the server; its tools (bash, files) run in the sandbox. Any provider.",
	New: func(ctx context.Context, s agent.Settings) (agent.Agent, error) {
		return New(ctx, Config{
			LLM: s.LLM, SystemPrompt: s.SystemPrompt, Temperature: s.Temperature, MaxTokens: s.MaxTokens,
			MaxSteps: s.MaxSteps, ThinkingBudget: s.ThinkingBudget, MaxRetries: s.MaxRetries,
		}, s.History)
	},
}

// Close does nothing: the built-in agent runs on the host and holds nothing
// in the sandbox.
func (r *Runner) Close(context.Context) error { return nil }

var _ agent.Agent = (*Runner)(nil)
