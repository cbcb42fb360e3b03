package firecracker

import (
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/cgroup"
	"github.com/execlaw/execlaw/internal/sandbox/vm"
	"github.com/execlaw/execlaw/internal/testutil"
)

// testCgroups is a cgroup manager for a fresh instance, swept when the test
// ends.
func testCgroups(t *testing.T) *cgroup.Manager {
	t.Helper()
	return testutil.Cgroups(t)
}

func gone(t *testing.T, g *cgroup.Group) {
	t.Helper()
	for _, d := range g.Dirs() {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s is still there (%v)", d, err)
		}
	}
}

// Firecracker runs in a cgroup of its own, limited to the guest's memory
// plus its overhead, with a raised OOM score; the cgroup goes when the VM
// stops.
func TestCgroup(t *testing.T) {
	cg := testCgroups(t)
	f := newFake(t, fakeConfig{})
	d := f.driver(func(c *Config) { c.Resources = vm.Resources{Cgroups: cg} })
	spec, _ := newSpec(t, "none")
	s, err := d.Start(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	sb := s.(*Sandbox)
	g := sb.vmm.Group()
	if pids, err := g.PIDs(); err != nil || !slices.Contains(pids, sb.pid) {
		t.Errorf("firecracker (%d) is not in its cgroup: %v %v", sb.pid, pids, err)
	}
	want := int64(256+vm.FirecrackerOverheadMiB(256)) << 20
	if got, err := g.MemoryLimit(); err != nil || got != want || d.ReservedMiB(spec) != 256+64 {
		t.Errorf("memory limit %d (%v), want %d", got, err, want)
	}
	if adj, err := cgroup.OOMScoreAdj(sb.pid); err != nil || adj != cgroup.VMMOOMScoreAdj {
		t.Errorf("oom_score_adj %d, %v", adj, err)
	}
	if err := sb.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	gone(t, g)
}

// A Firecracker that passes its cgroup's memory limit is killed by the
// kernel, the sandbox's exit says so, and its cgroup is removed.
func TestCgroupOOM(t *testing.T) {
	cg := testCgroups(t)
	f := newFake(t, fakeConfig{})
	d := f.driver(func(c *Config) { c.Resources = vm.Resources{Cgroups: cg} })
	spec, _ := newSpec(t, "none")
	s, err := d.Start(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	sb := s.(*Sandbox)
	defer sb.Stop(t.Context())
	g := sb.vmm.Group()
	if d.ReservedMiB(spec) != 256+64 {
		t.Errorf("reserved %d MiB", d.ReservedMiB(spec))
	}
	// The fake is far smaller than a VM: it takes a GiB, past the limit.
	syscall.Kill(sb.pid, syscall.SIGUSR1)
	select {
	case <-sb.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the VMM was not killed")
	}
	if err := sb.ExitError(); err == nil || !strings.Contains(err.Error(), "ran out of its memory limit of 320 MiB (256 MiB of guest memory and 64 MiB for Firecracker)") {
		t.Fatalf("exit error %v", err)
	}
	gone(t, g)
}

// Jailed, the jailer makes the cgroup through its own flags: --parent-cgroup
// is the instance's directory, --id names the VM's cgroup; the driver
// removes it when the VM stops.
func TestJailerCgroup(t *testing.T) {
	cg := testCgroups(t)
	f := newFake(t, fakeConfig{})
	const uid, gid = 4242, 4343
	d := f.driver(func(c *Config) {
		c.JailerBinary, c.JailerUID, c.JailerGID = f.jailer, uid, gid
		c.Resources = vm.Resources{Cgroups: cg}
	})
	spec, _ := newSpec(t, "none")
	s, err := d.Start(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	sb := s.(*Sandbox)
	var args []string
	b, _ := os.ReadFile(f.cfg.JailerRecord)
	_ = json.Unmarshal(b, &args)
	joined := strings.Join(args, " ")
	for _, want := range []string{"--cgroup-version " + strconv.Itoa(cg.Version()), "--parent-cgroup execlaw-", "pids.max=" + strconv.Itoa(int(vm.VMMPids(2)))} {
		if !strings.Contains(joined, want) {
			t.Errorf("jailer args %q lack %q", joined, want)
		}
	}
	g := cg.Open(vmID(spec.SessionID))
	if pids, err := g.PIDs(); err != nil || !slices.Contains(pids, sb.pid) {
		t.Errorf("the jailed firecracker (%d) is not in its cgroup: %v %v", sb.pid, pids, err)
	}
	if got, err := g.MemoryLimit(); err != nil || got != int64(256+64)<<20 {
		t.Errorf("memory limit %d, %v", got, err)
	}
	if adj, _ := cgroup.OOMScoreAdj(sb.pid); adj != cgroup.VMMOOMScoreAdj {
		t.Errorf("oom_score_adj %d", adj)
	}
	if err := sb.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	gone(t, g)

	// The driver owns the jailer's cgroup flags when it confines VMs.
	_, err = New(Config{Binary: f.bin, Image: f.image, JailerBinary: f.jailer, JailerUID: uid, JailerGID: gid,
		JailerArgs: []string{"--cgroup-version", "2"}, Resources: vm.Resources{Cgroups: cg}})
	if err == nil || !strings.Contains(err.Error(), "--cgroup-version") {
		t.Errorf("New with a --cgroup-version of its own: %v", err)
	}
}

// A paused VM holds no cgroup; the restored one has its own again, with the
// same limit.
func TestCgroupPauseRestore(t *testing.T) {
	jailedVariants(t, func(t *testing.T, jailed bool) {
		cg := testCgroups(t)
		f := newFake(t, fakeConfig{})
		d := f.driver(func(c *Config) {
			c.Resources = vm.Resources{Cgroups: cg}
			jailerConfig(f, jailed)(c)
		})
		spec, _ := newSpec(t, "none")
		group := func(sb *Sandbox) *cgroup.Group {
			if jailed {
				return cg.Open(vmID(spec.SessionID)) // the jailer's
			}
			return sb.vmm.Group()
		}
		s, err := d.Start(t.Context(), spec)
		if err != nil {
			t.Fatal(err)
		}
		sb := s.(*Sandbox)
		g := group(sb)
		if pids, err := g.PIDs(); err != nil || !slices.Contains(pids, sb.pid) {
			t.Errorf("firecracker (%d) is not in its cgroup: %v %v", sb.pid, pids, err)
		}
		snap, err := sb.Pause(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		gone(t, g)
		r, err := d.Restore(t.Context(), spec, snap)
		if err != nil {
			t.Fatal(err)
		}
		rb := r.(*Sandbox)
		rg := group(rb)
		if pids, err := rg.PIDs(); err != nil || !slices.Contains(pids, rb.pid) {
			t.Errorf("the restored firecracker (%d) is not in its cgroup: %v %v", rb.pid, pids, err)
		}
		if got, err := rg.MemoryLimit(); err != nil || got != int64(256+64)<<20 {
			t.Errorf("memory limit %d, %v", got, err)
		}
		if err := rb.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
		gone(t, rg)
	})
}
