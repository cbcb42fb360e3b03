// Command execlaw-guest is the daemon inside every sandbox: it serves the
// guest control protocol (exec, files, stats, shutdown) and, when it is PID 1,
// reaps orphaned processes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

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
	listen := fs.String("listen", getenv("EXECLAW_GUEST_LISTEN"), "control API address: unix:PATH (vsock:PORT and serial:DEVICE are reserved)")
	workspace := fs.String("workspace", "/workspace", "directory commands run in and relative paths resolve against; created if missing")
	debug := fs.Bool("debug", false, "log at debug level")
	privateProc := fs.Bool("private-proc", false, "mount a /proc of this PID namespace (for a sandbox started in new PID and mount namespaces, as init)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *listen == "" {
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
	ln, err := guest.Listen(*listen)
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
	if pid1 {
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
	log.Info("execlaw-guest serving", "listen", *listen, "workspace", ws, "pid1", pid1, "version", guest.Version)
	if err := srv.Serve(ctx, ln); err != nil {
		return err
	}
	log.Info("execlaw-guest stopped")
	return nil
}
