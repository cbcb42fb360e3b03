// Package sandbox defines what the session manager needs from a place to run an
// agent's tools: a Driver that starts Sandboxes, each reached through the guest
// protocol. Drivers live in subpackages (process, qemu, firecracker) and never
// import each other.
package sandbox

import (
	"context"

	"github.com/execlaw/execlaw/internal/guest"
)

// Spec is what a session asks of a new sandbox.
type Spec struct {
	// SessionID names the sandbox in logs and host resources.
	SessionID string
	// Dir is a host directory that belongs to this sandbox alone (sockets, disks,
	// the process driver's workspace). It exists and is empty when Start is
	// called, unless Resume; the session manager removes it after Stop, and
	// keeps it while the session is paused.
	Dir string
	// VCPUs and MemoryMiB size a VM, DiskMiB its writable disk (0: the
	// driver's default); the process driver ignores them.
	VCPUs     int
	MemoryMiB int
	DiskMiB   int
	// Network is "full" or "none".
	Network string
	// Movable says Dir may be renamed while the sandbox runs: a pooled
	// sandbox, moved to its session's directory when it is claimed.
	Movable bool
	// Resume says Dir holds this session's sandbox from before (its
	// writable disk, the process driver's workspace), kept across a pause
	// or a restart: boot afresh on it rather than on an empty one.
	Resume bool
	// Progress, when set, is told each boot phase as it begins ("vmm", "kernel",
	// "init", "guest-api"...), so the UI can show where a slow boot is.
	Progress func(phase string)
}

// Driver starts sandboxes of one kind.
type Driver interface {
	// Name is what the API reports: "process", "qemu-tcg", "qemu-kvm", "firecracker".
	Name() string
	// Isolated is false for drivers that are not a security boundary.
	Isolated() bool
	// Start boots a sandbox and returns once its guest API answers. On error,
	// or when ctx ends first, nothing it started is left running.
	Start(ctx context.Context, spec Spec) (Sandbox, error)
}

// Sandbox is one running guest.
type Sandbox interface {
	// Guest is the control-protocol client for this sandbox.
	Guest() *guest.Client
	// Workspace is the directory inside the guest where the agent works.
	Workspace() string
	// Done is closed once the sandbox has exited, for any reason.
	Done() <-chan struct{}
	// ExitError says why the sandbox exited on its own (a crash); it is nil
	// before Done is closed and after a Stop.
	ExitError() error
	// Stop shuts the sandbox down and frees every host resource it holds
	// (processes, sockets, devices). It is safe to call more than once and
	// from several goroutines.
	Stop(ctx context.Context) error
}

// MemoryReserver is a Driver whose sandboxes each hold a known most of host
// memory: a VM's guest memory plus its VMM's overhead, which is also the
// memory limit of the VMM's cgroup. The session manager's memory gate
// counts it for every running session, touched or not. A driver that is not
// one (the process driver: its sandboxes have no VM memory and no limit)
// reserves nothing; only the host's memory in use counts for them.
type MemoryReserver interface {
	// ReservedMiB is what a sandbox started with spec may use at most.
	ReservedMiB(spec Spec) int
}

// Elsewhere is a driver whose sandboxes run on other machines (a cluster's
// nodes): their memory is not this host's, so the session manager's memory
// gate leaves them to the cluster's own admission and scheduling.
type Elsewhere interface {
	// RunsElsewhere reports whether sandboxes take none of this host's memory.
	RunsElsewhere() bool
}

// Pausable is a driver that says whether a session's files outlive its
// sandbox (a pod's do only on a workspace claim). Drivers without it keep
// them: a VM's disk is in the session's directory.
type Pausable interface {
	// Pausable reports whether a paused session resumes on its files.
	Pausable() bool
}

// KeepsFiles says whether d's sessions keep their files when their
// sandbox stops for a pause, or dies with a killed server.
func KeepsFiles(d Driver) bool {
	p, ok := d.(Pausable)
	return !ok || p.Pausable()
}

// Claimable is a Sandbox started ahead of need (a warm pool's) that a
// session can take: Claim rebinds it to spec's session and directory, into
// which the caller has already renamed the sandbox's own (it was started
// Movable), and tells the guest what is the session's own (its host name,
// the time, fresh entropy). Its size and network are those it was started
// with; the caller only claims a sandbox that fits.
type Claimable interface {
	Claim(ctx context.Context, spec Spec) error
}

// A Pooling driver's sandboxes are Claimable when started Movable: a warm
// pool of them is worth keeping. Drivers without it get no pool.
type Pooling interface {
	Poolable() bool
}
