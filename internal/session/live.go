package session

import (
	"context"
	"errors"
	"time"

	"github.com/execlaw/execlaw/internal/guest"
)

// ErrNotRunning is a session whose sandbox does not run: it is paused, or
// it failed to start.
var ErrNotRunning = errors.New("the session's sandbox is not running: resume the session first")

// Live is a running session's sandbox, handed to its owner's interactive
// use (terminals, previews): what uses it must stop when Done is closed.
type Live struct {
	// Guest is the sandbox's control client.
	Guest *guest.Client
	// Done is closed when the session ends or pauses.
	Done <-chan struct{}
	s    *Session
}

// Touch counts as activity: a session someone types into or previews is
// not idle, so it is neither paused nor ended for idleness meanwhile.
func (l Live) Touch() {
	if l.s == nil {
		return
	}
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if !l.s.terminating {
		l.s.rec.LastActivity = time.Now().UTC()
	}
}

// Live returns user's running session id, once its sandbox is up (waiting
// for a boot in progress within ctx). ErrNotFound when it does not exist
// or is someone else's, ErrEnded when it has ended, ErrNotRunning when it
// is paused or its sandbox failed.
func (m *Manager) Live(ctx context.Context, user User, id string) (Live, error) {
	s, running, err := m.Get(ctx, user, id)
	if err != nil {
		return Live{}, err
	}
	if !running {
		rec, err := m.store.GetSession(ctx, id)
		if err != nil {
			return Live{}, err
		}
		if rec.State == StatePaused {
			return Live{}, ErrNotRunning
		}
		return Live{}, ErrEnded
	}
	select {
	case <-s.ready:
	case <-s.ctx.Done():
		return Live{}, ErrEnded
	case <-ctx.Done():
		return Live{}, ctx.Err()
	}
	s.mu.Lock()
	sb, terminating := s.sb, s.terminating
	s.mu.Unlock()
	switch {
	case terminating:
		return Live{}, ErrEnded
	case sb == nil:
		return Live{}, ErrNotRunning
	}
	return Live{Guest: sb.Guest(), Done: s.ctx.Done(), s: s}, nil
}
