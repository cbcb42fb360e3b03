package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/store"
)

// Session is one running session. Its goroutines (boot, turn) are counted in
// wg; terminate cancels ctx, waits for them, and only then frees the sandbox,
// so nothing can start using a sandbox that is being torn down.
type Session struct {
	deps           deps
	id             string
	userID         string
	idleTimeoutMin int
	settings       settings
	bus            *Bus
	agent          agent.Agent

	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	ready  chan struct{} // closed when booting has finished, well or not
	done   chan struct{} // closed when terminate has finished

	mu          sync.Mutex
	rec         store.Session // State, LastActivity, Usage, Error are kept current
	sb          sandbox.Sandbox
	env         agent.Environment
	bootErr     error
	turnCancel  context.CancelCauseFunc // non-nil while a turn runs
	terminating bool
	messages    int // stored conversation messages, the next one's index

	// key is the session's API key, for the manager to keep while it is
	// paused; resuming is how a paused session goes on (nil for a new one).
	key      llm.Secret
	resuming *resumeInfo
	pooled   *pooledVM // taken from the warm pool, to be claimed at boot
	prep     *wsPrep   // what a new session does to its workspace before it is ready (workspace.go)
}

// deps is what a session needs from the server around it.
type deps struct {
	store       *store.Store
	driver      sandbox.Driver
	log         *slog.Logger
	observer    Observer       // nil for none
	stopTimeout time.Duration  // bounds stopping the sandbox
	dir         string         // the sandbox's own host directory
	ended       func(*Session) // told once the session has ended or paused, to forget it
	paused      func(*Session) // told once it has paused, to keep its key
	eventQuota  int64          // bytes of event data its log may hold; 0: no bound
	diskMiB     int            // its VM's writable disk; 0: the driver's default
}

// logState is where a session's event log stands: its last event, the
// bytes of event data it holds, the messages of its conversation.
type logState struct {
	lastSeq, bytes int64
	messages       int
}

func newSession(d deps, rec store.Session, set settings, ag agent.Agent, key llm.Secret, log logState) *Session {
	ctx, cancel := context.WithCancelCause(context.Background())
	bus := NewBus(d.store, rec.ID, log.lastSeq)
	bus.observer = d.observer
	s := &Session{
		deps: d, id: rec.ID, userID: rec.UserID, idleTimeoutMin: rec.IdleTimeoutMin, settings: set,
		bus: bus, agent: ag, key: key, messages: log.messages,
		ctx: ctx, cancel: cancel, ready: make(chan struct{}), done: make(chan struct{}),
		rec: rec,
	}
	bus.SetQuota(d.eventQuota, log.bytes, func() { s.cancelTurn(ErrLogFull) })
	return s
}

func (s *Session) view() View {
	s.mu.Lock()
	rec := s.rec
	s.mu.Unlock()
	return viewOf(rec, s.bus.LastSeq(), time.Now())
}

func (s *Session) stateIs(states ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range states {
		if s.rec.State == st {
			return true
		}
	}
	return false
}

func (s *Session) idleSince(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rec.State != StateActive || s.terminating {
		return 0
	}
	return now.Sub(s.rec.LastActivity)
}

// setState records a state change and announces it.
func (s *Session) setState(state, phase, msg string) error {
	s.mu.Lock()
	if s.terminating && state != StateStopping {
		// Once the end has begun only terminate moves the state.
		s.mu.Unlock()
		return nil
	}
	s.rec.State = state
	s.mu.Unlock()
	if err := s.deps.store.SetState(context.Background(), s.id, state, ""); err != nil {
		return err
	}
	return s.emitStatus(phase, msg)
}

func (s *Session) emitStatus(phase, msg string) error {
	v := s.view()
	return s.bus.Emit(context.Background(), event.Status, event.StatusData{State: v.State, Uptime: v.Uptime, Phase: phase, Message: msg})
}

// boot starts the sandbox in the background.
func (s *Session) boot() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(s.ready)
		state, phase, msg := StateBooting, "start", "starting the sandbox"
		if s.resuming != nil {
			state, phase, msg = StateResuming, "resume", "resuming the session"
		}
		if err := s.setState(state, phase, msg); err != nil {
			s.deps.log.Error("record boot", "session", s.id, "err", err)
		}
		dir := s.deps.dir
		started := time.Now()
		sb, err := s.startSandbox(dir)
		took := time.Since(started)
		s.mu.Lock()
		if err != nil {
			s.bootErr = err
			stopping := s.terminating
			s.mu.Unlock()
			// A boot cut short by the session ending is no failure.
			if !stopping {
				s.observeBoot(took, err)
				s.deps.log.Error("sandbox failed to start", "session", s.id, "resuming", s.resuming != nil, "err", err)
				if s.resuming != nil {
					// Its files are still on its disk: it stays paused, to
					// try again, rather than end and lose them.
					go s.end(endPause, 0, "resuming failed: "+err.Error())
				} else {
					go s.terminate(StateError, 1, "the sandbox failed to start: "+err.Error())
				}
			}
			return
		}
		if s.terminating {
			// Ended while booting: terminate is waiting for us and will find
			// no sandbox, so this one is ours to stop.
			s.bootErr = ErrEnded
			s.mu.Unlock()
			s.stopSandbox(sb)
			return
		}
		s.sb = sb
		s.mu.Unlock()
		s.observeBoot(took, nil)
		if err := s.prepareWorkspace(sb); err != nil {
			s.failPrepare(sb, err)
			return
		}
		if err := s.setState(StateActive, "ready", "the sandbox is ready"); err != nil {
			s.deps.log.Error("record boot", "session", s.id, "err", err)
		}
		go s.watch(sb)
	}()
}

func (s *Session) observeBoot(took time.Duration, err error) {
	if o := s.deps.observer; o != nil {
		o.SandboxStarted(s.deps.driver.Name(), s.pooled != nil, took, err)
	}
}

// claim makes the pooled VM the session took its own: moved to the
// session's directory, told its host name, the time and fresh entropy.
// On failure the VM is stopped and gone.
func (s *Session) claim(spec sandbox.Spec) (sandbox.Sandbox, error) {
	vm := s.pooled
	c, ok := vm.sb.(sandbox.Claimable)
	err := func() error {
		if !ok {
			return errors.New(s.deps.driver.Name() + " sandboxes cannot be claimed")
		}
		if err := os.Remove(spec.Dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err // startSandbox made it, empty
		}
		if err := os.Rename(vm.dir, spec.Dir); err != nil {
			return err
		}
		spec.Movable = true
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		defer cancel()
		return c.Claim(ctx, spec)
	}()
	if err != nil {
		s.stopSandbox(vm.sb)
		os.RemoveAll(vm.dir)
		os.RemoveAll(spec.Dir)
		os.MkdirAll(spec.Dir, 0o700)
		s.pooled = nil
		return nil, err
	}
	_ = s.emitStatus("pool", "ready (from pool)")
	return vm.sb, nil
}

func (s *Session) startSandbox(dir string) (sandbox.Sandbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	spec := sandbox.Spec{
		SessionID: s.id, Dir: dir, VCPUs: s.settings.VCPUs, MemoryMiB: s.settings.MemoryMiB, DiskMiB: s.deps.diskMiB,
		Network: s.settings.Network,
		Progress: func(phase string) {
			_ = s.emitStatus(phase, "")
		},
	}
	var sb sandbox.Sandbox
	var err error
	switch {
	case s.resuming != nil:
		sb, err = s.resumeSandbox(spec)
	case s.pooled != nil:
		if sb, err = s.claim(spec); err != nil {
			s.deps.log.Warn("claiming a pooled VM failed: booting one", "session", s.id, "err", err)
			sb, err = s.deps.driver.Start(s.ctx, spec)
		}
	default:
		sb, err = s.deps.driver.Start(s.ctx, spec)
	}
	if err != nil {
		return nil, err
	}
	env := agent.Environment{
		Workspace: sb.Workspace(), Sandbox: s.deps.driver.Name(), Isolated: s.deps.driver.Isolated(), Network: s.settings.Network,
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	if h, err := sb.Guest().Health(ctx); err == nil {
		env.Kernel, env.Hostname = h.Kernel, h.Hostname
	}
	s.mu.Lock()
	s.env = env
	s.mu.Unlock()
	return sb, nil
}

func (s *Session) stopSandbox(sb sandbox.Sandbox) {
	ctx, cancel := context.WithTimeout(context.Background(), s.deps.stopTimeout)
	defer cancel()
	if err := sb.Stop(ctx); err != nil {
		s.deps.log.Error("stop sandbox", "session", s.id, "err", err)
	}
}

// watch turns a sandbox that exits on its own into a failed session.
func (s *Session) watch(sb sandbox.Sandbox) {
	select {
	case <-sb.Done():
		if err := sb.ExitError(); err != nil {
			if o := s.deps.observer; o != nil {
				o.SandboxExited(s.deps.driver.Name())
			}
			go s.terminate(StateError, 1, "the sandbox exited unexpectedly: "+err.Error())
		}
	case <-s.ctx.Done():
	}
}

// input starts a turn with the user's message.
func (s *Session) input(text string) error {
	if err := checkMessage(text); err != nil {
		return err
	}
	if s.bus.Full() {
		return ErrLogFull
	}
	s.mu.Lock()
	switch {
	case s.terminating || s.rec.State == StateStopped || s.rec.State == StateError:
		s.mu.Unlock()
		return ErrEnded
	case s.turnCancel != nil:
		s.mu.Unlock()
		return ErrBusy
	}
	ctx, cancel := context.WithCancelCause(s.ctx)
	s.turnCancel = cancel
	s.rec.LastActivity = time.Now().UTC()
	// Added under the lock while not terminating: terminate's Wait cannot
	// have started yet, so it will wait for this turn.
	s.wg.Add(1)
	s.mu.Unlock()

	msgID := fmt.Sprintf("u_%d", time.Now().UnixNano())
	if err := s.bus.Emit(ctx, event.UserMessage, event.UserMessageData{MessageID: msgID, Content: text}); err != nil {
		s.endTurn(cancel)
		s.wg.Done()
		return err
	}
	go s.runTurn(ctx, cancel, text)
	return nil
}

func (s *Session) runTurn(ctx context.Context, cancel context.CancelCauseFunc, text string) {
	defer s.wg.Done()
	defer func() {
		s.endTurn(cancel)
		_ = s.bus.Emit(context.Background(), event.AgentIdle, event.Empty{})
		if s.stateIs(StateActive) {
			_ = s.emitStatus("", "")
		}
	}()
	if err := s.bus.Emit(ctx, event.AgentBusy, event.Empty{}); err != nil {
		s.deps.log.Error("record turn start", "session", s.id, "err", err)
		return
	}
	select {
	case <-s.ready:
	case <-ctx.Done():
	}
	s.mu.Lock()
	sb, env, bootErr := s.sb, s.env, s.bootErr
	if sb != nil && s.rec.State == StateActive && ctx.Err() == nil {
		s.rec.State = StateBusy
	}
	s.mu.Unlock()
	if sb == nil || ctx.Err() != nil {
		reason := "the session ended before its sandbox was ready"
		if bootErr != nil && !errors.Is(bootErr, ErrEnded) {
			reason = "the sandbox failed to start: " + bootErr.Error()
		} else if c := context.Cause(ctx); c != nil && ctx.Err() != nil {
			reason = c.Error()
		}
		_ = s.bus.Emit(context.Background(), event.Error, event.ErrorData{Message: reason})
		return
	}
	_ = s.emitStatus("", "")
	if err := s.agent.Turn(ctx, sb, env, text, sessionSink{s}); errors.Is(err, ErrLogFull) {
		s.deps.log.Info("turn ended: the event log is full", "session", s.id)
	} else if err != nil {
		s.deps.log.Error("turn failed", "session", s.id, "err", err)
		_ = s.bus.Emit(context.Background(), event.Error, event.ErrorData{Message: "the turn could not be recorded: " + err.Error()})
	}
}

// endTurn marks the session free for the next message.
func (s *Session) endTurn(cancel context.CancelCauseFunc) {
	cancel(nil)
	s.mu.Lock()
	s.turnCancel = nil
	if s.rec.State == StateBusy {
		s.rec.State = StateActive
	}
	s.rec.LastActivity = time.Now().UTC()
	last := s.rec.LastActivity
	s.mu.Unlock()
	if err := s.deps.store.Touch(context.Background(), s.id, last); err != nil {
		s.deps.log.Error("record activity", "session", s.id, "err", err)
	}
}

// cancelTurn stops the running turn, giving why; false when none runs.
func (s *Session) cancelTurn(cause error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.turnCancel == nil {
		return false
	}
	s.turnCancel(cause)
	return true
}

// terminate ends the session in a final state (stopped or error). Concurrent
// calls wait for the first to finish; only the first returns true.
func (s *Session) terminate(final string, code int, reason string) bool {
	mode := endStop
	if final == StateError {
		mode = endError
	}
	return s.end(mode, code, reason)
}

// How a session object ends: the session ends (stopped, or in error), or it
// pauses (its sandbox saved, or stopped with its disk kept) to go on later
// as a new one.
type endMode int

const (
	endStop endMode = iota
	endError
	endPause
)

// end runs down the session object. Concurrent calls wait for the first to
// finish; only the first returns true.
func (s *Session) end(mode endMode, code int, reason string) bool {
	s.mu.Lock()
	if s.terminating {
		s.mu.Unlock()
		<-s.done
		return false
	}
	s.terminating = true
	s.mu.Unlock()
	defer close(s.done)

	state, why := StateStopping, "the session is ending: "
	if mode == endPause {
		state, why = StatePausing, "the session is pausing: "
	}
	if err := s.setState(state, "", reason); err != nil {
		s.deps.log.Error("record "+state, "session", s.id, "err", err)
	}
	s.cancel(errors.New(why + reason))
	s.wg.Wait() // boot and turn goroutines are gone after this
	actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := s.agent.Close(actx); err != nil {
		s.deps.log.Error("stop agent", "session", s.id, "err", err)
	}
	cancel()

	s.mu.Lock()
	sb := s.sb
	s.mu.Unlock()
	if mode == endPause {
		s.finishPause(sb, reason)
		return true
	}
	if sb != nil {
		s.stopSandbox(sb)
	}
	if err := os.RemoveAll(s.deps.dir); err != nil {
		s.deps.log.Error("remove sandbox directory", "session", s.id, "err", err)
	}
	final := StateStopped
	if mode == endError {
		final = StateError
	}

	s.mu.Lock()
	s.rec.State = final
	s.rec.EndedAt = time.Now().UTC()
	if final == StateError {
		s.rec.Error = reason
	}
	s.mu.Unlock()
	errMsg := ""
	if final == StateError {
		errMsg = reason
	}
	if err := s.deps.store.SetState(context.Background(), s.id, final, errMsg); err != nil {
		s.deps.log.Error("record end", "session", s.id, "err", err)
	}
	_ = s.emitStatus("", reason)
	_ = s.bus.Emit(context.Background(), event.Exit, event.ExitData{Code: code, Reason: reason})
	s.bus.CloseAll()
	s.deps.ended(s)
	s.deps.log.Info("session ended", "session", s.id, "state", final, "reason", reason)
	return true
}

// sessionSink is what the agent writes its turn into.
type sessionSink struct{ s *Session }

func (k sessionSink) Emit(ctx context.Context, typ string, data any) error {
	return k.s.bus.Emit(ctx, typ, data)
}

func (k sessionSink) AddUsage(ctx context.Context, u event.UsageTotals) (event.UsageTotals, error) {
	s := k.s
	s.mu.Lock()
	s.rec.Usage = s.rec.Usage.Add(store.Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens, CostUSD: u.CostUSD})
	total := s.rec.Usage
	s.mu.Unlock()
	if err := s.deps.store.SetUsage(context.WithoutCancel(ctx), s.id, total); err != nil {
		return event.UsageTotals{}, err
	}
	return event.UsageTotals{InputTokens: total.InputTokens, OutputTokens: total.OutputTokens, CostUSD: total.CostUSD}, nil
}

func (k sessionSink) SaveMessages(ctx context.Context, msgs []json.RawMessage) error {
	s := k.s
	s.mu.Lock()
	first := s.messages
	s.messages += len(msgs)
	s.mu.Unlock()
	return s.deps.store.AppendMessages(context.WithoutCancel(ctx), s.id, first, msgs)
}

// Subscribe registers a live reader of the session's events.
func (s *Session) Subscribe() *Subscription { return s.bus.Subscribe() }

// Emit appends an event to the session's log, for notices from outside the
// agent (and benchmarks of the event path).
func (s *Session) Emit(ctx context.Context, typ string, data any) error {
	return s.bus.Emit(ctx, typ, data)
}
