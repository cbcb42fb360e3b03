package session

import (
	"errors"
	"fmt"

	"github.com/execlaw/execlaw/internal/hostinfo"
	"github.com/execlaw/execlaw/internal/sandbox"
)

// admit checks the limits and registers s, atomically with respect to other
// creations so two requests cannot both take the last slot. Under pressure
// the warm pool gives up its VMs first.
func (m *Manager) admit(s *Session) error {
	for {
		m.mu.Lock()
		err := m.roomLocked(s.userID, s.settings)
		if err == nil {
			m.sessions[s.id] = s
		}
		m.mu.Unlock()
		var ule *UserLimitError
		var le *LimitError
		if err == nil || errors.As(err, &ule) || !errors.As(err, &le) || !m.pool.evictOne() {
			return err
		}
	}
}

// roomLocked checks the limits for one more sandbox of set: a session's of
// user, or a pooled one (user empty). Pooled VMs count like sessions. m.mu
// is held.
func (m *Manager) roomLocked(user string, set settings) error {
	if m.closing {
		return ErrClosing
	}
	pool, pooled := m.pool.stats(), m.pool.template()
	if len(m.sessions)+pool.Ready+pool.Booting >= m.cfg.MaxSessions {
		return &LimitError{fmt.Sprintf("this server runs at most %d sessions at once; end one to start another", m.cfg.MaxSessions)}
	}
	if user != "" {
		// One user may not take every slot.
		perUser, mine := m.cfg.MaxSessionsPerUser, 0
		if perUser <= 0 {
			perUser = m.cfg.MaxSessions
		}
		for _, o := range m.sessions {
			if o.userID == user {
				mine++
			}
		}
		if mine >= perUser {
			return &UserLimitError{Limit: perUser}
		}
	}
	if e, ok := m.driver.(sandbox.Elsewhere); ok && e.RunsElsewhere() {
		return nil // the cluster places and bounds them
	}
	mem, err := hostinfo.ReadMemory()
	if err != nil {
		return fmt.Errorf("read host memory: %w", err)
	}
	// Sandboxes still booting have not taken their memory yet; count it now.
	pending := pool.Booting * pooled.MemoryMiB
	for _, o := range m.sessions {
		if o.stateIs(StateCreating, StateBooting, StateResuming) {
			pending += o.settings.MemoryMiB
		}
	}
	need := set.MemoryMiB
	after := mem.UsedMiB() + int64(pending+need)
	if limit := float64(mem.TotalMiB) * m.cfg.MemoryLimitPercent / 100; float64(after) > limit {
		return &LimitError{fmt.Sprintf(
			"not enough host memory: %d MiB of %d MiB are in use and a new session needs %d MiB, which would pass the %.0f%% limit",
			mem.UsedMiB()+int64(pending), mem.TotalMiB, need, m.cfg.MemoryLimitPercent)}
	}
	// What is touched now is not all: idle VMs admitted now take their
	// memory later. Count what every sandbox may take.
	if r, ok := m.driver.(sandbox.MemoryReserver); ok {
		reserved := func(set settings) int {
			return r.ReservedMiB(sandbox.Spec{VCPUs: set.VCPUs, MemoryMiB: set.MemoryMiB})
		}
		committed := (pool.Ready + pool.Booting) * reserved(pooled)
		for _, o := range m.sessions {
			committed += reserved(o.settings)
		}
		overcommit := m.cfg.MemoryOvercommit
		if overcommit <= 0 {
			overcommit = 1
		}
		need := reserved(set)
		if limit := float64(mem.TotalMiB) * m.cfg.MemoryLimitPercent / 100 * overcommit; float64(committed+need) > limit {
			return &LimitError{fmt.Sprintf(
				"not enough host memory: the running sessions' VMs may use %d MiB and a new one %d MiB (its memory plus the VMM's), which would pass %.0f MiB (%.0f%% of %d MiB, overcommitted %gx)",
				committed, need, limit, m.cfg.MemoryLimitPercent, mem.TotalMiB, overcommit)}
		}
	}
	return nil
}
