package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/vm"
)

// Sandbox is one running QEMU VM.
type Sandbox struct {
	d       *Driver
	id, dir string
	spec    sandbox.Spec
	boot    guest.BootConfig // what the guest booted with (a restored one: its network now)
	cmd     *exec.Cmd
	logs    *logs // QEMU's capped output files, closed once it has exited
	net     vm.NetAttachment
	channel *guest.SerialChannel // virtio-serial, reached in socks, or
	socks   *sandbox.SocketDir
	cid     uint32 // the vhost-vsock context id
	client  *guest.Client
	vmm     *vm.VMM // QEMU's cgroup and OOM score
	timings map[string]time.Duration

	exit    sandbox.Exit // Exited once QEMU has been reaped
	waitErr error        // how QEMU exited; written before exit.Done is closed

	mu       sync.Mutex
	released bool
}

const (
	// shutdownGrace bounds asking the guest to power off and waiting for
	// QEMU to exit.
	shutdownGrace = 8 * time.Second
	// killWait bounds waiting for a SIGKILLed QEMU to be reaped.
	killWait = 10 * time.Second
	// teardownTimeout bounds removing the VM's network.
	teardownTimeout = 15 * time.Second
)

// Guest is the control-protocol client.
func (s *Sandbox) Guest() *guest.Client { return s.client }

// Workspace is where the agent works inside the VM.
func (s *Sandbox) Workspace() string { return "/workspace" }

// Done is closed when QEMU has exited.
func (s *Sandbox) Done() <-chan struct{} { return s.exit.Done() }

// PID is QEMU's process id.
func (s *Sandbox) PID() int { return s.cmd.Process.Pid }

// Timings is how long each boot phase took: prepare, vmm, kernel, init, ready.
func (s *Sandbox) Timings() map[string]time.Duration { return s.timings }

// ExitError says why QEMU exited on its own; nil before it exits and after Stop.
func (s *Sandbox) ExitError() error { return s.exit.Err() }

func (s *Sandbox) wait() {
	err := s.cmd.Wait()
	s.logs.Close() // Wait has copied all QEMU wrote
	s.waitErr = err
	msg := "the VM exited"
	if s.vmm.OOMKilled() {
		// Read before release removes the cgroup, and said first: it is
		// why QEMU got the SIGKILL the status shows.
		msg = s.vmm.OOMReason()
	}
	if err != nil {
		msg += ": " + err.Error()
	}
	if tail := s.logTail(); tail != "" {
		msg += " (" + tail + ")"
	}
	s.exit.Exited(errors.New(msg))
}

// hasExited reports whether QEMU has been reaped.
func (s *Sandbox) hasExited() bool {
	select {
	case <-s.exit.Done():
		return true
	default:
		return false
	}
}

// logTail is the end of QEMU's own log and the guest console, bounded: they
// explain a failed boot. They are shown to the user, never parsed.
func (s *Sandbox) logTail() string {
	s.mu.Lock()
	dir := s.dir // Claim moves it
	s.mu.Unlock()
	var parts []string
	for _, name := range []string{"qemu.log", "console.log"} {
		if t := sandbox.LogTail(filepath.Join(dir, name), 600, 0); t != "" {
			parts = append(parts, name+": "+strings.Join(strings.Fields(t), " "))
		}
	}
	return strings.Join(parts, "; ")
}

// waitSocket waits for QEMU to create the control socket. The file exists
// from QEMU's bind, a moment before its listen: waitGuest allows for that.
func (s *Sandbox) waitSocket(ctx context.Context, name string) error {
	path := s.socks.Path(name)
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-s.exit.Done():
			return fmt.Errorf("qemu exited at start: %v (%s)", s.waitErr, s.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("qemu did not open its control socket within 30s (%s)", s.logTail())
		case <-tick.C:
		}
	}
}

// waitGuest waits for the guest API to answer. Over virtio-serial one
// request is enough: the channel holds it until the guest opens its end.
// Over vsock a connection is refused until the guest listens, so it is tried
// again until the deadline.
func (s *Sandbox) waitGuest(ctx context.Context, timeout time.Duration) (guest.Health, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if s.cid != 0 {
		return s.pollGuest(ctx, timeout)
	}
	type result struct {
		h   guest.Health
		err error
	}
	res := make(chan result, 1)
	go func() {
		for {
			h, err := s.client.Health(ctx)
			// QEMU creates the socket file (bind) a moment before it
			// listens, and a dial in between is refused: try again.
			if err != nil && errors.Is(err, syscall.ECONNREFUSED) && ctx.Err() == nil {
				select {
				case <-time.After(10 * time.Millisecond):
					continue
				case <-ctx.Done():
				}
			}
			res <- result{h, err}
			return
		}
	}()
	select {
	case r := <-res:
		if r.err != nil {
			if ctx.Err() != nil {
				return guest.Health{}, fmt.Errorf("the guest did not answer within %s (%s)", timeout, s.logTail())
			}
			return guest.Health{}, fmt.Errorf("guest: %w", r.err)
		}
		return r.h, nil
	case <-s.exit.Done():
		return guest.Health{}, fmt.Errorf("the VM exited while booting: %v (%s)", s.waitErr, s.logTail())
	}
}

// Stop shuts the VM down and frees everything it holds. The guest is asked
// to power off first, so its disk is clean; QEMU is killed if it does not
// exit in time. The shutdown runs to completion (each step bounded) even if
// ctx ends first; ctx bounds only how long this call waits for it.
func (s *Sandbox) Stop(ctx context.Context) error {
	return s.exit.Stop(ctx, "qemu", s.stop)
}

func (s *Sandbox) stop() error {
	if !s.hasExited() {
		if err := sandbox.RequestExit(s.exit.Done(), shutdownGrace, s.client.Shutdown); err != nil {
			s.d.log.Debug("guest shutdown request failed", "session", s.id, "err", err)
		}
	}
	s.kill()
	var err error
	if !s.hasExited() {
		err = fmt.Errorf("qemu: pid %d did not exit after SIGKILL", s.cmd.Process.Pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	defer cancel()
	return errors.Join(err, s.release(ctx))
}

// kill ends QEMU and anything in its process group, and waits a while for
// QEMU to be reaped.
func (s *Sandbox) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exit.Done():
		return // reaped: its pid, and so its group's, may already be someone else's
	default:
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-s.exit.Done():
	case <-time.After(killWait):
		s.d.log.Error("qemu did not exit after SIGKILL", "session", s.id, "pid", s.cmd.Process.Pid)
	}
}

// release frees host resources; safe to call more than once.
func (s *Sandbox) release(ctx context.Context) error {
	s.mu.Lock()
	if s.released {
		s.mu.Unlock()
		return nil
	}
	s.released = true
	s.mu.Unlock()
	if s.client != nil {
		s.client.Close()
	}
	if s.channel != nil {
		s.channel.Close()
	}
	if s.socks != nil {
		s.socks.Close() // after the channel: that ends any dial it holds up
	}
	var err error
	if s.net != nil {
		err = s.d.cfg.Network.Teardown(ctx, s.net)
	}
	// After kill: QEMU has been reaped, and anything left in its cgroup
	// is killed with it.
	err = errors.Join(err, s.vmm.Release())
	os.Remove(filepath.Join(s.dir, ctlSockName))
	os.Remove(filepath.Join(s.dir, qmpSockName))
	// The writable disk stays: the session's directory is its owner's to
	// remove, and a paused (or cold-paused) session boots on it again.
	return err
}

func (s *Sandbox) pollGuest(ctx context.Context, timeout time.Duration) (guest.Health, error) {
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		h, err := s.client.Health(actx)
		cancel()
		if err == nil {
			return h, nil
		}
		if s.channel != nil {
			// A restored guest may still hold the channel session of the
			// host it was saved with. Connecting anew makes QEMU tell it
			// the host went and came back, which ends that session.
			s.channel.Close()
		}
		select {
		case <-s.exit.Done():
			return guest.Health{}, fmt.Errorf("the VM exited while booting: %v (%s)", s.waitErr, s.logTail())
		case <-ctx.Done():
			return guest.Health{}, fmt.Errorf("the guest did not answer within %s: %v (%s)", timeout, err, s.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
