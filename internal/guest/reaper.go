package guest

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reaper collects zombies when this process is init (PID 1 of a VM or of a
// PID namespace): orphans are reparented to it, and nobody else will wait
// for them.
//
// A plain wait4(-1) loop would race with exec.Cmd.Wait and steal the exit
// status of commands the exec handler is waiting for. Instead the reaper
// peeks with waitid(P_ALL, WEXITED|WNOHANG|WNOWAIT), which reports a zombie
// without collecting it, and only reaps (wait4 on that pid) children that are
// not tracked. Commands are started through Start, under the same lock the
// reaper decides under, so a child cannot exit and be judged untracked before
// its pid is recorded. waitid reports one zombie at a time, so when the first
// one is tracked the reaper stops and waits: Done, called after cmd.Wait has
// collected it, pokes the reaper to look again.
type Reaper struct {
	log  *slog.Logger
	kick chan struct{}

	mu      sync.Mutex
	tracked map[int]struct{}
}

// NewReaper returns a reaper; call Run to start reaping.
func NewReaper(log *slog.Logger) *Reaper {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reaper{log: log, kick: make(chan struct{}, 1), tracked: make(map[int]struct{})}
}

// Start starts cmd and tracks its pid, so the reaper leaves it to cmd.Wait.
// Call Done once cmd.Wait has returned.
func (r *Reaper) Start(cmd *exec.Cmd) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	r.tracked[cmd.Process.Pid] = struct{}{}
	return nil
}

// Done stops tracking pid after its status has been collected.
func (r *Reaper) Done(pid int) {
	r.mu.Lock()
	delete(r.tracked, pid)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run reaps untracked children on every SIGCHLD until ctx ends.
func (r *Reaper) Run(ctx context.Context) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	defer signal.Stop(sig)
	for {
		r.reap()
		select {
		case <-ctx.Done():
			return
		case <-sig:
		case <-r.kick:
		}
	}
}

func (r *Reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil { // ECHILD: no children at all
			return
		}
		pid := siginfoPid(&info)
		if pid <= 0 { // WNOHANG and no zombie yet
			return
		}
		if _, ok := r.tracked[pid]; ok {
			return // cmd.Wait will collect it; Done wakes us afterwards
		}
		var ws unix.WaitStatus
		if _, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err != nil && !errors.Is(err, unix.EINTR) {
			r.log.Warn("reaping orphan", "pid", pid, "err", err)
			return
		}
		r.log.Debug("reaped orphan", "pid", pid, "status", int(ws))
	}
}

// siginfoPid reads si_pid, which x/sys/unix does not expose: it is the first
// field of the union after si_signo, si_errno and si_code, which the union's
// pointer alignment puts at offset 16 on 64-bit and 12 on 32-bit Linux.
func siginfoPid(info *unix.Siginfo) int {
	off := uintptr(12)
	if unsafe.Sizeof(uintptr(0)) == 8 {
		off = 16
	}
	return int(*(*int32)(unsafe.Add(unsafe.Pointer(info), off)))
}
