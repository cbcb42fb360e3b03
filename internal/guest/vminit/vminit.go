// Package vminit is what execlaw-guest does as a microVM's init before it
// serves the control API: mount the basic file systems, load the kernel
// modules from the initramfs, assemble the root overlay (read-only base plus
// the session's writable disk), switch into it, and set up host name,
// network and DNS from the kernel command line. Everything here runs once,
// as PID 1, inside the guest.
package vminit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/execlaw/execlaw/internal/guest"
)

// Labels of the two disks, set by the host when it makes them.
const (
	BaseLabel = "execlaw-base"
	RWLabel   = "execlaw-rw"
)

// Booted is the guest after Boot: its configuration and how long it took.
type Booted struct {
	Config guest.BootConfig
	Times  guest.BootTimes
	start  time.Time
}

// Boot prepares the guest. On error the caller should power off: PID 1 must
// not exit, and there is nothing to serve.
func Boot(ctx context.Context, log *slog.Logger) (*Booted, error) {
	b := &Booted{start: time.Now()}
	if err := mountEarly(); err != nil {
		return nil, err
	}
	b.Times.KernelMs = uptimeMs()
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return nil, err
	}
	b.Config, err = guest.ParseBootConfig(string(cmdline))
	if err != nil {
		return nil, err
	}
	if err := loadModules(log, string(cmdline)); err != nil {
		return nil, err
	}
	if err := mountRoot(ctx, log); err != nil {
		return nil, err
	}
	if err := setHostname(b.Config.Hostname); err != nil {
		return nil, err
	}
	if err := configureNetwork(log, b.Config); err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	return b, nil
}

// Ready records that the control API is listening.
func (b *Booted) Ready() {
	b.Times.InitMs = time.Since(b.start).Milliseconds()
}

func mountEarly() error {
	for _, m := range []struct{ src, dst, fstype, data string }{
		{"devtmpfs", "/dev", "devtmpfs", "mode=0755"},
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
		{"tmpfs", "/run", "tmpfs", "mode=0755"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, unix.MS_NOSUID, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	return nil
}

func uptimeMs() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return 0
	}
	return ts.Nano() / 1e6
}

// moduleParams collects "module.param=value" arguments from the kernel
// command line for one module, as modprobe would: the kernel applies them
// only to built-in code, and these modules are loaded later.
func moduleParams(cmdline, module string) string {
	module = strings.ReplaceAll(module, "-", "_")
	var params []string
	for _, f := range strings.Fields(cmdline) {
		name, rest, ok := strings.Cut(f, ".")
		if ok && strings.ReplaceAll(name, "-", "_") == module && strings.Contains(rest, "=") {
			params = append(params, rest)
		}
	}
	return strings.Join(params, " ")
}

// loadModules loads the initramfs's modules in their dependency order.
func loadModules(log *slog.Logger, cmdline string) error {
	order, err := os.ReadFile("/lib/modules/load-order")
	if errors.Is(err, os.ErrNotExist) {
		return nil // a kernel with everything built in
	}
	if err != nil {
		return err
	}
	for _, p := range strings.Fields(string(order)) {
		name := strings.TrimSuffix(filepath.Base(p), ".ko")
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), moduleParams(cmdline, name), 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("load module %s: %w", name, err)
		}
		log.Debug("module loaded", "module", name)
	}
	return nil
}

// findDisk waits for the block device whose ext4 label is label.
func findDisk(ctx context.Context, label string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		devs, _ := filepath.Glob("/sys/block/vd*")
		for _, d := range devs {
			dev := "/dev/" + filepath.Base(d)
			if ext4Label(dev) == label {
				return dev, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no disk labelled %s appeared", label)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ext4Label reads the volume name from an ext4 superblock.
func ext4Label(dev string) string {
	f, err := os.Open(dev)
	if err != nil {
		return ""
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return ""
	}
	if sb[0x38] != 0x53 || sb[0x39] != 0xEF { // ext2/3/4 magic
		return ""
	}
	return string(bytes.TrimRight(sb[0x78:0x88], "\x00"))
}

// mountRoot assembles the root overlay and makes it /: the base image is the
// read-only lower layer shared by every VM, the session's disk holds the
// upper layer, so the guest can change anything while the base stays intact.
func mountRoot(ctx context.Context, log *slog.Logger) error {
	base, err := findDisk(ctx, BaseLabel)
	if err != nil {
		return err
	}
	rw, err := findDisk(ctx, RWLabel)
	if err != nil {
		return err
	}
	for _, d := range []string{"/mnt/base", "/mnt/rw", "/newroot"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount(base, "/mnt/base", "ext4", unix.MS_RDONLY, "noload"); err != nil {
		return fmt.Errorf("mount base %s: %w", base, err)
	}
	if err := unix.Mount(rw, "/mnt/rw", "ext4", unix.MS_NOATIME, ""); err != nil {
		return fmt.Errorf("mount writable disk %s: %w", rw, err)
	}
	for _, d := range []string{"/mnt/rw/upper", "/mnt/rw/work"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	opts := "lowerdir=/mnt/base,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work"
	if err := unix.Mount("overlay", "/newroot", "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	// Keep the layers reachable under the new root's /run (for a clean
	// unmount at power-off), and move the early mounts across.
	unix.Unmount("/run", unix.MNT_DETACH)
	if err := unix.Mount("tmpfs", "/newroot/run", "tmpfs", unix.MS_NOSUID, "mode=0755"); err != nil {
		return fmt.Errorf("mount /run: %w", err)
	}
	for _, m := range []struct{ from, to string }{
		{"/mnt/rw", "/newroot/run/execlaw/rw"}, {"/mnt/base", "/newroot/run/execlaw/base"},
		{"/dev", "/newroot/dev"}, {"/proc", "/newroot/proc"}, {"/sys", "/newroot/sys"},
	} {
		if err := os.MkdirAll(m.to, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.from, m.to, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s: %w", m.from, err)
		}
	}
	freeInitramfs()
	if err := os.Chdir("/newroot"); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	for _, m := range []struct{ src, dst, fstype, data string }{
		{"tmpfs", "/tmp", "tmpfs", "mode=1777"},
		{"devpts", "/dev/pts", "devpts", "mode=0620,ptmxmode=0666"},
		{"tmpfs", "/dev/shm", "tmpfs", "mode=1777"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, unix.MS_NOSUID, m.data); err != nil {
			log.Warn("mount", "path", m.dst, "err", err)
		}
	}
	return os.MkdirAll("/workspace", 0o755)
}

// freeInitramfs deletes the initramfs's files, like switch_root: they would
// otherwise hold memory for the VM's whole life. Mount points are skipped.
func freeInitramfs() {
	for _, p := range []string{"/init", "/lib", "/mnt"} {
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil {
			os.RemoveAll(p)
		}
	}
}

func setHostname(name string) error {
	if name == "" {
		name = "execlaw"
	}
	if err := unix.Sethostname([]byte(name)); err != nil {
		return err
	}
	return os.WriteFile("/etc/hostname", []byte(name+"\n"), 0o644)
}
