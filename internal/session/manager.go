// Package session runs agent sessions: their lifecycle and states, the limits
// that protect the host, the idle reaper, and each session's event log.
package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/egress"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/store"
)

// States of a session, as the API reports them.
const (
	StateCreating = "creating"
	StateBooting  = "booting"
	StateActive   = "active"
	StateBusy     = "busy"
	StateStopping = "stopping"
	StateStopped  = "stopped"
	StateError    = "error"
	// Pausing, paused and resuming (extensions): a paused session's
	// sandbox is saved to its directory (or stopped with its disk kept) and
	// holds no memory; it resumes on input or on request.
	StatePausing  = "pausing"
	StatePaused   = "paused"
	StateResuming = "resuming"
)

// Config tunes the manager.
type Config struct {
	// DataDir holds per-sandbox directories under DataDir/sandboxes.
	DataDir string
	// MaxSessions is how many sessions may run at once (default 10).
	MaxSessions int
	// MemoryLimitPercent refuses a new session when host memory in use plus
	// the new sandbox's memory would pass this share of the total (default 90).
	MemoryLimitPercent float64
	// MemoryOvercommit is the memory gate's second check: the memory every
	// running sandbox may use (touched or not: a VM's guest memory plus its
	// VMM's overhead, as its driver's sandbox.MemoryReserver says; the
	// process driver reserves nothing) plus the new one's must fit in
	// MemoryLimitPercent of the host's memory times this. Default 1: none
	// overcommitted; 1.5 bets that VMs never all use all their memory.
	MemoryOvercommit float64
	// MaxSessionsPerUser is how many sessions one user may run at once
	// (0: MaxSessions).
	MaxSessionsPerUser int
	// ReapInterval is how often idle sessions are looked for (default 30s).
	ReapInterval time.Duration
	// StopTimeout bounds how long stopping one sandbox may take (default 30s).
	StopTimeout time.Duration
	// Agents are the kinds of agent sessions may ask for, the default
	// first: the server offers those its sandboxes can run. Required.
	Agents *agent.Registry
	// MaxSteps and LLMRetries tune the built-in agent.
	MaxSteps   int
	LLMRetries int
	// LLMClient is used for model calls, the built-in agent's and the
	// credential proxy's, and its outbound policy checks a session's base
	// URL when the session is created; nil means llm.DefaultHTTPClient. A
	// server passes llm.HTTPClient(its policy).
	LLMClient *http.Client
	// Observer is told what happens in sessions (metrics); nil for none.
	Observer Observer
	// HookTimeout bounds the idle hook for one session (default 60s).
	HookTimeout time.Duration
	// PauseAfter pauses a session idle this long (0: never by itself);
	// MaxPaused bounds the paused sessions kept (0: no bound). Keys, when
	// set, seals API keys at rest so paused sessions resume after a
	// restart without asking for them.
	PauseAfter time.Duration
	MaxPaused  int
	Keys       KeyStore
	// EndOnClose ends running sessions at Close instead of pausing them.
	EndOnClose bool
	// RepoPolicy is where a new session's repository may be cloned from,
	// for a URL whose host is an IP address (nil: public addresses only);
	// RepoCA is PEM certificates its clone trusts besides the system's.
	RepoPolicy *egress.Policy
	RepoCA     []byte
	// WarmPool keeps this many VMs booted and idle for new sessions of the
	// default size (0: none); PoolNetwork is their network ("full" when
	// the server has VM networking, else "none").
	WarmPool    int
	PoolNetwork string
	// DiskMiB is the size of each VM session's writable disk (0: the
	// driver's default). It is sparse: this is what a guest may fill.
	DiskMiB int
	// MinFreeDisk is the floor of free space in DataDir's file system: below
	// it new sessions are refused and the running session using the most
	// disk is ended (0: no floor). DiskCheckInterval is how often it is
	// looked at (default DefaultDiskCheckInterval).
	MinFreeDisk       uint64
	DiskCheckInterval time.Duration
	// EventLogQuota bounds the bytes of event data one session's log may
	// hold (default DefaultEventLogQuota; negative: no bound). The agent and
	// the guest decide how much a turn writes; this is what caps it.
	EventLogQuota int64
}

// DefaultEventLogQuota is the default per-session event-log quota.
const DefaultEventLogQuota = 256 << 20

// Observer watches sessions without taking part in them: its methods are
// called synchronously on the sessions' own paths, so they must be quick and
// must not call back into the manager.
type Observer interface {
	// Event is every event stored in any session's log, as stored.
	Event(typ string, data json.RawMessage)
	// SandboxStarted is a sandbox boot that finished, well (err nil) or not;
	// pooled when the session took a VM from the warm pool.
	SandboxStarted(driver string, pooled bool, took time.Duration, err error)
	// PoolChanged is the warm pool after a VM joined or left it, or a
	// session took one or booted its own.
	PoolChanged(size, ready, booting int, hits, misses int64)
	// SandboxExited is a running sandbox that went away on its own.
	SandboxExited(driver string)
}

// IdleHook runs after the idle reaper has ended a session whose owner asked
// for its transcript (emailOnIdle), with the owner, the session as it ended
// and the address to send it to. It runs in its own goroutine, under a
// deadline.
type IdleHook func(ctx context.Context, owner User, v View, to string)

// States lists every state a session can be in, in lifecycle order.
var States = []string{StateCreating, StateBooting, StateActive, StateBusy, StatePausing, StatePaused, StateResuming,
	StateStopping, StateStopped, StateError}

// User is who owns a session.
type User struct {
	ID    string
	Email string
}

// Manager owns every running session.
type Manager struct {
	cfg    Config
	store  *store.Store
	driver sandbox.Driver
	log    *slog.Logger

	mu       sync.Mutex
	sessions map[string]*Session // running: not yet stopped, failed or paused
	pool     *warmPool
	keys     map[string]llm.Secret // API keys of paused sessions, held in memory
	closing  bool
	idleHook IdleHook
	resumeMu sync.Mutex // resumes one at a time, so a session is never resumed twice

	stopReaper context.CancelFunc
	reaperDone chan struct{}
	// reaped counts what the reaper started (ending a session, then its idle
	// hook); Close waits for them.
	reaped sync.WaitGroup
}

// NewManager makes a manager. Call Recover before serving and Close at the end.
func NewManager(cfg Config, st *store.Store, driver sandbox.Driver, log *slog.Logger) *Manager {
	if cfg.Agents == nil {
		panic("session.NewManager: Config.Agents is required")
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 10
	}
	if cfg.MemoryLimitPercent <= 0 {
		cfg.MemoryLimitPercent = 90
	}
	if cfg.ReapInterval <= 0 {
		cfg.ReapInterval = 30 * time.Second
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	if cfg.HookTimeout <= 0 {
		cfg.HookTimeout = 60 * time.Second
	}
	if cfg.DiskCheckInterval <= 0 {
		cfg.DiskCheckInterval = DefaultDiskCheckInterval
	}
	if cfg.EventLogQuota == 0 {
		cfg.EventLogQuota = DefaultEventLogQuota
	}
	m := &Manager{cfg: cfg, store: st, driver: driver, log: log, sessions: map[string]*Session{}, keys: map[string]llm.Secret{}}
	if p, ok := driver.(sandbox.Pooling); cfg.WarmPool > 0 && (!ok || !p.Poolable()) {
		log.Warn("no warm pool: this sandbox driver's VMs cannot be claimed", "driver", driver.Name())
		cfg.WarmPool = 0
	}
	if cfg.WarmPool > 0 {
		network := cfg.PoolNetwork
		if network == "" {
			network = "full"
		}
		m.pool = newWarmPool(m, cfg.WarmPool, settings{VCPUs: DefaultVCPUs, MemoryMiB: DefaultMemoryMiB, Network: network})
	}
	return m
}

// Driver is the sandbox driver sessions run in.
func (m *Manager) Driver() sandbox.Driver { return m.driver }

// Pool is how the warm pool stands (all zero when there is none).
func (m *Manager) Pool() PoolStats { return m.pool.stats() }

// MaxSessions is the configured limit.
func (m *Manager) MaxSessions() int { return m.cfg.MaxSessions }

// Running counts sessions that hold (or are getting) a sandbox.
func (m *Manager) Running() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sessions)
}

func (m *Manager) sandboxDir(id string) string {
	return filepath.Join(m.cfg.DataDir, "sandboxes", id)
}

// Recover runs once at start, before anything else. Sessions the previous
// run paused stay paused. Sessions it left running (it was killed, or
// crashed: their sandboxes died with it) become paused too, to resume cold
// on their disks: their files are kept, their processes are lost. Sessions
// it was ending end. Sandbox directories that belong to no paused session
// are removed.
func (m *Manager) Recover(ctx context.Context) error {
	unfinished, err := m.store.ListUnfinished(ctx)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, rec := range unfinished {
		switch rec.State {
		case StatePaused:
			keep[rec.ID] = true
			continue
		case StateStopping:
			if err := m.endPaused(ctx, rec, "the server restarted while the session was ending"); err != nil {
				return err
			}
			continue
		}
		reason := "the server stopped without saving it (it was killed or crashed): "
		if sandbox.KeepsFiles(m.driver) {
			reason += "its files are kept, the processes it ran are not"
		} else {
			reason += "the processes it ran are gone" + lostFiles
		}
		info, _ := json.Marshal(resumeInfo{Kind: event.ResumeCold, Reason: reason, PausedAt: time.Now().UTC()})
		if err := m.store.SetResume(ctx, rec.ID, info); err != nil {
			return err
		}
		if err := m.store.SetState(ctx, rec.ID, StatePaused, ""); err != nil {
			return err
		}
		last, err := m.store.LastSeq(ctx, rec.ID)
		if err != nil {
			return err
		}
		bus := NewBus(m.store, rec.ID, last)
		rec.State = StatePaused
		if err := bus.Emit(ctx, event.Paused, event.PausedData{Kind: event.ResumeCold, Reason: reason}); err != nil {
			return err
		}
		if err := bus.Emit(ctx, event.Status, event.StatusData{State: StatePaused, Uptime: viewOf(rec, 0, time.Now()).Uptime, Message: "paused: " + reason}); err != nil {
			return err
		}
		keep[rec.ID] = true
		m.log.Info("session paused: its sandbox did not survive the server", "session", rec.ID)
	}
	entries, err := os.ReadDir(filepath.Join(m.cfg.DataDir, "sandboxes"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		if keep[e.Name()] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(m.cfg.DataDir, "sandboxes", e.Name())); err != nil {
			return fmt.Errorf("remove leftover sandbox directory: %w", err)
		}
		m.log.Info("removed leftover sandbox directory", "dir", e.Name())
	}
	return nil
}

// Start runs the idle reaper, the disk guard and the warm pool until Close.
func (m *Manager) Start() {
	m.pool.start()
	ctx, cancel := context.WithCancel(context.Background())
	m.stopReaper = cancel
	m.reaperDone = make(chan struct{})
	go func() {
		defer close(m.reaperDone)
		t := time.NewTicker(m.cfg.ReapInterval)
		defer t.Stop()
		disk := time.NewTicker(m.cfg.DiskCheckInterval)
		defer disk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				m.ReapIdle(now)
			case <-disk.C:
				m.guardDisk()
			}
		}
	}()
}

// ReapIdle ends every session that has been idle past its timeout at now.
// Sessions running a turn are not idle.
// Running sessions idle past --pause-after (well before their timeout) are
// paused; paused sessions past their idle timeout end.
func (m *Manager) ReapIdle(now time.Time) {
	m.mu.Lock()
	var idle, pause []*Session
	for _, s := range m.sessions {
		switch since := s.idleSince(now); {
		case since > time.Duration(s.idleTimeoutMin)*time.Minute:
			idle = append(idle, s)
		case m.cfg.PauseAfter > 0 && since > m.cfg.PauseAfter:
			pause = append(pause, s)
		}
	}
	if m.closing {
		idle, pause = nil, nil // Close ends them
	}
	// Counted under the lock, so Close (which sets closing under it before
	// waiting) never waits on a count that can still grow.
	m.reaped.Add(len(idle) + len(pause) + 1)
	m.mu.Unlock()
	for _, s := range idle {
		m.log.Info("ending idle session", "session", s.id, "idleTimeoutMin", s.idleTimeoutMin)
		go func() {
			defer m.reaped.Done()
			if s.terminate(StateStopped, 0, idleReason(s.idleTimeoutMin)) {
				m.afterIdle(s.id, s.settings)
			}
		}()
	}
	for _, s := range pause {
		go func() {
			defer m.reaped.Done()
			reason := fmt.Sprintf("no activity for %s", m.cfg.PauseAfter.Round(time.Second))
			if err := m.pause(s, reason, false); err != nil {
				m.log.Info("idle session not paused", "session", s.id, "err", err)
			}
		}()
	}
	go func() {
		defer m.reaped.Done()
		m.reapPaused(now)
	}()
}

func idleReason(minutes int) string {
	return fmt.Sprintf("idle timeout: no activity for %d minutes", minutes)
}

// reapPaused ends the paused sessions idle past their timeout.
func (m *Manager) reapPaused(now time.Time) {
	ctx := context.Background()
	paused, err := m.store.ListPaused(ctx)
	if err != nil {
		m.log.Error("list paused sessions", "err", err)
		return
	}
	var ended []store.Session
	for _, rec := range paused {
		if now.Sub(rec.LastActivity) <= time.Duration(rec.IdleTimeoutMin)*time.Minute {
			continue
		}
		m.resumeMu.Lock() // not while it resumes
		cur, err := m.store.GetSession(ctx, rec.ID)
		if err == nil && cur.State == StatePaused {
			if err = m.endPaused(ctx, cur, idleReason(rec.IdleTimeoutMin)); err == nil {
				ended = append(ended, cur)
			}
		}
		m.resumeMu.Unlock()
		if err != nil {
			m.log.Error("end idle paused session", "session", rec.ID, "err", err)
		}
	}
	for _, rec := range ended {
		m.afterIdle(rec.ID, parseSettings(rec.Config))
	}
}

// SetIdleHook sets what runs after the reaper ends a session that asked for
// its transcript; nil for nothing.
func (m *Manager) SetIdleHook(h IdleHook) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.idleHook = h
}

// afterIdle runs the idle hook for a session the reaper has just ended.
func (m *Manager) afterIdle(id string, set settings) {
	m.mu.Lock()
	hook := m.idleHook
	m.mu.Unlock()
	if hook == nil || !set.EmailOnIdle || set.EmailTo == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.HookTimeout)
	defer cancel()
	rec, err := m.store.GetSession(ctx, id)
	if err != nil {
		m.log.Error("idle hook: read session", "session", id, "err", err)
		return
	}
	last, err := m.store.LastSeq(ctx, id)
	if err != nil {
		m.log.Error("idle hook: read session", "session", id, "err", err)
		return
	}
	hook(ctx, User{ID: rec.UserID}, viewOf(rec, last, time.Now()), set.EmailTo)
}

// StateCounts counts every session by state: the running ones as they are
// now, ended ones from the store. Every state is present, zero or not.
func (m *Manager) StateCounts(ctx context.Context) (map[string]int, error) {
	stored, err := m.store.CountByState(ctx)
	if err != nil {
		return nil, err
	}
	counts := make(map[string]int, len(States))
	for _, st := range States {
		counts[st] = 0
	}
	// Stored states of running sessions lag (busy is never stored); only
	// the final ones are taken from the store.
	counts[StateStopped] = stored[StateStopped]
	counts[StateError] = stored[StateError]
	counts[StatePaused] = stored[StatePaused]
	m.mu.Lock()
	running := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		running = append(running, s)
	}
	m.mu.Unlock()
	for _, s := range running {
		s.mu.Lock()
		st := s.rec.State
		s.mu.Unlock()
		counts[st]++
	}
	return counts, nil
}

// shutDown refuses new sessions, stops the reaper and the warm pool, and
// returns the sessions running now, for Close or Abandon to deal with.
func (m *Manager) shutDown() []*Session {
	m.mu.Lock()
	m.closing = true
	all := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		all = append(all, s)
	}
	m.mu.Unlock()
	if m.stopReaper != nil {
		m.stopReaper()
		<-m.reaperDone
	}
	m.pool.close()
	return all
}

// Abandon stops every sandbox and records nothing, leaving each session's
// files where they are: what a server killed with SIGKILL leaves behind (its
// sandboxes die with it). Tests use it to play that crash; the manager is
// unusable afterwards.
func (m *Manager) Abandon() {
	all := m.shutDown()
	for _, s := range all {
		s.cancel(errors.New("the server died"))
		s.mu.Lock()
		sb := s.sb
		s.mu.Unlock()
		if sb != nil {
			s.stopSandbox(sb)
		}
	}
}

// Close pauses every running session (or ends them, with EndOnClose) and
// stops the reaper.
func (m *Manager) Close(ctx context.Context) {
	all := m.shutDown()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Go(func() {
			if m.cfg.EndOnClose {
				s.terminate(StateStopped, 0, "the server is shutting down")
				return
			}
			// Paused, not ended: it resumes when the server is back.
			if err := m.pause(s, "the server is shutting down", true); err != nil {
				m.log.Error("pause at shutdown", "session", s.id, "err", err)
			}
		})
	}
	done := make(chan struct{})
	// closing is set, so ReapIdle adds nothing to reaped any more.
	go func() { wg.Wait(); m.reaped.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		m.log.Warn("shutdown deadline passed while stopping sessions", "err", ctx.Err())
	}
}

// Create starts a new session for user. The sandbox boots in the background;
// the returned view is in state creating.
func (m *Manager) Create(ctx context.Context, user User, req CreateRequest) (View, error) {
	c, err := req.validate(ctx, m.cfg.Agents, m.cfg.LLMClient)
	if err != nil {
		return View{}, err
	}
	prep, err := m.checkWorkspace(req, &c)
	if err != nil {
		return View{}, err
	}
	if err := m.checkFreeDisk(); err != nil {
		return View{}, err
	}
	rec, set := c.rec, c.set
	ag, err := m.newAgent(ctx, c.kind, rec, set, c.key, nil, nil)
	if err != nil {
		return View{}, invalid("%v", err)
	}

	now := time.Now().UTC()
	rec.ID = newSessionID()
	rec.UserID = user.ID
	rec.State = StateCreating
	rec.Sandbox = m.driver.Name()
	rec.Isolated = m.driver.Isolated()
	rec.CreatedAt, rec.LastActivity = now, now

	s := newSession(m.sessionDeps(rec.ID), rec, set, ag, c.key, logState{})
	s.prep = prep
	s.pooled = m.pool.take(set)
	err = m.admit(s)
	m.pool.poke() // refill, counting the session now admitted
	if err != nil {
		if s.pooled != nil {
			m.pool.discard(s.pooled) // never given back
		}
		return View{}, err
	}
	if err := m.persistNew(ctx, user, s); err != nil {
		m.forgetNew(s)
		return View{}, err
	}
	if err := m.sealKey(ctx, rec.ID, c.key); err != nil {
		m.forgetNew(s)
		return View{}, err
	}
	v := s.view()
	s.boot()
	return v, nil
}

// forgetNew drops a session that could not be recorded, and the pooled VM
// it took.
func (m *Manager) forgetNew(s *Session) {
	m.forget(s)
	if s.pooled != nil {
		m.pool.discard(s.pooled)
	}
}

func (m *Manager) forget(s *Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sessions[s.id] == s {
		delete(m.sessions, s.id)
	}
}

func (m *Manager) persistNew(ctx context.Context, user User, s *Session) error {
	if err := m.store.EnsureUser(ctx, user.ID, user.Email); err != nil {
		return err
	}
	if err := m.store.CreateSession(ctx, s.rec); err != nil {
		return err
	}
	return s.emitStatus("", "session created")
}

// Get returns a running session of user's; nil, false when it is not running.
// ErrNotFound when it does not exist or is someone else's.
func (m *Manager) Get(ctx context.Context, user User, id string) (*Session, bool, error) {
	m.mu.Lock()
	s, ok := m.sessions[id]
	m.mu.Unlock()
	if ok {
		if s.userID != user.ID {
			return nil, false, ErrNotFound
		}
		return s, true, nil
	}
	rec, err := m.store.GetSession(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && rec.UserID != user.ID) {
		return nil, false, ErrNotFound
	}
	return nil, false, err
}

// View returns one of user's sessions.
func (m *Manager) View(ctx context.Context, user User, id string) (View, error) {
	s, running, err := m.Get(ctx, user, id)
	if err != nil {
		return View{}, err
	}
	if running {
		return s.view(), nil
	}
	rec, err := m.store.GetSession(ctx, id)
	if err != nil {
		return View{}, err
	}
	return m.storedView(ctx, rec)
}

// storedView is the view of a session that does not run: ended, or paused.
func (m *Manager) storedView(ctx context.Context, rec store.Session) (View, error) {
	last, err := m.store.LastSeq(ctx, rec.ID)
	if err != nil {
		return View{}, err
	}
	v := viewOf(rec, last, time.Now())
	v.KeyNeeded = m.keyNeeded(ctx, rec)
	return v, nil
}

// List returns user's sessions, newest first, running ones with live state.
func (m *Manager) List(ctx context.Context, user User) ([]View, error) {
	recs, err := m.store.ListSessions(ctx, user.ID)
	if err != nil {
		return nil, err
	}
	views := make([]View, 0, len(recs))
	for _, rec := range recs {
		m.mu.Lock()
		s, running := m.sessions[rec.ID]
		m.mu.Unlock()
		if running {
			views = append(views, s.view())
			continue
		}
		v, err := m.storedView(ctx, rec)
		if err != nil {
			return nil, err
		}
		views = append(views, v)
	}
	return views, nil
}

// Input sends a user message to a session.
// A paused session is resumed first: the turn waits for its sandbox.
func (m *Manager) Input(ctx context.Context, user User, id, text string) error {
	if err := checkMessage(text); err != nil {
		return err
	}
	s, err := m.resumeFor(ctx, user, id, "")
	if err != nil {
		return err
	}
	err = s.input(text)
	if errors.Is(err, ErrEnded) {
		// It was pausing: once it has, it resumes for this message.
		<-s.done
		if s, err = m.resumeFor(ctx, user, id, ""); err != nil {
			return err
		}
		err = s.input(text)
	}
	return err
}

// Cancel ends the running turn of a session, if any.
func (m *Manager) Cancel(ctx context.Context, user User, id string) (bool, error) {
	s, running, err := m.Get(ctx, user, id)
	if err != nil || !running {
		return false, err
	}
	return s.cancelTurn(agent.ErrCancelled), nil
}

// Delete ends a session: its turn is cancelled, its sandbox stopped and its
// files removed. The record and transcript stay. Ending an ended session is
// not an error.
func (m *Manager) Delete(ctx context.Context, user User, id string) error {
	m.resumeMu.Lock() // not while it resumes
	defer m.resumeMu.Unlock()
	s, running, err := m.Get(ctx, user, id)
	if err != nil {
		return err
	}
	if running {
		s.terminate(StateStopped, 0, "ended by the user")
		return nil
	}
	rec, err := m.store.GetSession(ctx, id)
	if err != nil || rec.State != StatePaused {
		return err
	}
	return m.endPaused(ctx, rec, "ended by the user")
}

// Rename gives one of user's sessions a new name, running or not, and returns
// it as it is now. The name is checked like a new session's, but must not be
// empty.
func (m *Manager) Rename(ctx context.Context, user User, id, name string) (View, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return View{}, invalid("name must not be empty")
	}
	if err := validateName(name); err != nil {
		return View{}, err
	}
	s, running, err := m.Get(ctx, user, id)
	if err != nil {
		return View{}, err
	}
	if running {
		// The record and the store change under the session's lock, so a
		// concurrent state change cannot write back the old name.
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := m.store.Rename(ctx, id, name); err != nil {
			return View{}, err
		}
		s.rec.Name = name
		rec := s.rec
		return viewOf(rec, s.bus.LastSeq(), time.Now()), nil
	}
	if err := m.store.Rename(ctx, id, name); err != nil {
		return View{}, err
	}
	return m.View(ctx, user, id)
}

// Events returns stored events of one of user's sessions after seq.
func (m *Manager) Events(ctx context.Context, user User, id string, after int64, limit int) ([]store.Event, error) {
	if _, _, err := m.Get(ctx, user, id); err != nil {
		return nil, err
	}
	return m.store.Events(ctx, id, after, limit)
}

func newSessionID() string {
	var b [12]byte
	rand.Read(b[:])
	return "s_" + hex.EncodeToString(b[:])
}

// Agents are the kinds of agent sessions may ask for.
func (m *Manager) Agents() *agent.Registry { return m.cfg.Agents }

// newAgent builds the agent a session asked for.
// newAgent builds the agent a session runs: a new one, or one that goes on
// with a paused session's history and its own resume state.
func (m *Manager) newAgent(ctx context.Context, kind agent.Kind, rec store.Session, set settings, key llm.Secret,
	history []json.RawMessage, resume json.RawMessage) (agent.Agent, error) {
	return kind.New(ctx, agent.Settings{
		LLM:          llm.Config{Provider: rec.Provider, Model: rec.Model, APIKey: key, BaseURL: set.BaseURL, HTTPClient: m.cfg.LLMClient},
		SystemPrompt: set.SystemPrompt, Temperature: set.Temperature, MaxTokens: set.MaxTokens,
		ThinkingBudget: set.ThinkingBudget, MaxSteps: m.cfg.MaxSteps, MaxRetries: m.cfg.LLMRetries,
		History: history, Resume: resume, Logger: m.log,
	})
}

// sessionDeps is what the session with this id needs from the manager.
func (m *Manager) sessionDeps(id string) deps {
	return deps{
		store: m.store, driver: m.driver, log: m.log, observer: m.cfg.Observer,
		stopTimeout: m.cfg.StopTimeout, dir: m.sandboxDir(id), ended: m.forget, paused: m.onPaused,
		eventQuota: max(m.cfg.EventLogQuota, 0), diskMiB: m.cfg.DiskMiB,
	}
}

// onPaused forgets a session that paused, keeping its key for its resume.
func (m *Manager) onPaused(s *Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sessions[s.id] == s {
		delete(m.sessions, s.id)
	}
	if !s.key.Empty() {
		m.keys[s.id] = s.key
	}
}
