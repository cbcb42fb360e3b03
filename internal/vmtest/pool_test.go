package vmtest

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/hostinfo"
	"github.com/execlaw/execlaw/internal/network"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/qemu"
	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/testutil"
)

// newPoolEnv is a server keeping a warm pool of size VMs, with room for
// maxSessions sandboxes (pooled ones included).
func newPoolEnv(t *testing.T, size, maxSessions int, opts ...func(*apitest.Options)) *env {
	t.Helper()
	tb, pfx := newTestbed(t)
	cfg := network.Config{NetNSPrefix: pfx + "s-", DNS: []netip.Addr{netip.MustParseAddr("192.0.2.53")}}
	return newServerWith(t, tb, pfx, cfg, testutil.VMImage(t), maxSessions, nil,
		append([]func(*apitest.Options){func(o *apitest.Options) { o.WarmPool = size }}, opts...)...)
}

// pool is the warm pool as /api/system shows it.
func (e *env) pool(t testing.TB) session.PoolStats {
	t.Helper()
	var v struct{ Pool session.PoolStats }
	e.h.Must(200, "GET", "/api/system", nil).JSON(t, &v)
	return v.Pool
}

// waitPool polls the pool until ok holds.
func (e *env) waitPool(t testing.TB, what string, ok func(session.PoolStats) bool) session.PoolStats {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		p := e.pool(t)
		if ok(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pool never got %s: %+v", what, p)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// pooledDirs are the sandbox directories of the VMs waiting in the pool.
func (e *env) pooledDirs() []string {
	dirs, _ := filepath.Glob(filepath.Join(e.h.DataDir, "sandboxes", "p_*"))
	return dirs
}

// defaultSession creates a session of the default size (what the pool
// holds) and waits until it is active.
func (e *env) defaultSession(t *testing.T) string {
	t.Helper()
	v := e.h.AnthropicSession(e.fake, nil)
	e.h.WaitState(v.ID, "active")
	return v.ID
}

// fromPool reports whether a session's boot said it took a pooled VM.
func (e *env) fromPool(t *testing.T, id string) bool {
	t.Helper()
	evs, err := e.h.Store.Events(context.Background(), id, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Type == event.Status && strings.Contains(string(ev.Data), "ready (from pool)") {
			return true
		}
	}
	return false
}

// guestFacts are what a claim must make a session's own.
type guestFacts struct {
	hostname, ip, bootID, random, clock string
	// before and after are the host's time around the tool call.
	before, after time.Time
}

func (e *env) facts(t *testing.T, id string) guestFacts {
	t.Helper()
	before := time.Now()
	out := e.bash(t, id, "hostname; hostname -I; cat /proc/sys/kernel/random/boot_id; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s.%N")
	after := time.Now()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("guest facts: %q", out)
	}
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return guestFacts{hostname: lines[0], ip: lines[1], bootID: lines[2], random: lines[3], clock: lines[4], before: before, after: after}
}

// Sessions of the default size start from the pool: each claimed VM gets
// the session's host name, keeps an address of its own, has the host's
// time, and entropy no other session shares; the pool refills; a pooled
// VM killed while it waits is replaced, and nothing is left at the end.
func TestWarmPool(t *testing.T) {
	e := newPoolEnv(t, 2, 5)
	before, err := e.tb.State()
	if err != nil {
		t.Fatal(err)
	}
	e.waitPool(t, "2 ready VMs", func(p session.PoolStats) bool { return p.Ready == 2 })

	a, b := e.defaultSession(t), e.defaultSession(t)
	for _, id := range []string{a, b} {
		if !e.fromPool(t, id) {
			t.Errorf("session %s did not start from the pool", id)
		}
	}
	if p := e.pool(t); p.Hits != 2 || p.Misses != 0 {
		t.Errorf("pool after two sessions: %+v, want 2 hits and no misses", p)
	}
	fa, fb := e.facts(t, a), e.facts(t, b)
	checkClock(t, fa.clock, fa.before, fa.after)
	checkClock(t, fb.clock, fb.before, fb.after)
	for id, f := range map[string]guestFacts{a: fa, b: fb} {
		if want := "execlaw-" + strings.TrimPrefix(id, "s_")[:12]; f.hostname != want {
			t.Errorf("session %s's host name is %q, want %q", id, f.hostname, want)
		}
		if _, err := netip.ParseAddr(f.ip); err != nil {
			t.Errorf("session %s has no single address: %q", id, f.ip)
		}
	}
	if fa.ip == fb.ip || fa.bootID == fb.bootID || fa.random == fb.random {
		t.Errorf("two pooled sessions share what is each one's own:\n%+v\n%+v", fa, fb)
	}
	// The workspace is the session's own disk, moved with the VM.
	e.bash(t, a, "echo only-in-a > /workspace/a.txt")
	if out := e.bash(t, b, "cat /workspace/a.txt 2>&1; df --output=target /workspace | tail -1"); strings.Contains(out, "only-in-a") || !strings.Contains(out, "/workspace") {
		t.Errorf("session b's workspace: %q", out)
	}
	for _, id := range []string{a, b} {
		if _, err := os.Stat(filepath.Join(e.h.DataDir, "sandboxes", id)); err != nil {
			t.Errorf("the claimed VM's directory was not moved to its session's: %v", err)
		}
	}

	// The pool refills behind the sessions.
	e.waitPool(t, "refilled", func(p session.PoolStats) bool { return p.Ready == 2 })

	// A pooled VM killed while it waits is replaced; its directory goes.
	dirs := e.pooledDirs()
	if len(dirs) != 2 {
		t.Fatalf("pooled VM directories: %v", dirs)
	}
	victim := dirs[0]
	pids := apitest.ProcessesMentioning(victim)
	if len(pids) == 0 {
		t.Fatalf("no process for the pooled VM in %s", victim)
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	e.waitPool(t, "a replacement for the killed VM", func(p session.PoolStats) bool {
		now := e.pooledDirs()
		return p.Ready == 2 && len(now) == 2 && !slices.Contains(now, victim)
	})
	if left := apitest.ProcessesMentioning(victim); len(left) > 0 {
		t.Errorf("the killed pooled VM left processes: %v", left)
	}

	for _, id := range []string{a, b} {
		e.h.Must(200, "DELETE", "/api/sessions/"+id, nil)
	}
	e.h.Stop() // stops the pool too
	e.waitNothingLeft(t, before)
}

// The pool obeys the memory gate: with room for one VM of its size, it
// boots one and says why it holds no second; a session takes that one and
// the pool does not refill past the gate.
func TestWarmPoolMemoryGate(t *testing.T) {
	d, err := qemu.New(qemu.Config{Image: testutil.VMImage(t), Accel: qemu.AccelTCG})
	if err != nil {
		t.Fatal(err)
	}
	mem, err := hostinfo.ReadMemory()
	if err != nil {
		t.Fatal(err)
	}
	// Committed memory may reach one and a half pooled VMs.
	one := d.ReservedMiB(sandbox.Spec{VCPUs: session.DefaultVCPUs, MemoryMiB: session.DefaultMemoryMiB})
	const percent = 90
	overcommit := 1.5 * float64(one) / (float64(mem.TotalMiB) * percent / 100)
	e := newPoolEnv(t, 2, 5, func(o *apitest.Options) { o.MemPercent, o.MemoryOvercommit = percent, overcommit })

	p := e.waitPool(t, "one ready VM, held back by memory", func(p session.PoolStats) bool {
		return p.Ready == 1 && p.Booting == 0 && strings.Contains(p.Short, "memory")
	})
	t.Logf("pool: %+v", p)
	id := e.defaultSession(t)
	if !e.fromPool(t, id) {
		t.Errorf("the session did not take the pooled VM")
	}
	// The refill after the claim meets the gate: the session holds the room.
	p = e.waitPool(t, "a refill refused", func(p session.PoolStats) bool {
		return p.Hits == 1 && strings.Contains(p.Short, "memory")
	})
	if p.Ready+p.Booting != 0 {
		t.Errorf("the pool grew past the memory gate: %+v", p)
	}
	if dirs := e.pooledDirs(); len(dirs) != 0 {
		t.Errorf("pooled VMs past the gate: %v", dirs)
	}
}

// A session that needs the room of a pooled VM still booting gets it: the
// boot is cancelled (its QEMU and directory go) and the session boots its
// own; the pool refills when the session ends.
func TestWarmPoolBootGivesWay(t *testing.T) {
	e := newPoolEnv(t, 1, 1)
	before, err := e.tb.State()
	if err != nil {
		t.Fatal(err)
	}
	e.waitPool(t, "a VM booting", func(p session.PoolStats) bool { return p.Booting == 1 })
	booting := e.pooledDirs()
	if len(booting) != 1 {
		t.Fatalf("the booting pooled VM's directory: %v", booting)
	}
	id := e.defaultSession(t) // room for one: the boot's
	if e.fromPool(t, id) {
		t.Error("the session started from the pool, which had no ready VM")
	}
	deadline := time.Now().Add(time.Minute)
	for len(e.pooledDirs()) > 0 || len(apitest.ProcessesMentioning(booting[0])) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the cancelled boot left %v, processes %v", e.pooledDirs(), apitest.ProcessesMentioning(booting[0]))
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	if p := e.pool(t); p.Ready+p.Booting != 0 || p.Misses != 1 {
		t.Errorf("the pool beside a session holding the only room: %+v", p)
	}
	e.h.Must(200, "DELETE", "/api/sessions/"+id, nil)
	e.waitPool(t, "refilled after the session", func(p session.PoolStats) bool { return p.Ready == 1 })
	e.h.Stop()
	e.waitNothingLeft(t, before)
}
