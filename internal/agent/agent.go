// Package agent is the contract between a session and the agent it runs: the
// built-in agent (package builtin), or an adapter for an agent CLI that runs
// inside the sandbox (claudecode, nullclaw). Every agent reports through the
// same events, so the session manager, the event log, the API and the UI treat
// them all alike. What kinds of agent exist, and what each needs, is described
// once per kind by a Kind and collected in a Registry.
package agent

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/guest"
)

// Agent is what a session drives.
type Agent interface {
	// Turn answers one user message. Failures the user should read become
	// error_event events and Turn returns nil; an error means the turn's
	// events could not be recorded.
	Turn(ctx context.Context, ws Workspace, env Environment, text string, sink Sink) error
	// Close ends whatever the agent runs in the sandbox.
	Close(ctx context.Context) error
}

// Sink receives what a turn produces: its events, and what the session keeps
// besides them.
type Sink interface {
	event.Emitter
	// AddUsage adds one model call's usage to the session and returns the new total.
	AddUsage(ctx context.Context, u event.UsageTotals) (event.UsageTotals, error)
	// SaveMessages appends to the stored conversation history.
	SaveMessages(ctx context.Context, msgs []json.RawMessage) error
}

// Workspace is where an agent's tools run: a sandbox's guest and its working
// directory.
type Workspace interface {
	Guest() *guest.Client
	Workspace() string
}

// Environment describes the sandbox an agent works in, for its instructions.
type Environment struct {
	Workspace string
	Kernel    string
	Hostname  string
	Sandbox   string // driver name
	Isolated  bool
	Network   string // "full" or "none"
}

// ErrCancelled is the cause a session gives when the user cancels a turn.
var ErrCancelled = errors.New("turn cancelled by the user")
