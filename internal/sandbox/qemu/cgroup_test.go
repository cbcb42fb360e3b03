package qemu

import (
	"context"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/cgroup"
	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/vm"
	"github.com/execlaw/execlaw/internal/testutil"
)

// cgroupDriver is a TCG driver whose VMs get cgroups of a fresh instance,
// swept when the test ends.
func cgroupDriver(t *testing.T) (*Driver, *cgroup.Manager) {
	t.Helper()
	cg := testutil.Cgroups(t)
	d, err := New(Config{Image: testutil.VMImage(t), Accel: AccelTCG, Resources: vm.Resources{Cgroups: cg}})
	if err != nil {
		t.Fatal(err)
	}
	return d, cg
}

func startSpec(t *testing.T, d *Driver, id string, memMiB int) *Sandbox {
	t.Helper()
	sb, err := d.Start(context.Background(), sandbox.Spec{SessionID: id, Dir: t.TempDir(), VCPUs: 1, MemoryMiB: memMiB, Network: "none"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Stop(context.Background()) })
	return sb.(*Sandbox)
}

func assertGone(t *testing.T, g *cgroup.Group) {
	t.Helper()
	for _, d := range g.Dirs() {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s is still there (%v)", d, err)
		}
	}
}

// QEMU runs in a cgroup of its own from its start, limited to the guest's
// memory plus QEMU's overhead, with a raised OOM score. The cgroup goes
// when the VM is stopped, and when QEMU dies on its own.
func TestCgroupPerVM(t *testing.T) {
	d, _ := cgroupDriver(t)
	sb := startSpec(t, d, "s_cgroupstop", 512)
	g := sb.vmm.Group()
	if pids, err := g.PIDs(); err != nil || !slices.Equal(pids, []int{sb.PID()}) {
		t.Errorf("processes in the VM's cgroup: %v (%v), want QEMU's %d alone", pids, err, sb.PID())
	}
	if got, err := g.MemoryLimit(); err != nil || got != (512+128+192)<<20 || d.ReservedMiB(sandbox.Spec{MemoryMiB: 512}) != 832 {
		t.Errorf("memory limit %d MiB (%v), want 832", got>>20, err)
	}
	// Everything QEMU touched is charged to its cgroup: at least the guest
	// memory the boot used.
	if used, err := g.MemoryUsage(); err != nil || used < 64<<20 {
		t.Errorf("the VM's cgroup is charged %d MiB (%v): QEMU's memory is not counted there", used>>20, err)
	}
	if adj, err := cgroup.OOMScoreAdj(sb.PID()); err != nil || adj != cgroup.VMMOOMScoreAdj {
		t.Errorf("QEMU's oom_score_adj is %d (%v), want %d", adj, err, cgroup.VMMOOMScoreAdj)
	}
	if err := sb.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertGone(t, g)

	// A crash: QEMU killed from outside.
	crashed := startSpec(t, d, "s_cgroupcrash", 256)
	g = crashed.vmm.Group()
	syscall.Kill(crashed.PID(), syscall.SIGKILL)
	<-crashed.Done()
	if err := crashed.ExitError(); err == nil || strings.Contains(err.Error(), "memory limit") {
		t.Errorf("exit error after SIGKILL: %v", err)
	}
	crashed.Stop(context.Background()) // what the session manager does after a crash
	assertGone(t, g)
}

// A VM whose QEMU passes its cgroup's memory limit is killed by the kernel,
// and its exit says so. The limit is set low by the test: with the real
// one the guest kernel runs out of guest memory first.
func TestCgroupOOM(t *testing.T) {
	d, _ := cgroupDriver(t)
	sb := startSpec(t, d, "s_cgroupoom", 256)
	g := sb.vmm.Group()
	used, err := g.MemoryUsage()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.SetMemoryLimit(used + 48<<20); err != nil {
		t.Fatal(err)
	}
	// The guest fills 200 MiB of its memory, which QEMU must back.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, execErr := sb.Guest().Exec(ctx, guest.ExecRequest{Argv: []string{"sh", "-c",
		"mkdir -p /tmp/fill && mount -t tmpfs -o size=90% tmpfs /tmp/fill && head -c 200M /dev/zero > /tmp/fill/x"}, TimeoutSec: 100}, nil)
	select {
	case <-sb.Done():
	case <-ctx.Done():
		t.Fatalf("QEMU was not killed (exec: %v)", execErr)
	}
	err = sb.ExitError()
	if err == nil || !strings.Contains(err.Error(), "the VM ran out of its memory limit of "+strconv.Itoa(int((used+48<<20)>>20))+" MiB") || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("exit error %v", err)
	}
	t.Logf("exit: %.200s", err)
	sb.Stop(context.Background())
	assertGone(t, g)
}
