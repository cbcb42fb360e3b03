package session

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/execlaw/execlaw/internal/event"
)

// DefaultDiskCheckInterval is how often the free space of the data
// directory is looked at while sessions run.
const DefaultDiskCheckInterval = 10 * time.Second

// freeDisk is the space an unprivileged writer can still use where dir is.
func freeDisk(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// diskUsage is what the files under dir take on disk (allocated blocks, so a
// sparse disk counts for what the guest wrote, not its size).
func diskUsage(dir string) uint64 {
	var total uint64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // gone while walking: it uses nothing
		}
		if info, err := d.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				total += uint64(st.Blocks) * 512
			}
		}
		return nil
	})
	return total
}

// checkFreeDisk refuses a new session when the data directory's disk is
// below the floor: sandboxes grow there, and so does the event log.
func (m *Manager) checkFreeDisk() error {
	if m.cfg.MinFreeDisk == 0 {
		return nil
	}
	free, err := freeDisk(m.cfg.DataDir)
	if err != nil {
		return err
	}
	if free < m.cfg.MinFreeDisk {
		return &LimitError{fmt.Sprintf("the host's disk is almost full: %s free for the data directory, under the %s floor (--min-free-disk); end sessions or free space",
			bytesWords(free), bytesWords(m.cfg.MinFreeDisk))}
	}
	return nil
}

// guardDisk ends the running session that takes the most disk when free
// space has fallen below the floor, one per check: the guest that fills its
// disk, or the agent that fills the log, stops before the host's disk does.
func (m *Manager) guardDisk() {
	if m.cfg.MinFreeDisk == 0 {
		return
	}
	free, err := freeDisk(m.cfg.DataDir)
	if err != nil {
		m.log.Warn("disk guard", "err", err)
		return
	}
	if free >= m.cfg.MinFreeDisk {
		return
	}
	m.mu.Lock()
	var biggest *Session
	var most uint64
	for _, s := range m.sessions {
		if u := diskUsage(s.deps.dir); biggest == nil || u > most {
			biggest, most = s, u
		}
	}
	if m.closing {
		biggest = nil
	}
	if biggest != nil {
		m.reaped.Add(1)
	}
	m.mu.Unlock()
	if biggest == nil {
		m.log.Warn("the data directory's disk is below its floor, and no session runs", "free", free, "floor", m.cfg.MinFreeDisk)
		return
	}
	reason := fmt.Sprintf("the host's disk is almost full (%s free, floor %s): this session, the one using the most disk (%s), was ended to protect the host; its transcript is kept",
		bytesWords(free), bytesWords(m.cfg.MinFreeDisk), bytesWords(most))
	m.log.Warn("ending a session: disk below its floor", "session", biggest.id, "free", free, "usage", most)
	go func() {
		defer m.reaped.Done()
		if err := biggest.bus.Emit(biggest.ctx, event.Error, event.ErrorData{Message: reason}); err != nil && !errors.Is(err, ErrLogFull) {
			m.log.Error("disk guard: record", "session", biggest.id, "err", err)
		}
		biggest.terminate(StateStopped, 0, reason)
	}()
}

// bytesWords writes a size for people.
func bytesWords(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}
