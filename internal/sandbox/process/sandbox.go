package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/sandbox"
)

const (
	// shutdownGrace bounds asking the guest to stop and waiting for it to.
	shutdownGrace = 3 * time.Second
	// killWait bounds waiting for a SIGKILLed guest to be reaped.
	killWait = 5 * time.Second
)

// Sandbox is one running execlaw-guest process.
type Sandbox struct {
	log       *slog.Logger
	cmd       *exec.Cmd
	pid       int
	pidNS     bool
	sock      *sandbox.SocketDir
	workspace string
	logPath   string
	client    *guest.Client

	exit    sandbox.Exit // Exited once the guest has been reaped
	waitErr error        // how it ended; written before exit.Done is closed
}

var _ sandbox.Sandbox = (*Sandbox)(nil)

// Guest implements sandbox.Sandbox.
func (s *Sandbox) Guest() *guest.Client { return s.client }

// Workspace implements sandbox.Sandbox. For this driver the guest's view and
// the host's are the same absolute directory.
func (s *Sandbox) Workspace() string { return s.workspace }

// Done implements sandbox.Sandbox.
func (s *Sandbox) Done() <-chan struct{} { return s.exit.Done() }

// PIDNamespace reports whether the guest runs as PID 1 of its own PID
// namespace (so nothing it started can outlive it).
func (s *Sandbox) PIDNamespace() bool { return s.pidNS }

// ExitError implements sandbox.Sandbox.
func (s *Sandbox) ExitError() error { return s.exit.Err() }

// Stop implements sandbox.Sandbox. The shutdown itself runs to completion
// (bounded, a few seconds at most) even if ctx ends first; ctx only bounds how
// long this call waits for it.
func (s *Sandbox) Stop(ctx context.Context) error {
	return s.exit.Stop(ctx, "process sandbox", s.stop)
}

func (s *Sandbox) stop() error {
	var err error
	select {
	case <-s.exit.Done():
	default:
		// Ask first: without a PID namespace, the guest's own shutdown is what
		// kills the process groups the agent started.
		if rerr := sandbox.RequestExit(s.exit.Done(), shutdownGrace, s.client.Shutdown); rerr != nil {
			s.log.Debug("guest shutdown request failed", "err", rerr)
		}
		s.kill()
		select {
		case <-s.exit.Done():
		case <-time.After(killWait):
			err = fmt.Errorf("process sandbox: guest pid %d did not exit after SIGKILL", s.pid)
		}
	}
	s.release()
	s.log.Info("guest stopped", "pid", s.pid)
	return err
}

// kill SIGKILLs the guest's process group and the guest itself. As init of a
// PID namespace, its death makes the kernel kill everything else inside.
func (s *Sandbox) kill() {
	select {
	case <-s.exit.Done():
		return // reaped: the pid may already belong to someone else
	default:
	}
	_ = syscall.Kill(-s.pid, syscall.SIGKILL)
	_ = s.cmd.Process.Kill() // pidfd-based, so safe even if it raced with the reap
}

// release frees host resources other than the process.
func (s *Sandbox) release() {
	s.client.Close()
	closeSocket(s.sock)
}

// closeSocket stops dialing the guest's socket and removes it.
func closeSocket(sock *sandbox.SocketDir) {
	sock.Close()
	_ = os.Remove(sock.Path(guestSockName))
}

func (s *Sandbox) wait(logFile *os.File) {
	err := s.cmd.Wait()
	if err == nil {
		err = errors.New("exit status 0")
	}
	s.waitErr = err
	logFile.Close() // Wait has finished copying the guest's output
	s.log.Info("guest exited", "pid", s.pid, "status", err)
	s.exit.Exited(fmt.Errorf("process sandbox: guest exited on its own: %w", err))
}
