// Package qemu is the sandbox driver that runs each session in a QEMU microVM
// (machine type microvm): virtio-mmio disks, NIC and control channel, no
// PCI, no firmware menus, no monitor. It uses KVM when a probe boot has
// shown KVM can run a guest on this host, and TCG software emulation
// otherwise: slow, but a real VM.
package qemu

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/image"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/vm"
)

// Accelerators.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// Config configures the driver.
type Config struct {
	// Binary is qemu-system-x86_64; empty means looking it up in $PATH.
	Binary string
	Image  image.Boot
	// Accel is AccelKVM or AccelTCG.
	Accel string
	// Network gives sessions with network "full" their NIC; nil means
	// such sessions are refused.
	Network vm.NetworkProvider
	Logger  *slog.Logger
	// BootTimeout bounds a boot; 0 means 120s under TCG, 30s under KVM.
	BootTimeout time.Duration
	// VhostVsock uses a vhost-vsock device for the control channel (the host
	// needs /dev/vhost-vsock) instead of virtio-serial with yamux.
	VhostVsock bool
	// Resources confines each QEMU: a cgroup of its own sized
	// ReservedMiB, and a raised OOM score.
	Resources vm.Resources
}

// Driver starts QEMU sandboxes.
type Driver struct {
	cfg Config
	log *slog.Logger
	versionState
}

var (
	_ sandbox.Driver         = (*Driver)(nil)
	_ sandbox.MemoryReserver = (*Driver)(nil)
)

// New checks cfg.
func New(cfg Config) (*Driver, error) {
	if cfg.Binary == "" {
		p, err := exec.LookPath("qemu-system-x86_64")
		if err != nil {
			return nil, errors.New("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
		}
		cfg.Binary = p
	}
	if cfg.Accel != AccelKVM && cfg.Accel != AccelTCG {
		return nil, fmt.Errorf("accelerator %q: want kvm or tcg", cfg.Accel)
	}
	if err := cfg.Image.Check(false); err != nil {
		return nil, err
	}
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = 120 * time.Second
		if cfg.Accel == AccelKVM {
			cfg.BootTimeout = 30 * time.Second
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{cfg: cfg, log: log.With("driver", "qemu-"+cfg.Accel)}, nil
}

// Name is "qemu-kvm" or "qemu-tcg".
func (d *Driver) Name() string { return "qemu-" + d.cfg.Accel }

// Isolated is true: the agent runs in its own VM.
func (d *Driver) Isolated() bool { return true }

// Poolable: QEMU sandboxes started Movable can be claimed (snapshot.go).
func (d *Driver) Poolable() bool { return true }

var _ sandbox.Pooling = (*Driver)(nil)

// guestMiB is the memory a VM of spec gets.
func guestMiB(spec sandbox.Spec) int { return max(spec.MemoryMiB, 128) }

// ReservedMiB is the memory a VM of spec and its QEMU may use: the guest's
// plus QEMU's overhead, its cgroup's limit.
func (d *Driver) ReservedMiB(spec sandbox.Spec) int {
	g := guestMiB(spec)
	return g + vm.QEMUOverheadMiB(g)
}

// Start boots a VM for spec and returns once its guest API answers. With
// spec.Resume it boots on the writable disk already in spec.Dir.
func (d *Driver) Start(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	return d.launch(ctx, spec, nil)
}

// launch starts QEMU for spec: booting, or, with from set, restoring the
// VM saved in a snapshot.
func (d *Driver) launch(ctx context.Context, spec sandbox.Spec, from *restoring) (_ *Sandbox, err error) {
	progress := spec.Progress
	if progress == nil {
		progress = func(string) {}
	}
	if spec.Network == "full" && d.cfg.Network == nil {
		return nil, errors.New("this server has no VM networking; create the session with network none")
	}
	// Absolute, as QEMU may run in the directory (see command).
	if spec.Dir, err = filepath.Abs(spec.Dir); err != nil {
		return nil, err
	}
	s := &Sandbox{d: d, id: spec.SessionID, dir: spec.Dir, spec: spec, timings: map[string]time.Duration{}}
	begin := time.Now()
	disk := filepath.Join(spec.Dir, rwDiskName)
	newDisk := false
	defer func() {
		if err != nil {
			s.kill()
			s.release(context.Background())
			if newDisk {
				os.Remove(disk) // a failed boot's own disk holds nothing of anyone's
			}
		}
	}()

	progress("disk")
	if _, serr := os.Stat(disk); from == nil && (!spec.Resume || serr != nil) {
		if err := vm.NewWritableDisk(ctx, disk, spec.DiskMiB); err != nil {
			return nil, err
		}
		newDisk = true
	}
	// A run that was killed leaves its sockets; QEMU binds them anew.
	os.Remove(filepath.Join(spec.Dir, ctlSockName))
	os.Remove(filepath.Join(spec.Dir, qmpSockName))

	s.boot = guest.BootConfig{Channel: "serial", Hostname: "execlaw-" + shortID(spec.SessionID)}
	if d.cfg.VhostVsock {
		s.cid = randomCID()
		s.boot.Channel = fmt.Sprintf("vsock:%d", guest.DefaultVsockPort)
	}
	open := sandbox.OpenSocketDir
	if spec.Movable {
		open = sandbox.OpenMovableSocketDir
	}
	if s.socks, err = open(spec.Dir, max(len(ctlSockName), len(qmpSockName))); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if spec.Network == "full" {
		progress("network")
		a, err := d.cfg.Network.Setup(ctx, spec.SessionID)
		if err != nil {
			return nil, fmt.Errorf("network: %w", err)
		}
		s.net = a
		s.boot.IP, s.boot.Gateway, s.boot.DNS = a.GuestIP(), a.Gateway(), a.DNS()
	}
	s.timings["prepare"] = time.Since(begin)

	progress("vmm")
	// A restored VM is the one that was saved: same command line (the
	// kernel arguments it booted with included), waiting for its state.
	bootArgs := s.boot
	if from != nil {
		bootArgs = from.boot
	}
	cmd, err := d.command(spec, bootArgs, s.net, s.cid, s.socks, from != nil)
	if err != nil {
		return nil, err
	}
	if s.logs, err = openLogs(spec.Dir); err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = s.logs.console, s.logs.qemu
	// Its cgroup, which it starts in: QEMU allocates guest memory as soon
	// as it runs.
	if s.vmm, err = d.cfg.Resources.Confine(cmd, spec.SessionID, "QEMU", guestMiB(spec), d.ReservedMiB(spec), spec.VCPUs); err != nil {
		s.logs.Close()
		return nil, fmt.Errorf("the VM's cgroup: %w", err)
	}
	vmmStart := time.Now()
	if s.net != nil {
		err = s.net.Start(cmd)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		s.logs.Close() // else wait closes them once QEMU has exited
	}
	pid := 0
	if err == nil {
		pid = cmd.Process.Pid
	}
	s.vmm.Started(pid)
	if err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	s.cmd = cmd
	go s.wait()

	if d.cfg.VhostVsock {
		s.client = guest.NewClient(guest.VsockDialer(s.cid, guest.DefaultVsockPort))
	} else {
		// The channel dials DialPath itself: Guard keeps it from doing so
		// once release has closed the socket directory.
		s.channel = guest.NewSerialChannel(s.socks.DialPath(ctlSockName))
		s.client = guest.NewClient(s.socks.Guard(s.channel.Dial))
		if err := s.waitSocket(ctx, ctlSockName); err != nil {
			return nil, err
		}
	}
	s.timings["vmm"] = time.Since(vmmStart)

	if from != nil {
		progress("restore")
		if err := s.restoreState(ctx, from); err != nil {
			return nil, err
		}
	} else {
		progress("kernel")
	}
	var h guest.Health
	if from != nil {
		// The saved guest is up already; its end of the channel may not be.
		ctx, cancel := context.WithTimeout(ctx, d.cfg.BootTimeout)
		h, err = s.pollGuest(ctx, d.cfg.BootTimeout)
		cancel()
	} else {
		h, err = s.waitGuest(ctx, d.cfg.BootTimeout)
	}
	if err != nil {
		return nil, err
	}
	if h.Boot != nil && from == nil {
		s.timings["kernel"] = time.Duration(h.Boot.KernelMs) * time.Millisecond
		s.timings["init"] = time.Duration(h.Boot.InitMs) * time.Millisecond
	}
	if from != nil {
		if err := s.reinit(ctx); err != nil {
			return nil, err
		}
	}
	s.timings["ready"] = time.Since(begin)
	progress("guest-api")
	d.log.Info("VM ready", "session", spec.SessionID, "pid", cmd.Process.Pid, "restored", from != nil,
		"took", time.Since(begin).Round(time.Millisecond), "kernel", s.timings["kernel"], "init", s.timings["init"])
	return s, nil
}

// rwDiskName is the session's writable disk, in the sandbox directory.
const rwDiskName = "rw.ext4"

// ctlSockName is the virtio-serial control channel's socket, in the sandbox
// directory; ctlPortID is its port's device id in QEMU.
const (
	ctlSockName = "ctl.sock"
	ctlPortID   = "ctlport"
)

// command is QEMU's command line. socks is the directory of the control
// sockets (QMP's, and virtio-serial's unless cid is set: vhost-vsock).
// incoming starts QEMU stopped, waiting for a saved VM's state.
func (d *Driver) command(spec sandbox.Spec, boot guest.BootConfig, net vm.NetAttachment, cid uint32, socks *sandbox.SocketDir, incoming bool) (*exec.Cmd, error) {
	kargs, err := boot.KernelArgs()
	if err != nil {
		return nil, err
	}
	append_ := "console=ttyS0 quiet panic=-1 reboot=t pci=off " + kargs
	cpu, accel := "host", d.cfg.Accel
	if d.cfg.Accel == AccelTCG {
		append_ += " " + tcgTiming()
		cpu = "max"
		// TCG's translation cache defaults to 1 GiB per VM; a small one keeps an
		// idle VM's memory near what the guest uses, at no boot-time cost.
		accel = "tcg,tb-size=64"
	}
	vcpus := max(spec.VCPUs, 1)
	mem := guestMiB(spec)
	args := []string{
		"-name", "execlaw-" + shortID(spec.SessionID),
		"-machine", "microvm,rtc=on", "-accel", accel,
		"-cpu", cpu, "-smp", strconv.Itoa(vcpus), "-m", strconv.Itoa(mem),
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-monitor", "none", "-display", "none",
		// Seccomp: no new privileges, no spawning, no obsolete syscalls.
		"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		"-kernel", d.cfg.Image.KernelELF, "-initrd", d.cfg.Image.Initramfs, "-append", append_,
		"-chardev", "stdio,id=console,signal=off",
		"-serial", "chardev:console",
		"-drive", "id=base,file=" + d.cfg.Image.Rootfs + ",format=raw,if=none,readonly=on",
		"-device", "virtio-blk-device,drive=base",
		"-drive", "id=rw,file=" + filepath.Join(spec.Dir, rwDiskName) + ",format=raw,if=none,discard=unmap",
		"-device", "virtio-blk-device,drive=rw",
		"-object", "rng-random,id=rng,filename=/dev/urandom",
		"-device", "virtio-rng-device,rng=rng",
	}
	// QMP: pausing the VM saves it through a migration to a file.
	args = append(args, "-qmp", "unix:"+socks.BindPath(qmpSockName)+",server=on,wait=off")
	if incoming {
		args = append(args, "-S", "-incoming", "defer")
	}
	if cid != 0 {
		args = append(args, "-device", fmt.Sprintf("vhost-vsock-device,guest-cid=%d", cid))
	} else {
		args = append(args,
			"-device", "virtio-serial-device",
			"-chardev", "socket,id=ctl,path="+socks.BindPath(ctlSockName)+",server=on,wait=off",
			"-device", "virtserialport,id="+ctlPortID+",chardev=ctl,name="+guest.SerialPortName)
	}
	if net != nil {
		args = append(args,
			"-netdev", "tap,id=net0,ifname="+net.TapName()+",script=no,downscript=no",
			"-device", "virtio-net-device,netdev=net0,mac="+net.MAC())
	}
	argv, err := vm.WithoutAmbientCaps(append([]string{d.cfg.Binary}, args...))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	if !socks.Short() {
		cmd.Dir = spec.Dir // where the relative control socket paths resolve
	}
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

// shortID is the part of a session id (s_<hex>) or a pooled VM's (p_<hex>)
// that names its VM and, until a session claims it, the guest's host name,
// which may not hold an underscore.
func shortID(id string) string {
	id = strings.ReplaceAll(strings.TrimPrefix(id, "s_"), "_", "-")
	if len(id) > 12 {
		id = id[:12]
	}
	return id
}

// randomCID picks a vsock context id for a VM. Ids are host-wide; a random
// one from 2^31 makes a clash with another VM on the host unlikely, and QEMU
// refuses to start on one, so it cannot go unnoticed.
func randomCID() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return 3 + binary.LittleEndian.Uint32(b[:])%(1<<31)
}

// maxLogBytes caps console.log and qemu.log each.
const maxLogBytes = 1 << 20

// logs are where QEMU's output goes: the guest's console is QEMU's stdout
// (a stdio chardev), QEMU's own messages its stderr, each into a capped
// file. The guest controls its console, and must not fill the host's disk
// with it. exec copies both pipes until QEMU exits; then they are closed.
type logs struct {
	console, qemu io.Writer
	files         []*os.File
}

func openLogs(dir string) (*logs, error) {
	l := &logs{}
	for _, name := range []string{"console.log", "qemu.log"} {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			l.Close()
			return nil, err
		}
		l.files = append(l.files, f)
	}
	l.console = sandbox.NewCappedWriter(l.files[0], maxLogBytes)
	l.qemu = sandbox.NewCappedWriter(l.files[1], maxLogBytes)
	return l, nil
}

func (l *logs) Close() {
	for _, f := range l.files {
		f.Close()
	}
}
