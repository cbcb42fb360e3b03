// Package firecracker is the sandbox driver that runs each session in a
// Firecracker microVM, optionally under Firecracker's jailer.
//
// The driver talks to Firecracker's REST API on its --api-sock Unix socket
// (api.go), boots the guest image (uncompressed vmlinux, the execlaw
// initramfs, the shared read-only base rootfs and a per-session sparse
// writable disk), and reaches the guest's control API over hybrid vsock
// (vsock.go): a Unix socket on the host, AF_VSOCK port 1024 in the guest.
// A sandbox pauses into a Firecracker snapshot in its directory, and a new
// VMM restores it from there (snapshot.go).
package firecracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/image"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/vm"
)

// Config configures the driver.
type Config struct {
	// Binary is the firecracker executable.
	Binary string
	// JailerBinary, when set, runs Firecracker through the jailer: chrooted
	// under the session directory, as JailerUID/JailerGID. Needs root.
	JailerBinary string
	// JailerUID and JailerGID are what the jailer drops to; both must be
	// non-zero when JailerBinary is set.
	JailerUID, JailerGID int
	// JailerArgs are extra jailer flags (e.g. --cgroup-version 2 --cgroup
	// cpu.max=...), placed before the "--" that ends the jailer's own.
	JailerArgs []string
	// Image is the guest image; Firecracker boots Image.KernelELF.
	Image  image.Boot
	Logger *slog.Logger
	// BootTimeout bounds how long Start waits, after InstanceStart, for the
	// guest's control API to answer; 0 means 60s.
	BootTimeout time.Duration
	// Network provides TAP devices; nil means sessions get no network, even
	// when they ask for "full".
	Network NetworkProvider
	// Resources confines each Firecracker: a cgroup of its own sized
	// ReservedMiB (made by the jailer, through its --cgroup flags, when
	// jailed), and a raised OOM score.
	Resources vm.Resources
}

const (
	defaultBootTimeout = 60 * time.Second
	defaultVCPUs       = 1
	defaultMemoryMiB   = 512
	maxVCPUs           = 32 // machine-config's vcpu_count maximum

	apiSockName   = "fc.sock"
	vsockSockName = "v.sock"
	// longestSockName bounds the socket names the host dials (see
	// sandbox.OpenSocketDir).
	longestSockName = max(len(apiSockName), len(vsockSockName))
	logName         = "firecracker.log"
	diskName        = "rw.ext4"
	jailDirName     = "jail"
	// A snapshot (Pause) is these two files in the session directory.
	vmstateName = "fc.vmstate"
	memName     = "fc.mem"

	// guestCID is the guest's vsock context id. Hybrid vsock never touches
	// the host's vhost-vsock, so CIDs need not be unique across VMs; 3 is
	// the first one that is not reserved.
	guestCID = 3

	// Drive and interface ids (Firecracker allows letters, digits and _).
	// The guest sees drives in the order they are added: vda is the base,
	// vdb the writable disk (labelled execlaw-rw by vm.NewWritableDisk).
	driveRootfs = "rootfs"
	driveRW     = "rw"
	ifaceID     = "eth0"

	// baseBootArgs: the console is the VMM's stdout (firecracker.log);
	// reboot=k makes a guest reboot a keyboard-controller reset, which is
	// what ends Firecracker (it has no ACPI, so a power-off would leave the
	// VMM running); panic=1 turns a guest panic into that reboot; there is
	// no PCI bus to probe.
	baseBootArgs = "console=ttyS0 reboot=k panic=1 pci=off quiet"
)

// timeouts are the driver's internal bounds; tests shorten them.
type timeouts struct {
	apiReady   time.Duration // the VMM's API to answer after exec
	poll       time.Duration // between readiness probes
	probe      time.Duration // one guest Health probe while booting
	shutdown   time.Duration // guest Shutdown until the VMM exits
	ctrlAltDel time.Duration // SendCtrlAltDel until the VMM exits
	kill       time.Duration // reaping after SIGKILL
	teardown   time.Duration // network Teardown
	sync       time.Duration // the guest's sync before a pause
}

var defaultTimeouts = timeouts{
	apiReady:   10 * time.Second,
	poll:       20 * time.Millisecond,
	probe:      2 * time.Second,
	shutdown:   5 * time.Second,
	ctrlAltDel: 3 * time.Second,
	kill:       5 * time.Second,
	teardown:   15 * time.Second,
	sync:       10 * time.Second,
}

// Driver starts Firecracker sandboxes.
type Driver struct {
	cfg Config
	log *slog.Logger
	t   timeouts
}

var (
	_ sandbox.Driver         = (*Driver)(nil)
	_ sandbox.MemoryReserver = (*Driver)(nil)
	_ sandbox.Restorer       = (*Driver)(nil)
)

// New checks cfg and returns a driver.
func New(cfg Config) (*Driver, error) {
	var err error
	if cfg.Binary == "" {
		return nil, errors.New("firecracker driver: no firecracker binary configured")
	}
	if cfg.Binary, err = executable(cfg.Binary); err != nil {
		return nil, fmt.Errorf("firecracker driver: %w", err)
	}
	if cfg.JailerBinary != "" {
		if cfg.JailerBinary, err = executable(cfg.JailerBinary); err != nil {
			return nil, fmt.Errorf("firecracker driver: jailer: %w", err)
		}
		// The jailer refuses any other exec file.
		if !strings.Contains(filepath.Base(cfg.Binary), "firecracker") {
			return nil, fmt.Errorf("firecracker driver: the jailer only runs a binary whose name contains \"firecracker\", not %q", filepath.Base(cfg.Binary))
		}
		if cfg.JailerUID <= 0 || cfg.JailerGID <= 0 {
			return nil, errors.New("firecracker driver: the jailer needs a non-root JailerUID and JailerGID")
		}
		if os.Geteuid() != 0 {
			return nil, errors.New("firecracker driver: the jailer needs root")
		}
		if cfg.Resources.Cgroups != nil {
			for _, a := range cfg.JailerArgs {
				if name, _, _ := strings.Cut(a, "="); name == "--cgroup" || name == "--cgroup-version" || name == "--parent-cgroup" {
					return nil, fmt.Errorf("firecracker driver: JailerArgs has %s, but the driver gives the jailer each VM's cgroup itself", name)
				}
			}
		}
	}
	if err := cfg.Image.Check(true); err != nil {
		return nil, fmt.Errorf("firecracker driver: %w", err)
	}
	// Absolute, because Firecracker runs in the session directory.
	for _, p := range []*string{&cfg.Image.KernelELF, &cfg.Image.Initramfs, &cfg.Image.Rootfs} {
		if *p, err = filepath.Abs(*p); err != nil {
			return nil, fmt.Errorf("firecracker driver: %w", err)
		}
	}
	if cfg.BootTimeout <= 0 {
		cfg.BootTimeout = defaultBootTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{cfg: cfg, log: log.With("driver", "firecracker"), t: defaultTimeouts}, nil
}

func executable(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%s is not an executable file", abs)
	}
	return abs, nil
}

// Name implements sandbox.Driver.
func (d *Driver) Name() string { return "firecracker" }

// Isolated implements sandbox.Driver: a microVM is a security boundary.
func (d *Driver) Isolated() bool { return true }

// ReservedMiB implements sandbox.MemoryReserver: the guest's memory plus
// Firecracker's overhead, the limit of its cgroup.
func (d *Driver) ReservedMiB(spec sandbox.Spec) int {
	mc, _ := machineConfig(spec)
	return mc.MemSizeMiB + vm.FirecrackerOverheadMiB(mc.MemSizeMiB)
}

// layout is where one VM's files are: on the host, and as Firecracker names
// them (inside the jail, or relative to its working directory).
type layout struct {
	dir      string // the session directory
	rwHost   string // the writable disk, on the host
	logPath  string
	jailBase string // the jailer's --chroot-base-dir; empty without the jailer
	jailRoot string // the jail's root on the host; empty without the jailer
	socks    *sandbox.SocketDir

	// Firecracker's names.
	apiSock, vsockUDS, kernel, initrd, rootfs, rw string
	vmstate, mem                                  string // a snapshot's files
}

// vmmSide is where the file Firecracker knows as the snapshot file name is
// on the host: in the jail when jailed, else in the session directory.
// Snapshots are kept in the session directory (the jail goes with the VMM).
func (l *layout) vmmSide(name string) string {
	if l.jailRoot != "" {
		return filepath.Join(l.jailRoot, name)
	}
	return filepath.Join(l.dir, name)
}

// Start implements sandbox.Driver. With spec.Resume it boots afresh on the
// writable disk already in spec.Dir.
func (d *Driver) Start(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	sb, err := d.launch(ctx, spec, nil)
	if err != nil {
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	return sb, nil
}

// launch starts a VM for spec: booting it, or, with from set, restoring the
// one saved in that snapshot (see Restore).
func (d *Driver) launch(ctx context.Context, spec sandbox.Spec, from *sandbox.Snapshot) (*Sandbox, error) {
	progress := func(phase string) {
		if spec.Progress != nil {
			spec.Progress(phase)
		}
	}
	if spec.Dir == "" {
		return nil, errors.New("spec has no Dir")
	}
	dir, err := filepath.Abs(spec.Dir)
	if err != nil {
		return nil, err
	}
	mc, err := machineConfig(spec)
	if err != nil {
		return nil, err
	}
	var wantNet bool
	switch spec.Network {
	case "full":
		wantNet = d.cfg.Network != nil
	case "none", "":
	default:
		return nil, fmt.Errorf("network %q: want full or none", spec.Network)
	}
	id := vmID(spec.SessionID)
	log := d.log.With("session", spec.SessionID)
	if spec.Network == "full" && !wantNet {
		log.Warn("session asked for network but the driver has no network provider; starting without")
	}

	l := &layout{dir: dir, rwHost: filepath.Join(dir, diskName), logPath: filepath.Join(dir, logName)}
	if from != nil {
		// All that can be checked before anything starts: all but the
		// VMM's version, which only a running VMM tells.
		if err := sandbox.CheckCompat(*from, d.Name(), d.compat(l, mc, wantNet, from.Compat[compatVersion])); err != nil {
			return nil, err
		}
	}
	// Resuming, the directory holds what an earlier run left.
	resuming := spec.Resume || from != nil
	if resuming {
		if err := d.clearLeftovers(ctx, l); err != nil {
			return nil, err
		}
	}
	sb := &Sandbox{
		log:     log,
		t:       d.t,
		l:       l,
		drv:     d,
		mc:      mc,
		netProv: d.cfg.Network,
		fresh:   !resuming,
		exited:  make(chan struct{}),
	}

	// The writable disk: sparse, so this never copies anything. A restore
	// needs the one it saved (CheckCompat found it); a boot afresh after a
	// pause or a restart reuses the one there.
	switch _, err := os.Stat(l.rwHost); {
	case from != nil:
	case spec.Resume && err == nil:
		// The disk moves on: no snapshot taken before may be restored.
		if err := removeStaleSnapshot(dir); err != nil {
			return nil, err
		}
		log.Info("booting afresh on the existing writable disk")
	default:
		if spec.Resume {
			log.Warn("no writable disk to resume on; starting with an empty one", "err", err)
			if err := removeStaleSnapshot(dir); err != nil {
				return nil, err
			}
		}
		if err := vm.NewWritableDisk(ctx, l.rwHost, spec.DiskMiB); err != nil {
			return nil, fmt.Errorf("writable disk: %w", err)
		}
		sb.createdDisk = true
	}
	if err := d.placeFiles(l, id); err != nil {
		return nil, sb.abort(err)
	}
	if from != nil && l.jailRoot != "" {
		if err := d.linkSnapshot(l); err != nil {
			return nil, sb.abort(err)
		}
	}
	sb.api = newClient(l.socks.Dialer(apiSockName))
	sb.dial = vsockDialer(l.socks.Dialer(vsockSockName), guest.DefaultVsockPort, defaultHandshakeTimeout)
	sb.client = guest.NewClient(sb.dial)

	if wantNet {
		att, err := d.cfg.Network.Setup(ctx, spec.SessionID)
		if err != nil {
			return nil, sb.abort(fmt.Errorf("network setup: %w", err))
		}
		sb.att = att
	}
	var bootArgs string
	if from == nil {
		var err error
		if bootArgs, err = kernelArgs(sb.att); err != nil {
			return nil, sb.abort(err)
		}
	}

	progress("vmm")
	cmd, vmm, err := d.command(l, id, spec, mc)
	if err != nil {
		return nil, sb.abort(err)
	}
	sb.vmm = vmm
	if err := sb.startVMM(cmd); err != nil {
		return nil, sb.abort(err)
	}
	log.Info("firecracker started", "pid", sb.pid, "jailed", l.jailBase != "", "dir", dir, "restore", from != nil)

	if err := sb.waitAPI(ctx); err != nil {
		return nil, sb.abort(err)
	}
	if from != nil {
		if err := d.restore(ctx, sb, *from, progress); err != nil {
			return nil, sb.abort(err)
		}
		log.Info("guest restored")
		return sb, nil
	}
	progress("configure")
	if err := d.configure(ctx, sb, mc, bootArgs, spec.SessionID); err != nil {
		return nil, sb.abort(err)
	}
	progress("kernel")
	if err := sb.api.Action(ctx, ActionInstanceStart); err != nil {
		return nil, sb.abort(err)
	}
	if err := sb.waitGuest(ctx, d.cfg.BootTimeout, func() { progress("guest-api") }); err != nil {
		return nil, sb.abort(err)
	}
	log.Info("guest ready")
	return sb, nil
}

// placeFiles fills in l: the jail (if any), the socket directory, and the
// names Firecracker gets.
func (d *Driver) placeFiles(l *layout, id string) error {
	if d.cfg.JailerBinary != "" {
		l.jailBase = filepath.Join(l.dir, jailDirName)
		root, err := d.prepareJail(l.jailBase, id, l.rwHost)
		if err != nil {
			return err
		}
		l.jailRoot = root
		if l.socks, err = sandbox.OpenSocketDir(root, longestSockName); err != nil {
			return err
		}
		// Paths as the chrooted Firecracker sees them.
		l.apiSock, l.vsockUDS = "/"+apiSockName, "/"+vsockSockName
		l.kernel, l.initrd, l.rootfs, l.rw = "/"+jailKernel, "/"+jailInitrd, "/"+jailRootfs, "/"+jailRW
		l.vmstate, l.mem = "/"+vmstateName, "/"+memName
		return nil
	}
	var err error
	if l.socks, err = sandbox.OpenSocketDir(l.dir, longestSockName); err != nil {
		return err
	}
	// Firecracker runs in l.dir, so a relative name works where the absolute
	// path would not fit in a socket address.
	l.apiSock, l.vsockUDS = l.socks.BindPath(apiSockName), l.socks.BindPath(vsockSockName)
	im := d.cfg.Image
	l.kernel, l.initrd, l.rootfs, l.rw = im.KernelELF, im.Initramfs, im.Rootfs, l.rwHost
	// Regular files have no socket address limit: absolute paths.
	l.vmstate, l.mem = filepath.Join(l.dir, vmstateName), filepath.Join(l.dir, memName)
	return nil
}

// command is the VMM's command line: firecracker itself (without the
// server's ambient capabilities), or the jailer (which drops privileges
// itself), and its confinement: a cgroup it starts in (the jailer makes it
// and moves into it itself) and a raised OOM score.
func (d *Driver) command(l *layout, id string, spec sandbox.Spec, mc MachineConfig) (*exec.Cmd, *vm.VMM, error) {
	var cmd *exec.Cmd
	var vmm *vm.VMM
	total := d.ReservedMiB(spec)
	if l.jailBase != "" {
		var cgArgs []string
		vmm, cgArgs = d.cfg.Resources.Jailed(id, "Firecracker", mc.MemSizeMiB, total, mc.VCPUCount)
		cmd = exec.Command(d.cfg.JailerBinary, d.jailerArgs(id, l.jailBase, cgArgs)...)
	} else {
		argv, err := vm.WithoutAmbientCaps([]string{d.cfg.Binary, "--api-sock", l.apiSock, "--id", id})
		if err != nil {
			return nil, nil, err
		}
		cmd = exec.Command(argv[0], argv[1:]...)
	}
	cmd.Dir = l.dir
	// Never the server's environment: it holds API keys. Firecracker needs
	// none (and the jailer clears it anyway).
	cmd.Env = []string{}
	cmd.WaitDelay = time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own group, so that Stop's SIGKILL reaches whatever it forked.
		Setpgid: true,
		// The VMM dies with the server. Linux ties this to the forking
		// thread (see NetAttachment.Start) and clears it when the process
		// changes credentials, which the jailer does: a jailed VMM outlives
		// a crashed server.
		Pdeathsig: syscall.SIGKILL,
	}
	if vmm == nil {
		var err error
		if vmm, err = d.cfg.Resources.Confine(cmd, spec.SessionID, "Firecracker", mc.MemSizeMiB, total, mc.VCPUCount); err != nil {
			return nil, nil, fmt.Errorf("the VM's cgroup: %w", err)
		}
	}
	return cmd, vmm, nil
}
