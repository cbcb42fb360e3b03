package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/execlaw/execlaw/internal/hostinfo"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/detect"
	"github.com/execlaw/execlaw/internal/session"
)

// warmPoolAuto is --warm-pool auto before the driver is known.
const warmPoolAuto = -1

// parseWarmPool reads --warm-pool: auto, or a count that leaves room for
// at least one session of its own.
func parseWarmPool(v string, maxSessions int) (int, error) {
	if v == "auto" {
		return warmPoolAuto, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 64 || (n > 0 && n >= maxSessions) {
		return 0, fmt.Errorf("--warm-pool (EXECLAW_WARM_POOL) must be auto or a number from 0 to 64 below --max-sessions (%d), not %q", maxSessions, v)
	}
	return n, nil
}

// warmPoolSize resolves --warm-pool for the chosen driver: auto keeps one
// VM warm where sessions are VMs that can be pooled (a process session
// starts in milliseconds anyway) and --max-sessions leaves room for it.
func warmPoolSize(c serveConfig, driver sandbox.Driver) int {
	if c.WarmPool != warmPoolAuto {
		return c.WarmPool
	}
	// A pod kept warm holds a cluster's resources, which the operator
	// sizes: there the pool is asked for, not assumed.
	if e, ok := driver.(sandbox.Elsewhere); ok && e.RunsElsewhere() {
		return 0
	}
	if p, ok := driver.(sandbox.Pooling); ok && p.Poolable() && c.MaxSessions > 1 {
		return 1
	}
	return 0
}

// poolFinding is doctor's word on the warm pool: what serve would keep with
// these flags, what that commits of the host's memory, and the pooled VMs
// in the data directory now (a running server's, or an earlier run's that
// the next start sweeps).
func poolFinding(c serveConfig, driver sandbox.Driver, dataDir string) detect.Finding {
	f := detect.Finding{Check: "warm pool"}
	pooled, _ := filepath.Glob(filepath.Join(dataDir, "sandboxes", "p_*"))
	now := fmt.Sprintf("%d pooled VMs in %s now", len(pooled), filepath.Join(dataDir, "sandboxes"))
	if holder, running := dataDirHolder(dataDir); running {
		now += fmt.Sprintf(" (the server, pid %s, shows its pool at /api/system and in /metrics)", holder)
	} else if len(pooled) > 0 {
		now += " (no server runs: the next start removes them)"
	}
	if driver == nil {
		f.Detail = "no sandbox driver: no pool; " + now
		return f
	}
	n := warmPoolSize(c, driver)
	if p, ok := driver.(sandbox.Pooling); !ok || !p.Poolable() {
		f.Detail = fmt.Sprintf("the %s driver's sandboxes cannot be claimed from a pool: sessions start as they are asked for; %s", driver.Name(), now)
		return f
	}
	if n == 0 {
		f.Detail = "off (--warm-pool 0): every session boots its VM; " + now
		return f
	}
	size := fmt.Sprintf("%d VM(s) of %d vCPUs and %d MiB", n, session.DefaultVCPUs, session.DefaultMemoryMiB)
	reserved := ""
	if r, ok := driver.(sandbox.MemoryReserver); ok {
		one := r.ReservedMiB(sandbox.Spec{VCPUs: session.DefaultVCPUs, MemoryMiB: session.DefaultMemoryMiB})
		reserved = fmt.Sprintf(", which may use %d MiB", n*one)
		if mem, err := hostinfo.ReadMemory(); err == nil {
			limit := float64(mem.TotalMiB) * c.MemoryPercent / 100 * c.MemoryOvercommit
			reserved += fmt.Sprintf(" of the %.0f MiB the memory gate allows", limit)
			if float64(n*one) > limit {
				f.Detail = fmt.Sprintf("%s%s: more than the gate allows, so the pool stays short; %s", size, reserved, now)
				return f
			}
		}
	}
	f.OK = true
	f.Detail = fmt.Sprintf("%s kept booted for sessions of the default size%s; they give way to sessions; %s", size, reserved, now)
	return f
}

// dataDirHolder reports whether a server holds dataDir's lock, and its pid
// (see lockDataDir); it takes nothing.
func dataDirHolder(dataDir string) (string, bool) {
	path := filepath.Join(dataDir, "serve.lock")
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err == nil {
		return "", false // closing the file drops the lock
	}
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b)), true
}
