// Package agenttest holds what tests of agents and agent adapters share.
package agenttest

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/execlaw/execlaw/internal/event"
)

// Event is one recorded event: its type and its data as the store keeps it
// (JSON), decoded.
type Event struct {
	Type string
	Data map[string]any
}

// ErrEmit is what Emit returns once FailAt is reached.
var ErrEmit = errors.New("the store is gone")

// Recorder is an agent.Sink that records events as the store would, and
// fails the test when an event's data does not marshal to a JSON object of
// valid UTF-8.
type Recorder struct {
	t testing.TB
	// FailAt, when > 0, makes the FailAt-th Emit and every later one fail
	// with ErrEmit, recording nothing.
	FailAt int

	mu      sync.Mutex
	events  []Event
	emitted int
	usage   event.UsageTotals
}

// NewRecorder returns an empty recorder.
func NewRecorder(t testing.TB) *Recorder { return &Recorder{t: t} }

func (r *Recorder) Emit(_ context.Context, typ string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		r.t.Errorf("Emit %s: %v", typ, err)
		return err
	}
	if !utf8.Valid(b) {
		r.t.Errorf("Emit %s: not UTF-8: %q", typ, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		r.t.Errorf("Emit %s: data is not an object: %s", typ, b)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.emitted++
	if r.FailAt > 0 && r.emitted >= r.FailAt {
		return ErrEmit
	}
	r.events = append(r.events, Event{typ, m})
	return nil
}

// AddUsage adds to the running total, as the session does.
func (r *Recorder) AddUsage(_ context.Context, u event.UsageTotals) (event.UsageTotals, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.usage.InputTokens += u.InputTokens
	r.usage.OutputTokens += u.OutputTokens
	r.usage.CostUSD += u.CostUSD
	return r.usage, nil
}

// SaveMessages keeps nothing: agents that run in the sandbox keep their own
// history.
func (r *Recorder) SaveMessages(context.Context, []json.RawMessage) error { return nil }

// Events returns a copy of what was recorded.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Usage is the running total of AddUsage.
func (r *Recorder) Usage() event.UsageTotals {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.usage
}

// Reset forgets the events recorded so far (a new turn's start).
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = nil
}
