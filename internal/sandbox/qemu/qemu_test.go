package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/image"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/vm"
	"github.com/execlaw/execlaw/internal/testutil"
)

func newDriver(t *testing.T) (*Driver, image.Boot) {
	t.Helper()
	img := testutil.VMImage(t)
	d, err := New(Config{Image: img, Accel: AccelTCG})
	if err != nil {
		t.Fatal(err)
	}
	return d, img
}

func start(t *testing.T, d *Driver, ctx context.Context) (*Sandbox, string) {
	t.Helper()
	dir := t.TempDir()
	sb, err := d.Start(ctx, sandbox.Spec{SessionID: "s_" + strings.Repeat("a", 20) + filepath.Base(dir), Dir: dir, VCPUs: 1, MemoryMiB: 512, Network: "none"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Stop(context.Background()) })
	return sb.(*Sandbox), dir
}

func run(t *testing.T, sb sandbox.Sandbox, script string) (guest.ExecResult, string) {
	t.Helper()
	var out bytes.Buffer
	res, err := sb.Guest().Exec(context.Background(), guest.ExecRequest{Argv: []string{"bash", "-c", script}, TimeoutSec: 60},
		func(_ string, b []byte) { out.Write(b) })
	if err != nil {
		t.Fatalf("exec %q: %v", script, err)
	}
	return res, out.String()
}

// A real VM boots under TCG, runs commands in its own kernel and root
// overlay, and leaves nothing behind when stopped.
func TestBootExecStop(t *testing.T) {
	d, img := newDriver(t)
	var phases []string
	dir := t.TempDir()
	sbi, err := d.Start(context.Background(), sandbox.Spec{SessionID: "s_bootexecstop", Dir: dir, VCPUs: 1, MemoryMiB: 512,
		Network: "none", Progress: func(p string) { phases = append(phases, p) }})
	if err != nil {
		t.Fatal(err)
	}
	sb := sbi.(*Sandbox)
	if strings.Join(phases, ",") != "disk,vmm,kernel,guest-api" {
		t.Errorf("boot phases %v", phases)
	}
	h, err := sb.Guest().Health(context.Background())
	if err != nil || !h.PID1 || h.Boot == nil || h.Boot.KernelMs <= 0 || h.Workspace != "/workspace" {
		t.Fatalf("health %+v, %v", h, err)
	}
	res, out := run(t, sb, "uname -r; cat /proc/1/comm; findmnt -n -o FSTYPE /; hostname")
	lines := strings.Fields(out)
	if res.ExitCode != 0 || len(lines) != 4 || lines[0] != img.KernelVersion || lines[2] != "overlay" || !strings.HasPrefix(lines[3], "execlaw-") {
		t.Fatalf("in the VM: %q (kernel want %s)", out, img.KernelVersion)
	}
	if err := sb.Guest().Write(context.Background(), guest.WriteRequest{Path: "notes/a.txt", Data: []byte("written by the host")}); err != nil {
		t.Fatal(err)
	}
	if _, out := run(t, sb, "cat /workspace/notes/a.txt"); out != "written by the host" {
		t.Fatalf("file written through the API reads %q in the VM", out)
	}
	// The writable disk is sparse: creating a session copies nothing.
	if used, err := vm.DiskUsage(filepath.Join(dir, "rw.ext4")); err != nil || used > 64<<20 {
		t.Errorf("writable disk uses %d bytes (%v), want a sparse file", used, err)
	}
	pid := sb.PID()
	if err := sb.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sb.ExitError() != nil {
		t.Errorf("exit error after Stop: %v", sb.ExitError())
	}
	if syscall.Kill(pid, 0) == nil {
		t.Errorf("qemu %d still running", pid)
	}
	for _, f := range []string{"ctl.sock", "qmp.sock"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s left behind", f)
		}
	}
	// The disk is the session's, to remove with its directory or to boot
	// on again after a pause.
	if _, err := os.Stat(filepath.Join(dir, "rw.ext4")); err != nil {
		t.Errorf("the writable disk after Stop: %v", err)
	}
}

// A session directory too deep for a socket address still gets its control
// channel: QEMU binds a relative path in the directory.
func TestLongDirectoryPath(t *testing.T) {
	d, _ := newDriver(t)
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 120))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sbi, err := d.Start(context.Background(), sandbox.Spec{SessionID: "s_longdir", Dir: dir, VCPUs: 1, MemoryMiB: 256, Network: "none"})
	if err != nil {
		t.Fatal(err)
	}
	sb := sbi.(*Sandbox)
	defer sb.Stop(context.Background())
	if res, out := run(t, sb, "echo ok"); res.ExitCode != 0 || out != "ok\n" {
		t.Errorf("exec: %+v %q", res, out)
	}
	if err := sb.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ctl.sock")); err == nil {
		t.Error("ctl.sock left behind")
	}
	if _, err := sb.Guest().Health(context.Background()); !errors.Is(err, sandbox.ErrSocketDirClosed) {
		t.Errorf("Health after Stop = %v, want ErrSocketDirClosed", err)
	}
}

// Two VMs share the read-only base image and see none of each other's changes.
func TestCopyOnWrite(t *testing.T) {
	d, img := newDriver(t)
	before := fileHash(t, img.Rootfs)
	a, _ := start(t, d, context.Background())
	b, _ := start(t, d, context.Background())
	run(t, a, "echo from-a > /workspace/mine; echo changed > /etc/motd; rm -f /usr/bin/tac")
	if _, out := run(t, b, "cat /workspace/mine; cat /etc/motd; test -x /usr/bin/tac && echo tac-here"); strings.Contains(out, "from-a") || strings.Contains(out, "changed") || !strings.Contains(out, "tac-here") {
		t.Fatalf("VM b sees VM a's changes: %q", out)
	}
	a.Stop(context.Background())
	b.Stop(context.Background())
	if fileHash(t, img.Rootfs) != before {
		t.Fatal("the shared base image changed")
	}
}

// A VMM that dies mid-command is reported, and its sandbox cleans up.
func TestVMMKilled(t *testing.T) {
	d, _ := newDriver(t)
	sb, dir := start(t, d, context.Background())
	go sb.Guest().Exec(context.Background(), guest.ExecRequest{Argv: []string{"sleep", "600"}}, nil)
	syscall.Kill(sb.PID(), syscall.SIGKILL)
	select {
	case <-sb.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("Done did not close after the VMM was killed")
	}
	if err := sb.ExitError(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("ExitError = %v", err)
	}
	sb.Stop(context.Background())
	if pids := apitest.ProcessesMentioning(dir); len(pids) > 0 {
		t.Fatalf("processes left: %v", pids)
	}
}

// A Stop's ctx bounds only its wait: the shutdown runs on, and a later Stop
// waits for the same one.
func TestStopContextBoundsTheWait(t *testing.T) {
	d, _ := newDriver(t)
	sb, dir := start(t, d, context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	begin := time.Now()
	if err := sb.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop with a short context: %v", err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("Stop with a short context took %s", d)
	}
	if err := sb.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sb.ExitError() != nil {
		t.Errorf("exit error after Stop: %v", sb.ExitError())
	}
	if pids := apitest.ProcessesMentioning(dir); len(pids) > 0 {
		t.Fatalf("processes left: %v", pids)
	}
}

// Giving up on a boot leaves nothing running.
func TestStartCancelled(t *testing.T) {
	d, _ := newDriver(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) { // cancel once QEMU is up, mid-boot
			if len(apitest.ProcessesMentioning(dir)) > 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	_, err := d.Start(ctx, sandbox.Spec{SessionID: "s_cancelled", Dir: dir, VCPUs: 1, MemoryMiB: 256, Network: "none"})
	if err == nil {
		t.Fatal("Start succeeded after cancel")
	}
	if pids := apitest.ProcessesMentioning(dir); len(pids) > 0 {
		t.Fatalf("processes left: %v", pids)
	}
	if _, err := os.Stat(filepath.Join(dir, "rw.ext4")); err == nil {
		t.Fatal("disk left behind")
	}
}

func fileHash(t *testing.T, p string) string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return string(h.Sum(nil))
}

// A guest writing without end to its serial console cannot fill the host's
// disk: console.log stops at its cap, says so, and the VM runs on.
func TestConsoleCapped(t *testing.T) {
	d, _ := newDriver(t)
	sb, dir := start(t, d, context.Background())
	res, _ := run(t, sb, "head -c 1500000 /dev/urandom | base64 -w 0 > /dev/ttyS0; echo done")
	if res.ExitCode != 0 {
		t.Fatalf("writing to the console: exit %d", res.ExitCode)
	}
	if _, out := run(t, sb, "echo still here"); out != "still here\n" {
		t.Fatalf("the VM after its console filled: %q", out)
	}
	st, err := os.Stat(filepath.Join(dir, "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > maxLogBytes+256 {
		t.Fatalf("console.log is %d bytes, cap %d", st.Size(), maxLogBytes)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "console.log"))
	if !bytes.Contains(b, []byte("further output dropped")) {
		t.Fatalf("console.log (%d bytes) does not say it was cut", len(b))
	}
}

// Pause saves the whole VM and ends QEMU, freeing its memory; Restore brings
// it back where it stood: processes still running, files there, the clock
// set to the host's, and the snapshot gone.
func TestPauseRestore(t *testing.T) {
	d, _ := newDriver(t)
	dir := t.TempDir()
	spec := sandbox.Spec{SessionID: "s_pauserestore", Dir: dir, VCPUs: 1, MemoryMiB: 512, Network: "none"}
	sbi, err := d.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	sb := sbi.(*Sandbox)
	t.Cleanup(func() { sb.Stop(context.Background()) })
	run(t, sb, "echo kept > /workspace/file; sleep 1000 >/dev/null 2>&1 & echo $! > /tmp/sleeper")
	pid := sb.PID()
	rss := processRSS(t, pid)

	snap, err := sb.Pause(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-sb.Done():
	default:
		t.Fatal("Done is open after Pause")
	}
	if sb.ExitError() != nil || syscall.Kill(pid, 0) == nil {
		t.Fatalf("after Pause: exit error %v, QEMU %d still there: %v", sb.ExitError(), pid, syscall.Kill(pid, 0) == nil)
	}
	for _, f := range []string{"rw.ext4", snapName, sandbox.SnapshotFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("%s after Pause: %v", f, err)
		}
	}
	if snap.Bytes <= 0 || snap.Bytes > 512<<20 {
		t.Errorf("snapshot of %d bytes for a 512 MiB guest", snap.Bytes)
	}
	t.Logf("QEMU used %d MiB; its snapshot is %d MiB", rss>>20, snap.Bytes>>20)
	if recorded, ok, err := sandbox.ReadSnapshot(dir); err != nil || !ok || recorded.Compat["qemu"] == "" {
		t.Fatalf("recorded snapshot: %+v %v %v", recorded, ok, err)
	}

	// Time passes while it is paused: the restored guest's clock must catch up.
	time.Sleep(3 * time.Second)
	sbi, err = d.Restore(context.Background(), spec, snap)
	if err != nil {
		t.Fatal(err)
	}
	sb = sbi.(*Sandbox)
	_, out := run(t, sb, "cat /workspace/file; kill -0 $(cat /tmp/sleeper) && echo alive; date +%s.%N")
	lines := strings.Fields(out)
	if len(lines) != 3 || lines[0] != "kept" || lines[1] != "alive" {
		t.Fatalf("after Restore: %q", out)
	}
	guestNow, _ := strconv.ParseFloat(lines[2], 64)
	if skew := time.Since(time.Unix(0, int64(guestNow*1e9))); skew > 2*time.Second || skew < -2*time.Second {
		t.Errorf("the guest's clock is %s off the host's", skew)
	}
	for _, f := range []string{snapName, sandbox.SnapshotFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s still there after Restore: %v", f, err)
		}
	}
	if err := sb.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A snapshot that cannot be restored, changed or damaged, is refused with
// nothing left running.
func TestRestoreRefused(t *testing.T) {
	d, _ := newDriver(t)
	dir := t.TempDir()
	spec := sandbox.Spec{SessionID: "s_restorerefused", Dir: dir, VCPUs: 1, MemoryMiB: 256, Network: "none"}
	sb, err := d.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := sb.(*Sandbox).Pause(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	bigger := spec
	bigger.MemoryMiB = 512
	if _, err := d.Restore(context.Background(), bigger, snap); !errors.Is(err, sandbox.ErrIncompatible) {
		t.Fatalf("restore with another memory size: %v", err)
	}
	other := snap
	other.Compat = maps.Clone(snap.Compat)
	other.Compat["qemu"] = "QEMU emulator version 6.0.0"
	if _, err := d.Restore(context.Background(), spec, other); !errors.Is(err, sandbox.ErrIncompatible) || !strings.Contains(err.Error(), "qemu") {
		t.Fatalf("restore of another QEMU's snapshot: %v", err)
	}
	// Damage the saved state: QEMU refuses it.
	path := filepath.Join(dir, snapName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 64; i < len(b); i += 4096 {
		b[i] ^= 0xff
	}
	if err := os.WriteFile(path, b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Restore(context.Background(), spec, snap); err == nil {
		t.Fatal("a damaged snapshot was restored")
	}
	if procs := testutil.ProcessesWithArgs("qemu-system-x86_64", dir); len(procs) > 0 {
		t.Fatalf("QEMU left running after a refused restore: %v", procs)
	}
}

// processRSS is a process's resident memory in bytes.
func processRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS for %d", pid)
	return 0
}
