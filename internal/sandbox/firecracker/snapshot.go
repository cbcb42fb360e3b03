package firecracker

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/sandbox"
)

// Pause and restore, through Firecracker's snapshot API
// (docs/snapshotting/snapshot-support.md; paths and fields as in
// firecracker-api-v1.16.1.yaml):
//
//   - Pause: PATCH /vm {"state":"Paused"}, then PUT /snapshot/create (Full)
//     into fc.vmstate and fc.mem, which the driver keeps in the session
//     directory (moved out of the jail, which goes with the VMM); then the
//     VMM is killed (the VM must never run again: its disk is part of the
//     snapshot) and snapshot.json is written, last.
//   - Restore: a fresh VMM in the same layout, PUT /snapshot/load with the
//     File memory backend and resume_vm, the new TAP and the vsock socket
//     given as overrides; then the guest is dialled anew (Firecracker resets
//     vsock connections when it takes a snapshot) and re-initialised.
//
// The memory file backs the restored guest's memory for as long as it runs
// (Firecracker maps it privately and reads pages on demand), and Firecracker
// truncates and overwrites an existing file when it creates a snapshot: the
// restore unlinks the snapshot's names at once, so the VM keeps its inode
// and the next Pause writes new files.

// compatVersion is the Compat key of the VMM's version.
const compatVersion = "firecracker"

// Pause implements sandbox.Pauser.
func (s *Sandbox) Pause(ctx context.Context) (sandbox.Snapshot, error) {
	snap, err := s.pause(ctx)
	if err != nil {
		return sandbox.Snapshot{}, fmt.Errorf("firecracker: pause: %w", err)
	}
	return snap, nil
}

func (s *Sandbox) pause(ctx context.Context) (sandbox.Snapshot, error) {
	s.pauseMu.Lock()
	defer s.pauseMu.Unlock()
	if s.hasExited() {
		return sandbox.Snapshot{}, errors.New("the VM is not running")
	}
	if _, ending := s.exit.Expected(); ending {
		return sandbox.Snapshot{}, errors.New("the VM is being stopped")
	}
	begin := time.Now()
	l := s.l
	version, err := s.api.Version(ctx)
	if err != nil {
		return sandbox.Snapshot{}, err
	}
	s.syncGuest(ctx)
	// Firecracker resets the guest's vsock connections as it takes the
	// snapshot: no idle one may be reused afterwards, should the VM run on.
	s.client.Close()
	// The files must be new ones (see above).
	if err := s.removeSnapshotFiles(); err != nil {
		return sandbox.Snapshot{}, err
	}

	if err := s.api.PatchVM(ctx, VMPaused); err != nil {
		var ae *APIError
		if errors.As(err, &ae) {
			return sandbox.Snapshot{}, err // refused: nothing changed
		}
		return sandbox.Snapshot{}, s.resumeAfter(err) // it may have paused
	}
	// From here until the snapshot is whole, a failure resumes the VM.
	err = s.api.CreateSnapshot(ctx, SnapshotCreateParams{SnapshotType: SnapshotFull, SnapshotPath: l.vmstate, MemFilePath: l.mem})
	if err != nil {
		return sandbox.Snapshot{}, s.undoPause(fmt.Errorf("saving the VM: %w", err))
	}
	bytes, err := s.collectSnapshot()
	if err != nil {
		return sandbox.Snapshot{}, s.undoPause(fmt.Errorf("saving the VM: %w", err))
	}
	snap := sandbox.Snapshot{
		Driver:    s.drv.Name(),
		Files:     []string{vmstateName, memName},
		Compat:    s.drv.compat(l, s.mc, s.att != nil, version),
		Bytes:     bytes,
		CreatedAt: time.Now().UTC(),
	}

	// The VM must never run again: its disk is part of the snapshot now.
	// Killing the paused VMM loses nothing.
	s.exit.Expect(sandbox.ExitPause)
	s.kill()
	if !s.waitExited(s.t.kill) {
		_ = sandbox.RemoveSnapshot(l.dir, snap)
		return sandbox.Snapshot{}, fmt.Errorf("pid %d did not exit after SIGKILL", s.pid)
	}
	<-s.exit.Done() // released: sockets, jail, network, cgroup; the disk stays
	if err := sandbox.WriteSnapshot(l.dir, snap); err != nil {
		_ = sandbox.RemoveSnapshot(l.dir, snap)
		return sandbox.Snapshot{}, fmt.Errorf("the VM was saved and stopped, but its snapshot could not be recorded (its disk stays, to boot afresh on): %w", err)
	}
	s.log.Info("VM paused", "bytes", bytes, "took", time.Since(begin).Round(time.Millisecond))
	return snap, nil
}

// syncGuest asks the guest to write what it has not written yet to its
// disk. The snapshot holds it anyway; this is for the snapshot that cannot
// be restored (another Firecracker, another image), when the session boots
// afresh on the disk. Best effort.
func (s *Sandbox) syncGuest(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.t.sync)
	defer cancel()
	res, err := s.client.Exec(ctx, guest.ExecRequest{Argv: []string{"sync"}}, nil)
	if err == nil && res.ExitCode != 0 {
		err = fmt.Errorf("exit code %d", res.ExitCode)
	}
	if err != nil {
		s.log.Warn("the guest's sync before the pause failed", "err", err)
	}
}

// undoPause removes what a failed pause left and lets the VM run on.
func (s *Sandbox) undoPause(err error) error {
	if rerr := s.removeSnapshotFiles(); rerr != nil {
		err = errors.Join(err, rerr)
	}
	return s.resumeAfter(err)
}

// resumeAfter resumes the paused VM after err, even when the pause's context
// has ended.
func (s *Sandbox) resumeAfter(err error) error {
	ctx, cancel := context.WithTimeout(context.Background(), defaultAPITimeout)
	defer cancel()
	if rerr := s.api.PatchVM(ctx, VMResumed); rerr != nil {
		s.log.Error("pause failed and the VM could not be resumed", "err", err, "resume", rerr)
		return errors.Join(err, fmt.Errorf("and the VM could not be resumed: %w", rerr))
	}
	s.log.Warn("pause failed; the VM runs on", "err", err)
	return err
}

// removeSnapshotFiles removes the snapshot's files where Firecracker writes
// them and where they are kept.
func (s *Sandbox) removeSnapshotFiles() error {
	var errs []error
	for _, name := range []string{vmstateName, memName} {
		for _, p := range []string{s.l.vmmSide(name), filepath.Join(s.l.dir, name)} {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// collectSnapshot moves the files Firecracker wrote into the session
// directory, makes them and the disk durable (Firecracker flushes the disk
// to the host's page cache only), and returns what they take on disk.
func (s *Sandbox) collectSnapshot() (int64, error) {
	var total int64
	for _, name := range []string{vmstateName, memName} {
		at, keep := s.l.vmmSide(name), filepath.Join(s.l.dir, name)
		if at != keep {
			if err := os.Rename(at, keep); err != nil {
				return 0, err
			}
		}
		n, err := syncFile(keep)
		if err != nil {
			return 0, err
		}
		total += n
	}
	if _, err := syncFile(s.l.rwHost); err != nil {
		return 0, err
	}
	if _, err := syncFile(s.l.dir); err != nil {
		return 0, err
	}
	return total, nil
}

// syncFile fsyncs a file (or directory) and returns the bytes it occupies.
func syncFile(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512, nil
	}
	return fi.Size(), nil
}

// Restore implements sandbox.Restorer: a fresh Firecracker, in the same
// layout as the one that was paused, loads the snapshot and resumes it. It
// gives ErrIncompatible for a snapshot that cannot be restored here (one
// made by another driver, VMM version, machine, image or VM size; a file
// missing or changed; a snapshot Firecracker refuses, a damaged one) and
// leaves nothing running when it fails. Once Firecracker has loaded the
// snapshot the VM runs and its disk moves on, so the snapshot's files are
// removed, whatever happens next.
func (d *Driver) Restore(ctx context.Context, spec sandbox.Spec, snap sandbox.Snapshot) (sandbox.Sandbox, error) {
	sb, err := d.launch(ctx, spec, &snap)
	if err != nil {
		return nil, fmt.Errorf("firecracker: restore: %w", err)
	}
	return sb, nil
}

// restore loads snap into the VMM sb has just started and waits for the
// guest.
func (d *Driver) restore(ctx context.Context, sb *Sandbox, snap sandbox.Snapshot, progress func(string)) error {
	progress("restore")
	l := sb.l
	version, err := sb.api.Version(ctx)
	if err != nil {
		return err
	}
	if err := sandbox.CheckCompat(snap, d.Name(), d.compat(l, sb.mc, sb.att != nil, version)); err != nil {
		return err
	}
	load := SnapshotLoadParams{
		SnapshotPath: l.vmstate,
		MemBackend:   &MemoryBackend{BackendType: MemoryBackendFile, BackendPath: l.mem},
		ResumeVM:     true,
		// Where the host dials now (the same place, as the layout is; said
		// so that it does not depend on what the saved state says).
		VsockOverride: &VsockOverride{UDSPath: l.vsockUDS},
	}
	if sb.att != nil {
		load.NetworkOverrides = []NetworkOverride{{IfaceID: ifaceID, HostDevName: sb.att.TapName()}}
	}
	if err := ctx.Err(); err != nil {
		return err // not sent: the snapshot stays
	}
	err = sb.api.LoadSnapshot(ctx, load)
	var ae *APIError
	if errors.As(err, &ae) {
		// Refused (and Firecracker ends itself): the VM never ran, the
		// snapshot is as it was.
		return fmt.Errorf("%w: %w", sandbox.ErrIncompatible, err)
	}
	// Loaded, or perhaps loaded (no answer): the VM may run, its disk moves
	// on; the snapshot must never be restored again. (Failing the restore
	// when that fails would only invite another restore of it.)
	if rerr := spendSnapshot(l, snap); rerr != nil {
		sb.log.Error("removing the restored snapshot", "err", rerr)
	}
	if err != nil {
		return fmt.Errorf("%w (the snapshot was removed)", err)
	}
	spent := func(err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("%w (the snapshot was removed)", err)
		}
		return fmt.Errorf("%w: the restored VM does not work: %w (the snapshot was removed)", sandbox.ErrIncompatible, err)
	}
	if err := sb.waitGuest(ctx, d.cfg.BootTimeout, func() { progress("guest-api") }); err != nil {
		return spent(err)
	}
	if err := sb.reinit(ctx, d.cfg.BootTimeout); err != nil {
		return spent(err)
	}
	return nil
}

// reinit tells a restored guest what changed while it was saved: the time
// (its clock stood still), fresh entropy (it would repeat the random numbers
// it drew after the snapshot), and its network now (a new attachment, whose
// addresses may differ).
func (s *Sandbox) reinit(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req := guest.InitRequest{Entropy: make([]byte, 64)}
	if _, err := rand.Read(req.Entropy); err != nil {
		return err
	}
	if s.att != nil {
		req.Network = &guest.NetworkSetup{IP: s.att.GuestIP(), Gateway: s.att.Gateway(), DNS: s.att.DNS()}
	}
	req.Time = time.Now()
	res, err := s.client.Init(ctx, req)
	if err != nil {
		return fmt.Errorf("initialising the restored guest: %w", err)
	}
	s.log.Info("restored guest initialised", "clockOffsetMs", res.ClockOffsetMs, "clockSet", res.ClockSet)
	return nil
}

// spendSnapshot removes a snapshot that has been loaded: its description and
// files, and their links in the jail. The running VM keeps the memory file's
// inode.
func spendSnapshot(l *layout, snap sandbox.Snapshot) error {
	err := sandbox.RemoveSnapshot(l.dir, snap)
	if l.jailRoot != "" {
		for _, name := range []string{vmstateName, memName} {
			if rerr := os.Remove(filepath.Join(l.jailRoot, name)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				err = errors.Join(err, rerr)
			}
		}
	}
	return err
}

// linkSnapshot puts the snapshot's files into the new jail, for the jail's
// user (hard links: the jail is inside the session directory).
func (d *Driver) linkSnapshot(l *layout) error {
	for _, name := range []string{vmstateName, memName} {
		src, dst := filepath.Join(l.dir, name), filepath.Join(l.jailRoot, name)
		if err := os.Chown(src, d.cfg.JailerUID, d.cfg.JailerGID); err != nil {
			return fmt.Errorf("jail: %w", err)
		}
		if err := os.Link(src, dst); err != nil {
			return fmt.Errorf("jail: %w", err)
		}
	}
	return nil
}

// removeStaleSnapshot removes whatever snapshot is in dir (described or
// not, whichever driver made it) before a boot afresh on its disk: the disk
// moves on, and a snapshot of it from before must never be restored.
func removeStaleSnapshot(dir string) error {
	var errs []error
	if snap, ok, err := sandbox.ReadSnapshot(dir); ok {
		errs = append(errs, sandbox.RemoveSnapshot(dir, snap))
	} else if err != nil && !errors.Is(err, sandbox.ErrIncompatible) {
		errs = append(errs, err)
	}
	for _, name := range []string{sandbox.SnapshotFile, sandbox.SnapshotFile + ".tmp", vmstateName, memName} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing an old snapshot: %w", err)
	}
	return nil
}

// clearLeftovers removes what a run that ended without its cleanup (the
// server was killed) left in the session directory: Firecracker binds its
// sockets anew, and the jail is made afresh. A Firecracker that still
// answers on its API socket means a VM still runs on the directory's disk,
// and a second one must never be started on it.
func (d *Driver) clearLeftovers(ctx context.Context, l *layout) error {
	jailed, _ := filepath.Glob(filepath.Join(l.dir, jailDirName, "*", "*", "root"))
	for _, dir := range append([]string{l.dir}, jailed...) {
		if _, err := os.Lstat(filepath.Join(dir, apiSockName)); err != nil {
			continue
		}
		socks, err := sandbox.OpenSocketDir(dir, longestSockName)
		if err != nil {
			return err
		}
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := socks.Dial(dctx, apiSockName)
		cancel()
		socks.Close()
		if err == nil {
			c.Close()
			return fmt.Errorf("a firecracker still serves %s: a VM still runs on this sandbox's disk", filepath.Join(dir, apiSockName))
		}
	}
	var errs []error
	extra, _ := filepath.Glob(filepath.Join(l.dir, vsockSockName+"_*"))
	for _, p := range append([]string{filepath.Join(l.dir, apiSockName), filepath.Join(l.dir, vsockSockName)}, extra...) {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(filepath.Join(l.dir, jailDirName)); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing what an earlier run left: %w", err)
	}
	return nil
}

// compat is what restoring a snapshot needs unchanged: the VMM's version
// (snapshot state formats are per version), the host's CPU and kernel
// (Firecracker does not restore across CPU models; across host kernels only
// some pairs work), the guest image (identified by path, size and mtime:
// hashing a rootfs of GiBs is not cheap), the VM's size and devices, the
// jail (the saved state names files by their path in it, or by host path,
// whence the directory, when not jailed), and the sizes of the disk and the
// snapshot's files, which are missing ("") when gone.
func (d *Driver) compat(l *layout, mc MachineConfig, nic bool, version string) map[string]string {
	network := "none"
	if nic {
		network = "nic"
	}
	jail, dir := "none", l.dir
	if d.cfg.JailerBinary != "" {
		jail, dir = fmt.Sprintf("uid %d gid %d", d.cfg.JailerUID, d.cfg.JailerGID), "(jailed)"
	}
	im := d.cfg.Image
	return map[string]string{
		compatVersion:  version,
		"arch":         runtime.GOARCH,
		"cpu":          hostCPU(),
		"hostKernel":   hostKernel(),
		"kernel":       fileIdentity(im.KernelELF),
		"initramfs":    fileIdentity(im.Initramfs),
		"rootfs":       fileIdentity(im.Rootfs),
		"vcpus":        strconv.Itoa(mc.VCPUCount),
		"memoryMiB":    strconv.Itoa(mc.MemSizeMiB),
		"network":      network,
		"jailer":       jail,
		"dir":          dir,
		"diskBytes":    fileSize(l.rwHost),
		"vmstateBytes": fileSize(filepath.Join(l.dir, vmstateName)),
		"memBytes":     fileSize(filepath.Join(l.dir, memName)),
	}
}

func fileIdentity(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%s size %d mtime %s", path, fi.Size(), fi.ModTime().UTC().Format(time.RFC3339Nano))
}

func fileSize(path string) string {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	return strconv.FormatInt(fi.Size(), 10)
}

// hostCPU is the host CPU's model, as /proc/cpuinfo names it.
var hostCPU = sync.OnceValue(func() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
})

// hostKernel is the host kernel's major.minor version.
var hostKernel = sync.OnceValue(func() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return ""
	}
	var b strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	parts := strings.SplitN(b.String(), ".", 3)
	if len(parts) < 2 {
		return b.String()
	}
	return parts[0] + "." + parts[1]
})
