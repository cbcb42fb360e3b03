package vm

import (
	"fmt"
	"log/slog"
	"os/exec"
	"sync"

	"github.com/execlaw/execlaw/internal/cgroup"
)

// QEMUOverheadMiB is the host memory a QEMU VMM takes beyond its guest's
// memory: what its cgroup allows on top of the guest and what the memory
// gate counts for it. Measured here (qemu-tcg, Debian's 6.1 guest filling
// 85% of its memory through tmpfs, then 300 MiB of disk IO): 256, 512 and
// 1024 MiB guests peaked at 432, 688 and 1167 MiB of resident memory: ~90
// MiB of anonymous memory beyond the guest (TCG's translation cache, which the driver caps at 64
// MiB, and QEMU's heap) plus ~88 MiB of QEMU's own binary and libraries,
// charged to the first VM's cgroup that reads them. 192 MiB covers the two;
// the quarter of the guest's size on top covers what grows with it (QEMU's
// dirty-page bitmaps, TCG's software TLBs) and leaves the guest's disk
// traffic page cache to work in (page cache is reclaimed before the OOM
// killer acts, but a cgroup at its limit reclaims all the time). Under KVM
// there is no translation cache, so this is generous there.
func QEMUOverheadMiB(guestMiB int) int { return guestMiB/4 + 192 }

// FirecrackerOverheadMiB is the same for Firecracker, which Firecracker's
// documentation puts under 5 MiB per VM (it could not be measured here: no
// KVM). 64 MiB leaves room for its virtio queues, the page cache of the
// files it serves and the jailer's copy of its binary.
func FirecrackerOverheadMiB(guestMiB int) int { return 64 }

// VMMPids is a VMM's pids limit (processes and threads): QEMU's block layer
// runs up to 64 worker threads, plus one thread per vCPU and a handful of
// its own (an idle one has 5-6); Firecracker far fewer. A VMM never forks
// (QEMU runs with -sandbox spawn=deny), so this only stops one that was
// broken into from exhausting the host's pids.
func VMMPids(vcpus int) int64 { return 128 + int64(vcpus) }

// Resources is how each VMM is confined: a cgroup of its own (memory, pids,
// CPU and IO) and a raised OOM score. The zero value raises OOM scores only.
type Resources struct {
	// Cgroups makes the VM cgroups; nil runs VMMs without one (the host
	// offers none to this server).
	Cgroups *cgroup.Manager
	// CPUQuota caps each VMM's CPU time at this share of its vCPUs (0.5: a
	// 2-vCPU VM may use one host CPU's worth); 0 for no cap.
	CPUQuota float64
	// Logger reports what could not be applied; nil for none.
	Logger *slog.Logger
}

// Limits are the cgroup limits of a VM of guestMiB memory and vcpus whose
// VMM may use totalMiB of host memory in all.
func (r Resources) Limits(totalMiB, vcpus int) cgroup.Limits {
	vcpus = max(vcpus, 1)
	l := cgroup.Limits{
		MemoryBytes: int64(totalMiB) << 20,
		Pids:        VMMPids(vcpus),
		// A VM's share of contended CPU grows with its vCPUs.
		CPUWeight: 100 * uint64(vcpus),
		IOWeight:  100,
	}
	if r.CPUQuota > 0 {
		l.CPUQuota = r.CPUQuota * float64(vcpus)
	}
	return l
}

// VMM is one VMM's confinement, from before it starts until its cgroup is
// removed.
type VMM struct {
	r         Resources
	group     *cgroup.Group // nil without cgroups
	guestMiB  int
	limitMiB  int
	started   func() // closes what Prepare opened
	vmmName   string
	releaseMu sync.Mutex
	released  bool
}

// Confine creates the cgroup of session's VM (guestMiB of guest memory,
// totalMiB for guest and VMM together, vcpus) and makes cmd start inside
// it. Call Started once cmd.Start has returned, whatever it returned, and
// Release once the VMM has exited. cmd's Path and Args may change (cgroup
// v1: see cgroup.Group.Prepare), so set them before.
func (r Resources) Confine(cmd *exec.Cmd, sessionID, vmmName string, guestMiB, totalMiB, vcpus int) (*VMM, error) {
	v := &VMM{r: r, guestMiB: guestMiB, limitMiB: totalMiB, vmmName: vmmName, started: func() {}}
	if r.Cgroups == nil {
		return v, nil
	}
	g, err := r.Cgroups.Create("vm-"+sessionID, r.Limits(totalMiB, vcpus))
	if err != nil {
		return nil, err
	}
	done, err := g.Prepare(cmd)
	if err != nil {
		g.Remove()
		return nil, err
	}
	v.group, v.started = g, done
	return v, nil
}

// Jailed is the confinement of a VMM that the Firecracker jailer places in
// its cgroup itself (named id, its --id): args are the jailer's flags for
// it. Without cgroups args is empty.
func (r Resources) Jailed(id, vmmName string, guestMiB, totalMiB, vcpus int) (v *VMM, args []string) {
	v = &VMM{r: r, guestMiB: guestMiB, limitMiB: totalMiB, vmmName: vmmName, started: func() {}}
	if r.Cgroups == nil {
		return v, nil
	}
	v.group = r.Cgroups.Open(id)
	return v, r.Cgroups.JailerArgs(r.Limits(totalMiB, vcpus))
}

// Started is called once cmd.Start has returned; pid is the VMM's process,
// 0 when Start failed. The VMM's OOM score is raised so that the kernel,
// short of memory, kills a VM before the server. Failing to is logged, not
// fatal: the cgroup still bounds the VM.
func (v *VMM) Started(pid int) {
	v.started()
	if pid <= 0 {
		return
	}
	if err := cgroup.SetOOMScoreAdj(pid, cgroup.VMMOOMScoreAdj); err != nil && v.r.Logger != nil {
		v.r.Logger.Warn("could not raise the VMM's OOM score", "pid", pid, "err", err)
	}
}

// Group is the VM's cgroup; nil without cgroups.
func (v *VMM) Group() *cgroup.Group { return v.group }

// LimitMiB is the memory the VM and its VMM may use together.
func (v *VMM) LimitMiB() int { return v.limitMiB }

// OOMKilled says whether the kernel's OOM killer has killed a process of
// the VM's cgroup: read it once the VMM has exited, before Release.
func (v *VMM) OOMKilled() bool {
	if v == nil || v.group == nil {
		return false
	}
	n, err := v.group.OOMKills()
	return err == nil && n > 0
}

// OOMReason says why a VMM that OOMKilled ended: read it, too, before
// Release.
func (v *VMM) OOMReason() string {
	limit := v.limitMiB
	if b, err := v.group.MemoryLimit(); err == nil {
		limit = int(b >> 20) // what it was, should someone have changed it
	}
	detail := ""
	if limit == v.limitMiB {
		detail = fmt.Sprintf(" (%d MiB of guest memory and %d MiB for %s)", v.guestMiB, v.limitMiB-v.guestMiB, v.vmmName)
	}
	return fmt.Sprintf("the VM ran out of its memory limit of %d MiB%s, and the kernel's OOM killer ended it", limit, detail)
}

// Release removes the VM's cgroup, killing anything still in it. Call it
// once the VMM has exited; later calls do nothing.
func (v *VMM) Release() error {
	if v == nil {
		return nil
	}
	v.releaseMu.Lock()
	defer v.releaseMu.Unlock()
	if v.released || v.group == nil {
		return nil
	}
	v.released = true
	return v.group.Remove()
}
