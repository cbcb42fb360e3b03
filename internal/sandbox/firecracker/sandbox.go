package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/vm"
)

// workspace is where the guest init puts the agent's working directory.
const workspace = "/workspace"

// Sandbox is one Firecracker microVM.
type Sandbox struct {
	log     *slog.Logger
	t       timeouts
	l       *layout
	drv     *Driver
	mc      MachineConfig
	api     *Client
	dial    guest.Dialer
	client  *guest.Client
	netProv NetworkProvider
	att     NetAttachment // nil without network

	cmd     *exec.Cmd // nil until the VMM is started
	pid     int
	logFile *os.File
	vmm     *vm.VMM // its cgroup and OOM score; nil until command

	exited  chan struct{} // closed once the VMM has been reaped
	waitErr error         // how it ended; written before exited is closed
	exit    sandbox.Exit  // Exited after exited closes, once host resources are released

	// fresh: the directory was empty (a first boot), so a failed start
	// removes the log too; createdDisk: this start made the writable disk,
	// so a failed start removes it. A resumed sandbox's disk is never
	// removed here.
	fresh, createdDisk bool

	pauseMu sync.Mutex // one Pause at a time

	releaseOnce sync.Once
	releaseErr  error // written inside releaseOnce
}

var (
	_ sandbox.Sandbox = (*Sandbox)(nil)
	_ sandbox.Pauser  = (*Sandbox)(nil)
)

// Guest implements sandbox.Sandbox.
func (s *Sandbox) Guest() *guest.Client { return s.client }

// Workspace implements sandbox.Sandbox.
func (s *Sandbox) Workspace() string { return workspace }

// Done implements sandbox.Sandbox. It is closed once the VMM has exited and
// the host resources (sockets, jail, network) have been released.
func (s *Sandbox) Done() <-chan struct{} { return s.exit.Done() }

// Instance asks the VMM for its state (GET /).
func (s *Sandbox) Instance(ctx context.Context) (InstanceInfo, error) {
	return s.api.DescribeInstance(ctx)
}

// ExitError implements sandbox.Sandbox.
func (s *Sandbox) ExitError() error { return s.exit.Err() }

// startVMM starts cmd, its output going to the capped log file.
func (s *Sandbox) startVMM(cmd *exec.Cmd) error {
	if !s.fresh {
		if err := trimLog(s.l.logPath); err != nil {
			return fmt.Errorf("log file: %w", err)
		}
	}
	f, err := os.OpenFile(s.l.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	if !s.fresh {
		// Where this run's output begins, after the earlier runs'.
		fmt.Fprintf(f, "\n[execlaw: firecracker started again at %s]\n", time.Now().UTC().Format(time.RFC3339))
	}
	w := sandbox.NewCappedWriter(f, maxLogBytes)
	cmd.Stdout, cmd.Stderr = w, w
	if s.att != nil {
		err = s.att.Start(cmd)
	} else {
		err = cmd.Start()
	}
	pid := 0
	if err == nil {
		pid = cmd.Process.Pid
	}
	s.vmm.Started(pid)
	if err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", filepath.Base(cmd.Path), err)
	}
	s.cmd, s.pid, s.logFile = cmd, cmd.Process.Pid, f
	go s.wait()
	return nil
}

func (s *Sandbox) wait() {
	err := s.cmd.Wait()
	if err == nil {
		err = errors.New("exit status 0")
	}
	s.logFile.Close() // Wait has finished copying the VMM's output
	s.waitErr = err
	crash := fmt.Errorf("firecracker: the VMM exited on its own: %v", err)
	if s.vmm.OOMKilled() { // read before release removes the cgroup
		crash = fmt.Errorf("firecracker: %s: %v", s.vmm.OOMReason(), err)
	}
	crash = withTail(crash, s.l.logPath)
	close(s.exited)
	if _, expected := s.exit.Expected(); expected {
		s.log.Info("firecracker exited", "pid", s.pid, "status", err)
	} else {
		s.log.Warn("firecracker exited", "pid", s.pid, "status", err)
	}
	s.release()
	s.exit.Exited(crash)
}

// hasExited reports whether the VMM has been reaped.
func (s *Sandbox) hasExited() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

// waitExited waits up to d for the VMM to be reaped.
func (s *Sandbox) waitExited(d time.Duration) bool {
	if s.hasExited() {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.exited:
		return true
	case <-t.C:
		return false
	}
}

func (s *Sandbox) exitStatus() error {
	<-s.exited
	return s.waitErr
}

// waitAPI polls GET / until the VMM's API answers.
func (s *Sandbox) waitAPI(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, s.t.apiReady)
	defer cancel()
	tick := time.NewTicker(s.t.poll)
	defer tick.Stop()
	var lastErr error // the last failure not caused by the overall deadline
	for {
		info, err := s.api.DescribeInstance(ctx)
		if err == nil {
			s.log.Debug("firecracker API up", "version", info.VMMVersion, "state", info.State)
			return nil
		}
		if ctx.Err() == nil || lastErr == nil {
			lastErr = err
		}
		select {
		case <-s.exited:
			return fmt.Errorf("firecracker exited before its API answered: %v", s.exitStatus())
		case <-ctx.Done():
			if perr := parent.Err(); perr != nil {
				return fmt.Errorf("waiting for the firecracker API: %w", perr)
			}
			return fmt.Errorf("the firecracker API did not answer within %s: %v", s.t.apiReady, lastErr)
		case <-tick.C:
		}
	}
}

// waitGuest polls the guest's Health over vsock until it answers. connected
// is called once, when a vsock connection to the guest first succeeds (the
// kernel is up and the guest init listens).
func (s *Sandbox) waitGuest(parent context.Context, timeout time.Duration, connected func()) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	var once sync.Once
	probe := guest.NewClient(func(ctx context.Context) (net.Conn, error) {
		c, err := s.dial(ctx)
		if err == nil {
			once.Do(connected)
		}
		return c, err
	})
	defer probe.Close()
	tick := time.NewTicker(s.t.poll)
	defer tick.Stop()
	var lastErr error // the last failure not caused by the overall deadline
	for {
		pctx, pcancel := context.WithTimeout(ctx, s.t.probe)
		h, err := probe.Health(pctx)
		pcancel()
		if err == nil {
			if h.Version != guest.Version {
				return fmt.Errorf("the guest speaks protocol %q, want %q", clip(h.Version, 32), guest.Version)
			}
			return nil
		}
		if ctx.Err() == nil || lastErr == nil {
			lastErr = err
		}
		select {
		case <-s.exited:
			return fmt.Errorf("firecracker exited while the guest booted: %v", s.exitStatus())
		case <-ctx.Done():
			if perr := parent.Err(); perr != nil {
				return fmt.Errorf("waiting for the guest: %w", perr)
			}
			return fmt.Errorf("the guest did not answer within %s: %v", timeout, lastErr)
		case <-tick.C:
		}
	}
}

// Stop implements sandbox.Sandbox. The shutdown runs to completion (each step
// bounded, under 30s in all at worst) even if ctx ends first; ctx bounds only
// how long this call waits for it.
func (s *Sandbox) Stop(ctx context.Context) error {
	return s.exit.Stop(ctx, "firecracker", s.stop)
}

func (s *Sandbox) stop() error {
	var err error
	if !s.hasExited() {
		err = s.shutdown()
	}
	if s.hasExited() {
		<-s.exit.Done() // the wait goroutine releases everything, with bounded steps
	} else {
		s.release()
	}
	s.log.Info("firecracker stopped", "pid", s.pid)
	return errors.Join(err, s.releaseErr)
}

// shutdown ends the VMM, politest first: the guest's own shutdown (its init
// then reboots, which with reboot=k makes Firecracker exit), then
// SendCtrlAltDel (the same reboot, through the guest kernel's keyboard
// driver), then SIGKILL to the process group.
func (s *Sandbox) shutdown() error {
	if err := sandbox.RequestExit(s.exited, s.t.shutdown, s.client.Shutdown); err != nil {
		s.log.Debug("guest shutdown request failed", "err", err)
	}
	if s.hasExited() {
		return nil
	}

	s.log.Info("the guest did not reboot; sending Ctrl+Alt+Del")
	ctrlAltDel := func(ctx context.Context) error { return s.api.Action(ctx, ActionSendCtrlAltDel) }
	if err := sandbox.RequestExit(s.exited, s.t.ctrlAltDel, ctrlAltDel); err != nil {
		s.log.Debug("SendCtrlAltDel failed", "err", err)
	}
	if s.hasExited() {
		return nil
	}

	s.log.Warn("firecracker still running; killing it", "pid", s.pid)
	s.kill()
	if !s.waitExited(s.t.kill) {
		return fmt.Errorf("firecracker: pid %d did not exit after SIGKILL", s.pid)
	}
	return nil
}

// kill SIGKILLs the VMM's process group and the VMM itself.
func (s *Sandbox) kill() {
	if s.cmd == nil || s.hasExited() {
		return // reaped: the pid may belong to someone else now
	}
	_ = syscall.Kill(-s.pid, syscall.SIGKILL)
	_ = s.cmd.Process.Kill() // pidfd-based, so safe even if it raced with the reap
}

// release frees every host resource but the VMM process and the session's
// writable disk and log, which stay for the session manager (a stopped
// session can resume on its disk): clients, sockets, the jail, the network.
func (s *Sandbox) release() {
	s.releaseOnce.Do(func() {
		if s.client != nil {
			s.client.Close()
		}
		if s.api != nil {
			s.api.Close()
		}
		var errs []error
		if s.l.socks != nil {
			s.l.socks.Close()
			if s.l.jailBase == "" {
				// Guest-initiated vsock listeners would be v.sock_PORT; the
				// driver creates none, but remove any that exist.
				extra, _ := filepath.Glob(filepath.Join(s.l.socks.Dir(), vsockSockName+"_*"))
				for _, p := range append([]string{s.l.socks.Path(apiSockName), s.l.socks.Path(vsockSockName)}, extra...) {
					if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
						errs = append(errs, err)
					}
				}
			}
		}
		if s.l.jailBase != "" {
			// Hard links only: removing them leaves the shared images alone.
			if err := os.RemoveAll(s.l.jailBase); err != nil {
				errs = append(errs, fmt.Errorf("removing the jail: %w", err))
			}
		}
		if s.att != nil {
			ctx, cancel := context.WithTimeout(context.Background(), s.t.teardown)
			if err := s.netProv.Teardown(ctx, s.att); err != nil {
				errs = append(errs, fmt.Errorf("network teardown: %w", err))
			}
			cancel()
		}
		// The VMM has exited (or is killed with whatever else is in it).
		if err := s.vmm.Release(); err != nil {
			errs = append(errs, fmt.Errorf("removing the VM's cgroup: %w", err))
		}
		s.releaseErr = errors.Join(errs...)
		if s.releaseErr != nil {
			s.log.Error("releasing sandbox resources", "err", s.releaseErr)
		}
	})
}

// abort undoes a Start or Restore that failed at any point: the VMM is
// killed and reaped, everything is released, and the files a first boot
// created are removed (a resumed sandbox's disk and log stay). It returns
// err with the end of the VMM's log added.
func (s *Sandbox) abort(err error) error {
	s.exit.Expect(sandbox.ExitStop)
	if s.cmd != nil {
		s.kill()
		if s.waitExited(s.t.kill) {
			<-s.exit.Done()
		} else {
			s.log.Error("firecracker did not exit after SIGKILL", "pid", s.pid)
		}
		err = withTail(err, s.l.logPath)
	}
	s.release()
	var created []string
	if s.createdDisk {
		created = append(created, s.l.rwHost)
	}
	if s.fresh {
		created = append(created, s.l.logPath)
	}
	for _, p := range created {
		if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	if s.releaseErr != nil {
		err = errors.Join(err, s.releaseErr)
	}
	return err
}
