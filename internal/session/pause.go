package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/store"
)

// A paused session holds no sandbox and no memory: its VM was saved to its
// sandbox directory (a snapshot) or stopped with its disk kept (cold), and
// the session object that ran it is gone. Resuming makes a new session
// object from the record, restores or boots its sandbox, and rebuilds its
// agent from the stored conversation (and what the agent said of itself).

// resumeInfo is how a paused session goes on, kept in its record (nothing
// secret: the key is held apart).
type resumeInfo struct {
	// Kind is how it paused: event.ResumeSnapshot or event.ResumeCold;
	// Reason why it is cold.
	Kind     string    `json:"kind"`
	Reason   string    `json:"reason,omitempty"`
	PausedAt time.Time `json:"pausedAt"`
	// Agent is what a Resumable agent said of itself.
	Agent json.RawMessage `json:"agent,omitempty"`
}

func parseResume(raw json.RawMessage) resumeInfo {
	var r resumeInfo
	if len(raw) > 0 && json.Unmarshal(raw, &r) == nil {
		return r
	}
	return resumeInfo{Kind: event.ResumeCold, Reason: "how it paused was not recorded"}
}

// Errors of pausing and resuming.
var (
	// ErrKeyNeeded: the server no longer holds the session's API key (it
	// restarted, without a key store); the user gives it to resume.
	ErrKeyNeeded = errors.New("this session needs its API key again to resume (the server restarted and keeps keys only in memory): resume it with {\"apiKey\": \"...\"}")
	// ErrNotPausable: a session still starting, or ending, cannot pause.
	ErrNotPausable = errors.New("the session cannot pause now: it is starting, or ending")
)

// lostFiles ends the reason of a cold pause whose driver keeps no files.
const lostFiles = ", and its workspace goes with its sandbox: it resumes on an empty one"

// finishPause saves the sandbox (or stops it, keeping its disk), records
// the session as paused and lets the session object go. The session's
// goroutines and agent have been stopped.
func (s *Session) finishPause(sb sandbox.Sandbox, reason string) {
	began := time.Now()
	data := event.PausedData{Kind: event.ResumeCold}
	switch p, ok := sb.(sandbox.Pauser); {
	case sb == nil:
		data.Reason = "it had no sandbox running"
	case !ok:
		data.Reason = s.deps.driver.Name() + " sandboxes cannot save running processes"
		if !sandbox.KeepsFiles(s.deps.driver) {
			data.Reason += lostFiles
		}
		s.stopSandbox(sb)
	default:
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		snap, err := p.Pause(ctx)
		cancel()
		if err != nil {
			s.deps.log.Warn("saving the VM failed: pausing cold", "session", s.id, "err", err)
			data.Reason = "saving the VM failed: " + err.Error()
			s.stopSandbox(sb)
		} else {
			data.Kind, data.Bytes = event.ResumeSnapshot, snap.Bytes
		}
	}
	data.Ms = time.Since(began).Milliseconds()
	info := resumeInfo{Kind: data.Kind, Reason: data.Reason, PausedAt: time.Now().UTC()}
	if r, ok := s.agent.(agent.Resumable); ok {
		info.Agent = r.ResumeState()
	}
	raw, _ := json.Marshal(info)
	ctx := context.Background()
	if err := s.deps.store.SetResume(ctx, s.id, raw); err != nil {
		s.deps.log.Error("record pause", "session", s.id, "err", err)
	}
	s.mu.Lock()
	s.rec.State, s.rec.Resume = StatePaused, raw
	s.mu.Unlock()
	if err := s.deps.store.SetState(ctx, s.id, StatePaused, ""); err != nil {
		s.deps.log.Error("record pause", "session", s.id, "err", err)
	}
	_ = s.bus.Emit(ctx, event.Paused, data)
	_ = s.emitStatus("", "paused: "+reason)
	s.bus.CloseAll()
	s.deps.paused(s)
	s.deps.log.Info("session paused", "session", s.id, "kind", data.Kind, "bytes", data.Bytes, "ms", data.Ms, "reason", reason)
}

// resumeSandbox brings a paused session's sandbox back: restored from its
// snapshot where there is one the driver can restore, else booted afresh on
// its disk; an event says which, how long it took, and why it was cold.
func (s *Session) resumeSandbox(spec sandbox.Spec) (sandbox.Sandbox, error) {
	began := time.Now()
	spec.Resume = true
	data := event.ResumedData{Kind: event.ResumeCold, Reason: s.resuming.Reason}
	var sb sandbox.Sandbox
	snap, ok, err := sandbox.ReadSnapshot(spec.Dir)
	switch r, restorer := s.deps.driver.(sandbox.Restorer); {
	case err != nil:
		data.Reason = "its snapshot could not be read: " + err.Error()
	case !ok:
		if data.Reason == "" {
			data.Reason = "no snapshot was saved"
		}
	case !restorer:
		data.Reason = s.deps.driver.Name() + " cannot restore snapshots"
	default:
		sb, err = r.Restore(s.ctx, spec, snap)
		if err == nil {
			data.Kind, data.Reason = event.ResumeSnapshot, ""
		} else {
			s.deps.log.Warn("restoring the snapshot failed: resuming cold", "session", s.id, "err", err)
			data.Reason = "its snapshot could not be restored: " + err.Error()
		}
	}
	if ok && sb == nil {
		// Never to be tried again: the disk moves on from here.
		if rerr := sandbox.RemoveSnapshot(spec.Dir, snap); rerr != nil {
			s.deps.log.Warn("remove a snapshot that was not restored", "session", s.id, "err", rerr)
		}
	}
	if sb == nil {
		if sb, err = s.deps.driver.Start(s.ctx, spec); err != nil {
			return nil, err
		}
	}
	data.Ms = time.Since(began).Milliseconds()
	if err := s.bus.Emit(context.Background(), event.Resumed, data); err != nil && !errors.Is(err, ErrLogFull) {
		s.deps.log.Error("record resume", "session", s.id, "err", err)
	}
	s.deps.log.Info("session resumed", "session", s.id, "kind", data.Kind, "ms", data.Ms, "reason", data.Reason)
	return sb, nil
}

// Pause saves one of user's running sessions and frees its sandbox's memory;
// it answers once the session is paused. A turn in progress refuses it
// (ErrBusy); a paused session is left as it is.
func (m *Manager) Pause(ctx context.Context, user User, id string) (View, error) {
	s, running, err := m.Get(ctx, user, id)
	if err != nil {
		return View{}, err
	}
	if running {
		if err := m.pause(s, "paused by the user", false); err != nil {
			return View{}, err
		}
	}
	return m.View(ctx, user, id)
}

// pause pauses s; force cancels a turn in progress (shutdown) and ignores
// the cap on paused sessions, which would otherwise refuse it.
func (m *Manager) pause(s *Session, reason string, force bool) error {
	if !force {
		if err := m.checkPausedCap(); err != nil {
			return err
		}
		s.mu.Lock()
		busy, state := s.turnCancel != nil, s.rec.State
		s.mu.Unlock()
		switch {
		case busy:
			return ErrBusy
		case state != StateActive:
			return ErrNotPausable
		}
	}
	if !s.end(endPause, 0, reason) {
		return ErrNotPausable // it was ending already
	}
	return nil
}

// checkPausedCap refuses a pause past --max-paused-sessions.
func (m *Manager) checkPausedCap() error {
	if m.cfg.MaxPaused <= 0 {
		return nil
	}
	counts, err := m.store.CountByState(context.Background())
	if err != nil {
		return err
	}
	if counts[StatePaused] >= m.cfg.MaxPaused {
		return &LimitError{fmt.Sprintf("this server keeps at most %d paused sessions; end one to pause another", m.cfg.MaxPaused)}
	}
	return nil
}

// Resume starts one of user's paused sessions again, with apiKey when the
// server no longer holds its key; a running session is left as it is. The
// sandbox comes back in the background: the view says resuming.
func (m *Manager) Resume(ctx context.Context, user User, id, apiKey string) (View, error) {
	if err := checkAPIKey(apiKey); err != nil {
		return View{}, err
	}
	_, err := m.resumeFor(ctx, user, id, apiKey)
	if err != nil {
		return View{}, err
	}
	return m.View(ctx, user, id)
}

// resumeFor returns one of user's sessions running: as it is, or resumed.
func (m *Manager) resumeFor(ctx context.Context, user User, id, apiKey string) (*Session, error) {
	m.resumeMu.Lock() // one resume of a session at a time
	defer m.resumeMu.Unlock()
	s, running, err := m.Get(ctx, user, id)
	if err != nil || running {
		return s, err
	}
	rec, err := m.store.GetSession(ctx, id)
	if err != nil {
		return nil, err
	}
	if rec.State != StatePaused {
		return nil, ErrEnded
	}
	key, err := m.keyOf(ctx, rec, apiKey)
	if err != nil {
		return nil, err
	}
	return m.resume(ctx, rec, key)
}

// resume makes a running session of a paused record.
func (m *Manager) resume(ctx context.Context, rec store.Session, key llm.Secret) (*Session, error) {
	set := parseSettings(rec.Config)
	info := parseResume(rec.Resume)
	kind, ok := m.cfg.Agents.Lookup(rec.Agent)
	if !ok {
		return nil, invalid("this server no longer offers the %s agent this session ran", rec.Agent)
	}
	history, err := m.store.Messages(ctx, rec.ID)
	if err != nil {
		return nil, err
	}
	last, err := m.store.LastSeq(ctx, rec.ID)
	if err != nil {
		return nil, err
	}
	bytes, err := m.store.EventBytes(ctx, rec.ID)
	if err != nil {
		return nil, err
	}
	ag, err := m.newAgent(ctx, kind, rec, set, key, history, info.Agent)
	if err != nil {
		return nil, invalid("%v", err)
	}
	if err := m.checkFreeDisk(); err != nil {
		return nil, err
	}
	rec.State = StateResuming
	s := newSession(m.sessionDeps(rec.ID), rec, set, ag, key, logState{lastSeq: last, bytes: bytes, messages: len(history)})
	s.resuming = &info
	if err := m.admit(s); err != nil {
		return nil, err
	}
	m.mu.Lock()
	delete(m.keys, rec.ID) // the session holds it again
	m.mu.Unlock()
	s.boot()
	return s, nil
}

// keyOf is the API key to resume rec with: the one given, the one this
// server still holds, or the one its key store sealed; ErrKeyNeeded when
// there is none.
func (m *Manager) keyOf(ctx context.Context, rec store.Session, given string) (llm.Secret, error) {
	if given != "" {
		if err := checkAPIKey(given); err != nil {
			return llm.Secret{}, err
		}
		return llm.NewSecret(given), nil
	}
	m.mu.Lock()
	key, held := m.keys[rec.ID]
	m.mu.Unlock()
	if held {
		return key, nil
	}
	if m.cfg.Keys != nil {
		sealed, err := m.store.SealedKey(ctx, rec.ID)
		if err != nil {
			return llm.Secret{}, err
		}
		if len(sealed) > 0 {
			plain, err := m.cfg.Keys.Open(rec.ID, sealed)
			if err == nil {
				return llm.NewSecret(string(plain)), nil
			}
			m.log.Warn("the key store could not open a session's key; it must be given again", "session", rec.ID, "err", err)
		}
	}
	if rec.Provider == llm.OpenAICompatible {
		return llm.Secret{}, nil // its key may be empty
	}
	return llm.Secret{}, ErrKeyNeeded
}

// keyNeeded reports whether a paused session can resume only with its key
// given again.
func (m *Manager) keyNeeded(ctx context.Context, rec store.Session) bool {
	if rec.State != StatePaused {
		return false
	}
	_, err := m.keyOf(ctx, rec, "")
	return errors.Is(err, ErrKeyNeeded)
}

// sealKey keeps a new session's key in the key store, when there is one,
// so the session can resume after a restart without asking for it.
func (m *Manager) sealKey(ctx context.Context, id string, key llm.Secret) error {
	if m.cfg.Keys == nil || key.Empty() {
		return nil
	}
	sealed, err := m.cfg.Keys.Seal(id, []byte(key.Reveal()))
	if err != nil {
		return fmt.Errorf("seal the API key: %w", err)
	}
	return m.store.SetSealedKey(ctx, id, sealed)
}

// endPaused ends a paused session: its files are removed and its record
// final, with an exit event.
func (m *Manager) endPaused(ctx context.Context, rec store.Session, reason string) error {
	if err := os.RemoveAll(m.sandboxDir(rec.ID)); err != nil {
		return fmt.Errorf("remove the paused session's files: %w", err)
	}
	m.mu.Lock()
	delete(m.keys, rec.ID)
	m.mu.Unlock()
	if err := m.store.SetSealedKey(ctx, rec.ID, nil); err != nil {
		return err
	}
	if err := m.store.SetState(ctx, rec.ID, StateStopped, ""); err != nil {
		return err
	}
	last, err := m.store.LastSeq(ctx, rec.ID)
	if err != nil {
		return err
	}
	bus := NewBus(m.store, rec.ID, last)
	rec.State, rec.EndedAt = StateStopped, time.Now()
	if err := bus.Emit(ctx, event.Status, event.StatusData{State: StateStopped, Uptime: viewOf(rec, last, time.Now()).Uptime, Message: reason}); err != nil {
		return err
	}
	m.log.Info("paused session ended", "session", rec.ID, "reason", reason)
	return bus.Emit(ctx, event.Exit, event.ExitData{Code: 0, Reason: reason})
}

// KeyStore seals API keys at rest with a key of the operator's, so paused
// sessions resume after a restart without asking for them (keystore.Store).
type KeyStore interface {
	Seal(sessionID string, key []byte) ([]byte, error)
	Open(sessionID string, sealed []byte) ([]byte, error)
}
