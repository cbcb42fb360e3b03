// Command execlaw-guest is the daemon inside every sandbox: it serves the
// guest control protocol (exec, files, stats, shutdown) and, when it is PID 1,
// reaps orphaned processes. With --pod it is a Kubernetes container's
// entrypoint and serves the same API over TLS to the holder of the
// session's token.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/execlaw/execlaw/internal/guest"
)

func main() {
	// Started by the kernel as a VM's /init: no arguments, PID 1.
	if os.Getpid() == 1 && len(os.Args) == 1 {
		runVMInit()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "execlaw-guest:", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("execlaw-guest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", getenv("EXECLAW_GUEST_LISTEN"), "control API address: unix:PATH (vsock:PORT and serial:DEVICE are reserved); with --pod, HOST:PORT (default :7600)")
	workspace := fs.String("workspace", "/workspace", "directory commands run in and relative paths resolve against; created if missing")
	debug := fs.Bool("debug", false, "log at debug level")
	privateProc := fs.Bool("private-proc", false, "mount a /proc of this PID namespace (for a sandbox started in new PID and mount namespaces, as init)")
	pod := fs.Bool("pod", false, "serve as a Kubernetes container's entrypoint: TLS on TCP, every connection authenticated with the session's token")
	secretDir := fs.String("secret-dir", guest.DefaultPodSecretDir, "with --pod: directory holding the session's "+
		guest.PodTokenFile+", "+guest.PodCertFile+" and "+guest.PodKeyFile)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *pod {
		if *privateProc {
			return errors.New("--private-proc does not go with --pod: a container has its own /proc")
		}
		if *listen == "" {
			*listen = ":" + strconv.Itoa(guest.PodPort)
		}
	} else if *listen == "" {
		return errors.New("--listen is required")
	}

	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ws, err := filepath.Abs(*workspace)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(ws, 0o755); err != nil {
		return fmt.Errorf("workspace: %w", err)
	}
	var ln net.Listener
	if *pod {
		ln, err = listenPod(ctx, *listen, *secretDir, log)
	} else {
		ln, err = guest.Listen(*listen)
	}
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var reaper *guest.Reaper
	pid1 := os.Getpid() == 1
	if *privateProc {
		if err := guest.MountPrivateProc(); err != nil {
			return fmt.Errorf("--private-proc: %w", err)
		}
	}
	if *pod && !pid1 {
		// Something else is the container's init (a runtime's tini, or the
		// pause process of a shared PID namespace): adopting our orphans
		// ourselves still reaps them, and keeps a daemonized server a
		// descendant, so its port stays listed.
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("--pod: become a child subreaper: %w", err)
		}
	}
	if pid1 || *pod {
		reaper = guest.NewReaper(log)
		rctx, stopReaper := context.WithCancel(context.Background())
		defer stopReaper()
		go reaper.Run(rctx)
	}

	srv := guest.NewServer(guest.ServerConfig{
		Workspace:  ws,
		Logger:     log,
		OnShutdown: cancel, // same path as SIGTERM: Serve kills every process group and returns
		Home:       getenv("HOME"),
		Reaper:     reaper,
	})
	log.Info("execlaw-guest serving", "listen", ln.Addr().String(), "pod", *pod, "workspace", ws, "pid1", pid1, "version", guest.Version)
	if err := srv.Serve(ctx, ln); err != nil {
		return err
	}
	log.Info("execlaw-guest stopped")
	return nil
}

// listenPod loads the session's secrets and listens for the host. A guest
// whose secrets are missing or wrong must not start: it could only serve
// nobody, or everybody.
func listenPod(ctx context.Context, addr, secretDir string, log *slog.Logger) (net.Listener, error) {
	if _, port, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("--listen %q: with --pod, want HOST:PORT: %w", addr, err)
	} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return nil, fmt.Errorf("--listen %q: with --pod, want HOST:PORT with a numeric port", addr)
	}
	cred, err := guest.LoadPodCredentials(secretDir)
	if err != nil {
		return nil, fmt.Errorf("--pod: %w", err)
	}
	return guest.ListenPod(ctx, addr, cred, log)
}
