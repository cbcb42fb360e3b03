package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/guest/vminit"
)

// runVMInit is the guest as a microVM's init: boot the root file system,
// serve the control API until told to shut down, then end the VM. It never
// returns: PID 1 exiting would panic the kernel.
func runVMInit() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx := context.Background()
	// Reap from the start: anything orphaned during boot is ours too.
	reaper := guest.NewReaper(log)
	go reaper.Run(ctx)

	b, err := vminit.Boot(ctx, log)
	if err != nil {
		log.Error("boot failed", "err", err)
		vminit.PowerOff(log, "boot failed")
	}
	ln, err := vminit.Listen(ctx, log, b.Config)
	if err != nil {
		log.Error("control channel", "err", err)
		vminit.PowerOff(log, "no control channel")
	}
	b.Ready()
	sctx, stop := context.WithCancel(ctx)
	srv := guest.NewServer(guest.ServerConfig{
		Workspace: "/workspace", Home: "/root", Logger: log, OnShutdown: stop, Reaper: reaper, Boot: &b.Times,
		Init: vminit.Initializer(log), SyncWrites: true,
	})
	log.Info("execlaw-guest serving", "channel", b.Config.Channel, "kernelMs", b.Times.KernelMs, "initMs", b.Times.InitMs)
	if err := srv.Serve(sctx, ln); err != nil {
		log.Error("serve", "err", err)
	}
	vminit.PowerOff(log, "shutdown requested")
}
