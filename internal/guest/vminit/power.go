package vminit

import (
	"log/slog"

	"golang.org/x/sys/unix"
)

// PowerOff syncs and unmounts what it can, then ends the VM. It never
// returns. A reboot request, not a power-off, is what ends the VM under both
// VMMs: QEMU runs with -no-reboot and Firecracker exits on a guest reboot,
// while Firecracker has no ACPI power-off at all.
func PowerOff(log *slog.Logger, why string) {
	log.Info("powering off", "why", why)
	unix.Sync()
	for _, m := range []string{"/workspace", "/run/execlaw/rw", "/"} {
		unix.Mount("", m, "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
	}
	unix.Sync()
	for {
		unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
		unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
}
