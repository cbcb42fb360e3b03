package agent

import "context"

// Agent is what a session drives: the built-in agent, or an adapter for an
// agent CLI that runs inside the sandbox (Claude Code, nullclaw). Every agent
// reports through the same events, so the session manager, the event log, the
// API and the UI treat them all alike.
type Agent interface {
	// Turn answers one user message. Failures the user should read become
	// error_event events and Turn returns nil; an error means the turn's
	// events could not be recorded.
	Turn(ctx context.Context, ws Workspace, env Environment, text string, sink Sink) error
	// Close ends whatever the agent runs in the sandbox.
	Close(ctx context.Context) error
}

// Kinds of agent a session can ask for.
const (
	KindBuiltin    = "builtin"
	KindClaudeCode = "claude-code"
	KindNullclaw   = "nullclaw"
)

// Close does nothing: the built-in agent runs on the host and holds nothing
// in the sandbox.
func (r *Runner) Close(context.Context) error { return nil }

var _ Agent = (*Runner)(nil)
