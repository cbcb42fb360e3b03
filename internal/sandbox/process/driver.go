// Package process is the sandbox driver that runs execlaw-guest as a plain
// host process. It is NOT an isolation boundary: the agent's commands run as
// the server's user on the server's filesystem. It exists for hosts without a
// usable VMM, and for tests.
//
// When the server runs as root, each guest starts as PID 1 of its own PID
// namespace, so killing the guest makes the kernel kill everything the agent
// started. Otherwise the guest kills its process groups on shutdown, and a
// command that left its process group (setsid) can outlive a guest that was
// killed outright.
package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/sandbox"
)

const (
	// GuestBinaryName is the file name FindGuestBinary looks for.
	GuestBinaryName = "execlaw-guest"
	// GuestBinaryEnv overrides where FindGuestBinary looks.
	GuestBinaryEnv = "EXECLAW_GUEST_BIN"

	defaultStartTimeout = 15 * time.Second
	guestPath           = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

	// guestSockName is the guest's control socket, in the sandbox directory.
	guestSockName = "guest.sock"
	// maxGuestLogBytes caps guest.log: a guest that logs without end must not
	// fill the host's disk.
	maxGuestLogBytes = 1 << 20
	// guestLogTail bounds the end of guest.log carried in a Start error.
	guestLogTail = 2 << 10
)

// Config configures the driver.
type Config struct {
	// GuestBinary is the execlaw-guest executable (see FindGuestBinary).
	GuestBinary string
	Logger      *slog.Logger
	// StartTimeout bounds how long Start waits for the guest to answer;
	// 0 means 15s.
	StartTimeout time.Duration
	// NoPIDNamespace skips the PID namespace even when running as root (it is
	// also skipped automatically when the kernel refuses one).
	NoPIDNamespace bool
}

// Driver starts process sandboxes.
type Driver struct {
	cfg Config
	log *slog.Logger
}

var _ sandbox.Driver = (*Driver)(nil)

// New checks cfg and returns a driver.
func New(cfg Config) (*Driver, error) {
	if cfg.GuestBinary == "" {
		return nil, errors.New("process driver: no guest binary configured")
	}
	abs, err := filepath.Abs(cfg.GuestBinary)
	if err != nil {
		return nil, fmt.Errorf("process driver: %w", err)
	}
	if err := checkExecutable(abs); err != nil {
		return nil, fmt.Errorf("process driver: guest binary: %w", err)
	}
	cfg.GuestBinary = abs
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = defaultStartTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{cfg: cfg, log: log.With("driver", "process")}, nil
}

// Name implements sandbox.Driver.
func (d *Driver) Name() string { return "process" }

// Isolated implements sandbox.Driver: this driver is not a security boundary.
func (d *Driver) Isolated() bool { return false }

// Start implements sandbox.Driver.
func (d *Driver) Start(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	progress := func(phase string) {
		if spec.Progress != nil {
			spec.Progress(phase)
		}
	}
	if spec.Dir == "" {
		return nil, errors.New("process driver: spec has no Dir")
	}
	dir, err := filepath.Abs(spec.Dir)
	if err != nil {
		return nil, fmt.Errorf("process driver: %w", err)
	}
	ws := filepath.Join(dir, "workspace")
	if err := os.MkdirAll(ws, 0o755); err != nil {
		return nil, fmt.Errorf("process driver: workspace: %w", err)
	}
	log := d.log.With("session", spec.SessionID)

	// The guest binds a relative socket path when the absolute one would be
	// too long for a socket address (see command).
	sock, err := sandbox.OpenSocketDir(dir, len(guestSockName))
	if err != nil {
		return nil, fmt.Errorf("process driver: socket directory: %w", err)
	}
	logPath := filepath.Join(dir, "guest.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		closeSocket(sock)
		return nil, fmt.Errorf("process driver: guest log: %w", err)
	}
	guestLog := sandbox.NewCappedWriter(logFile, maxGuestLogBytes)
	listen := "unix:" + sock.BindPath(guestSockName)

	progress("process")
	pidNS := os.Geteuid() == 0 && !d.cfg.NoPIDNamespace
	cmd := d.command(dir, ws, listen, guestLog, pidNS)
	err = cmd.Start()
	if err != nil && pidNS && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL)) {
		// Root without CAP_SYS_ADMIN (some containers): carry on without.
		log.Warn("no PID namespace for the guest; falling back to process-group kill", "err", err)
		pidNS = false
		cmd = d.command(dir, ws, listen, guestLog, pidNS)
		err = cmd.Start()
	}
	if err != nil {
		logFile.Close()
		closeSocket(sock)
		return nil, fmt.Errorf("process driver: starting guest: %w", err)
	}
	log.Info("guest started", "pid", cmd.Process.Pid, "pidns", pidNS, "dir", dir)

	sb := &Sandbox{
		log:       log,
		cmd:       cmd,
		pid:       cmd.Process.Pid,
		pidNS:     pidNS,
		sock:      sock,
		workspace: ws,
		logPath:   logPath,
		client:    guest.NewClient(sock.Dialer(guestSockName)),
	}
	go sb.wait(logFile)

	progress("guest-api")
	if err := sb.waitReady(ctx, d.cfg.StartTimeout); err != nil {
		sb.kill()
		// Bounded: the child was SIGKILLed, so it is only being reaped.
		select {
		case <-sb.exit.Done():
		case <-time.After(5 * time.Second):
			log.Error("guest did not exit after SIGKILL", "pid", sb.pid)
		}
		sb.release()
		if tail := sandbox.LogTail(logPath, guestLogTail, 0); tail != "" {
			err = fmt.Errorf("%w; guest log:\n%s", err, tail)
		}
		return nil, fmt.Errorf("process driver: %w", err)
	}
	return sb, nil
}

func (d *Driver) command(dir, ws, listen string, out io.Writer, pidNS bool) *exec.Cmd {
	args := []string{"--listen", listen, "--workspace", ws}
	if pidNS {
		args = append(args, "--private-proc")
	}
	cmd := exec.Command(d.cfg.GuestBinary, args...)
	cmd.Dir = dir // a relative socket path (see SocketDir.BindPath) resolves here
	// Never the server's environment: it holds API keys and other secrets.
	cmd.Env = []string{"PATH=" + guestPath, "HOME=" + ws, "LANG=C.UTF-8"}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.WaitDelay = time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// The guest dies with the server. Linux ties this to the thread that
		// forked; the Go runtime does not retire threads except for goroutines
		// that exit while locked to one, which this code never does.
		Pdeathsig: syscall.SIGKILL,
	}
	if pidNS {
		// A mount namespace too, so the guest can mount a /proc of its own
		// PID namespace (--private-proc) without touching the host's: it
		// walks /proc to kill what a command left running.
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWPID | syscall.CLONE_NEWNS
	}
	return cmd
}

// waitReady polls Health until the guest answers, exits, or time runs out.
func (s *Sandbox) waitReady(parent context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		h, err := s.client.Health(actx)
		acancel()
		if err == nil {
			if h.Version != guest.Version {
				return fmt.Errorf("guest speaks protocol %q, want %q", h.Version, guest.Version)
			}
			return nil
		}
		lastErr = err
		select {
		case <-s.exit.Done():
			return fmt.Errorf("guest exited before answering: %v", s.waitErr)
		case <-ctx.Done():
			if err := parent.Err(); err != nil {
				return fmt.Errorf("waiting for the guest: %w", err)
			}
			return fmt.Errorf("guest did not answer within %s: %v", timeout, lastErr)
		case <-tick.C:
		}
	}
}
