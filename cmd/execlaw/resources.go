package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/execlaw/execlaw/internal/cgroup"
	"github.com/execlaw/execlaw/internal/network"
	"github.com/execlaw/execlaw/internal/sandbox/detect"
	"github.com/execlaw/execlaw/internal/sandbox/vm"
)

// Settings of --vm-cgroups.
const (
	cgroupsAuto = "auto" // per-VM cgroups when the host allows this server them
	cgroupsOn   = "on"   // refuse to start without them
	cgroupsOff  = "off"  // none
)

// perUserSessions is --max-sessions-per-user resolved: as given, or by
// default half of --max-sessions (at least 1) where users share the server
// (--auth exedev), and all of them where there is one user (token, none).
func perUserSessions(c serveConfig) int {
	if c.MaxSessionsPerUser > 0 {
		return c.MaxSessionsPerUser
	}
	if c.Auth == "exedev" {
		return max(1, c.MaxSessions/2)
	}
	return c.MaxSessions
}

// checkResourceFlags checks the flags of the VMs' resource walls.
func checkResourceFlags(c serveConfig) error {
	switch {
	case c.MaxSessionsPerUser < 0 || c.MaxSessionsPerUser > c.MaxSessions:
		return fmt.Errorf("--max-sessions-per-user (EXECLAW_MAX_SESSIONS_PER_USER) must be between 1 and --max-sessions (%d), or 0 for the default", c.MaxSessions)
	case !(c.MemoryOvercommit > 0 && c.MemoryOvercommit <= 10):
		return errors.New("--memory-overcommit (EXECLAW_MEMORY_OVERCOMMIT) must be in (0, 10]")
	case !(c.VMCPUQuota >= 0 && c.VMCPUQuota <= 1):
		return errors.New("--vm-cpu-quota (EXECLAW_VM_CPU_QUOTA) must be in [0, 1]: a share of each session's vCPUs, 0 for no cap")
	case c.VMCgroups != cgroupsAuto && c.VMCgroups != cgroupsOn && c.VMCgroups != cgroupsOff:
		return fmt.Errorf("--vm-cgroups (EXECLAW_VM_CGROUPS) must be auto, on or off, not %q", c.VMCgroups)
	}
	return nil
}

// vmResources prepares how this server confines its VMMs: a cgroup each
// (per --vm-cgroups), made under this instance's name after sweeping what an
// earlier run of it left, and a raised OOM score. close removes the
// instance's cgroup directory at the end.
func vmResources(c serveConfig, dataDir string, log *slog.Logger) (r vm.Resources, close func(), err error) {
	r = vm.Resources{CPUQuota: c.VMCPUQuota, Logger: log}
	close = func() {}
	if c.VMCgroups == cgroupsOff {
		log.Info("VMs run without cgroups of their own (--vm-cgroups off)")
		return r, close, nil
	}
	cg, err := cgroup.New(network.InstanceID(dataDir))
	if err != nil {
		if c.VMCgroups == cgroupsOn {
			return r, close, fmt.Errorf("--vm-cgroups on: %w", err)
		}
		log.Warn("VMs run without cgroups of their own: no per-VM memory, pids, CPU or IO limits (see execlaw doctor)", "err", err)
		return r, close, nil
	}
	swept, err := cg.Sweep()
	if len(swept) > 0 {
		log.Info("removed VM cgroups an earlier run left", "cgroups", swept)
	}
	if err != nil {
		return r, close, fmt.Errorf("sweeping old VM cgroups: %w", err)
	}
	log.Info("per-VM cgroups", "where", cg.String(), "cpuQuota", c.VMCPUQuota)
	r.Cgroups = cg
	return r, func() {
		if err := cg.Close(); err != nil {
			log.Warn("remove the VM cgroups' directory", "err", err)
		}
	}, nil
}

// ownOOMScore sets the server's own OOM score: lowered when it runs VMs (a
// VM should die before the server that keeps every session), which often
// is not permitted and then tolerated; not below zero when it runs process
// sandboxes, which inherit it and must not be protected like the server.
func ownOOMScore(isolated bool, log *slog.Logger) {
	cur, err := cgroup.OOMScoreAdj(0)
	if err != nil {
		log.Warn("reading the server's OOM score", "err", err)
		return
	}
	switch {
	case isolated && cur > cgroup.ServerOOMScoreAdj:
		if err := cgroup.SetOOMScoreAdj(0, cgroup.ServerOOMScoreAdj); err != nil {
			log.Info("the server's OOM score stays as it is: lowering it is not permitted here; VMMs get a raised one, so the kernel still kills a VM first",
				"oomScoreAdj", cur, "err", err)
			return
		}
		log.Info("server OOM score lowered", "oomScoreAdj", cgroup.ServerOOMScoreAdj, "vmm", cgroup.VMMOOMScoreAdj)
	case !isolated && cur < 0:
		if err := cgroup.SetOOMScoreAdj(0, 0); err != nil {
			log.Warn("the process sandboxes inherit the server's lowered OOM score", "oomScoreAdj", cur, "err", err)
		}
	}
}

// resourceFindings are doctor's lines on the VMs' resource walls: which
// cgroup hierarchy this host has and whether this process can make per-VM
// cgroups in it (a probe group, created and removed under a name of its
// own), and whether OOM scores can be adjusted.
func resourceFindings(dataDir string) []detect.Finding {
	var out []detect.Finding
	cg, err := cgroup.New(network.InstanceID(dataDir) + "-doctor")
	if err != nil {
		out = append(out, detect.Finding{Check: "cgroups", Detail: fmt.Sprintf(
			"per-VM cgroups cannot be made by this process: %v. Under systemd, cgroup v2 with Delegate=yes in the unit gives the server a subtree of its own; on cgroup v1 (or hybrid) they need root", err)})
	} else {
		g, err := cg.Create("probe", cgroup.Limits{MemoryBytes: 64 << 20, Pids: 16})
		if err == nil {
			err = g.Remove()
		}
		if cerr := cg.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			out = append(out, detect.Finding{Check: "cgroups", Detail: fmt.Sprintf("%s, but a probe cgroup failed: %v", cg, err)})
		} else {
			out = append(out, detect.Finding{Check: "cgroups", OK: true, Detail: fmt.Sprintf(
				"this process can make per-VM cgroups (a probe was made and removed: %s). The server under its systemd unit can on cgroup v2, through Delegate=yes; on v1 (or hybrid) only root can", cg)})
		}
	}
	cur, err := cgroup.OOMScoreAdj(0)
	if err != nil {
		return append(out, detect.Finding{Check: "OOM scores", Detail: err.Error()})
	}
	lower := "the server can lower its own score"
	if lerr := cgroup.SetOOMScoreAdj(0, max(cur-1, -1000)); lerr != nil {
		lower = fmt.Sprintf("lowering the server's own score (%d) is not permitted here (%v); that is tolerated: the unit's OOMScoreAdjust=%d does it as systemd starts the server, and the VMMs' raised scores make the kernel kill a VM first anyway",
			cur, lerr, cgroup.ServerOOMScoreAdj)
	} else {
		cgroup.SetOOMScoreAdj(0, cur) // raising it back needs no privilege
	}
	return append(out, detect.Finding{Check: "OOM scores", OK: true, Detail: fmt.Sprintf(
		"VMMs get oom_score_adj %d (raising needs no privilege); %s", cgroup.VMMOOMScoreAdj, lower)})
}
