package cgroup

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the processes the tests confine:
// EXECLAW_CGROUP_HELPER=alloc:N allocates and touches N MiB, then says so.
func TestMain(m *testing.M) {
	if h := os.Getenv("EXECLAW_CGROUP_HELPER"); h != "" {
		os.Exit(helper(h))
	}
	os.Exit(m.Run())
}

func helper(what string) int {
	if n, ok := strings.CutPrefix(what, "alloc:"); ok {
		// Where it runs, before it allocates anything.
		cg, _ := os.ReadFile("/proc/self/cgroup")
		os.Stdout.Write(cg)
		mib, _ := strconv.Atoi(n)
		b := make([]byte, mib<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		fmt.Printf("touched %d MiB\n", mib)
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper", what)
	return 2
}

// newManager makes a manager for a fresh instance and removes what it made
// when the test ends. The in-guest run (internal/vmtest) sets
// EXECLAW_CGROUP_WANT_VERSION to make sure it tests the hierarchy it booted.
func newTestManager(t *testing.T) *Manager {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating cgroups needs root here")
	}
	m, err := New(randomInstance())
	if err != nil {
		t.Fatal(err)
	}
	if want := os.Getenv("EXECLAW_CGROUP_WANT_VERSION"); want != "" && want != strconv.Itoa(m.Version()) {
		t.Fatalf("cgroup v%d, want v%s (%s)", m.Version(), want, m)
	}
	t.Logf("%s", m)
	t.Cleanup(func() {
		if _, err := m.Sweep(); err != nil {
			t.Error(err)
		}
		if err := m.Close(); err != nil {
			t.Error(err)
		}
		for _, d := range m.Dirs() {
			if _, err := os.Stat(d); err == nil {
				t.Errorf("%s left behind", d)
			}
		}
	})
	return m
}

// mine is the instance's directory name.
func mine(m *Manager) string { return m.dirName() }

func randomInstance() string {
	var b [3]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// start runs cmd inside g, the way the VM drivers start a VMM.
func start(t *testing.T, g *Group, cmd *exec.Cmd) {
	t.Helper()
	done, err := g.Prepare(cmd)
	if err != nil {
		t.Fatal(err)
	}
	err = cmd.Start()
	done()
	if err != nil {
		t.Fatal(err)
	}
}

func self(t *testing.T, helper string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = []string{"EXECLAW_CGROUP_HELPER=" + helper}
	return cmd
}

// A process that allocates past its group's memory limit is killed by the
// kernel's OOM killer, and the group's counter says so; one that stays
// under it is left alone.
func TestMemoryLimitOOMKills(t *testing.T) {
	m := newTestManager(t)
	g, err := m.Create("vm-oom", Limits{MemoryBytes: 64 << 20, Pids: 64})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := g.MemoryLimit(); err != nil || got != 64<<20 {
		t.Fatalf("memory limit %d, %v", got, err)
	}

	small := self(t, "alloc:16")
	var out strings.Builder
	small.Stdout = &out
	start(t, g, small)
	if err := small.Wait(); err != nil || !strings.Contains(out.String(), "touched 16 MiB") {
		t.Fatalf("a process under the limit: %v, %q", err, out.String())
	}
	// It ran in the group from its first instruction on (v1: memory's
	// line, v2: the one line).
	if !strings.Contains(out.String(), "/"+mine(m)+"/vm-oom\n") {
		t.Errorf("the helper ran in %q, want the group", out.String())
	}
	if n, err := g.OOMKills(); err != nil || n != 0 {
		t.Fatalf("oom kills after a process under the limit: %d, %v", n, err)
	}

	big := self(t, "alloc:512")
	out.Reset()
	big.Stdout = &out
	start(t, g, big)
	err = big.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("a process past the limit ended with %v, output %q; want SIGKILL", err, out.String())
	}
	if n, err := g.OOMKills(); err != nil || n == 0 {
		t.Fatalf("oom kills after a process past the limit: %d, %v", n, err)
	}
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	for _, d := range g.Dirs() {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after Remove: %v", d, err)
		}
	}
}

// A fork bomb stops at the group's pids limit.
func TestPidsLimitStopsForkBomb(t *testing.T) {
	m := newTestManager(t)
	const limit = 20
	g, err := m.Create("vm-forks", Limits{MemoryBytes: 256 << 20, Pids: limit})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := g.hierOf("pids.max"); !ok {
		t.Skip("no pids controller here")
	}
	bomb := exec.Command("/bin/sh", "-c", `i=0; while [ $i -lt 200 ]; do sleep 600 & i=$((i+1)); done; echo started all`)
	// A file, not a pipe: the sleeps keep their copy of it open.
	outFile, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer outFile.Close()
	bomb.Stdout, bomb.Stderr = outFile, outFile
	start(t, g, bomb)
	bomb.Wait()
	out, _ := os.ReadFile(outFile.Name())
	pids, err := g.PIDs()
	if err != nil {
		t.Fatal(err)
	}
	h, _ := g.hierOf("pids.max")
	refused, err := readKey(filepath.Join(h.dir, "pids.events"), "max")
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) > limit || refused == 0 || strings.Contains(string(out), "started all") {
		t.Fatalf("%d processes in the group (limit %d), %d forks refused; shell said %q", len(pids), limit, refused, out)
	}
	t.Logf("%d processes, %d forks refused", len(pids), refused)
	// Remove kills what the bomb left.
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		if syscall.Kill(p, 0) == nil {
			if b, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/stat"); !strings.Contains(string(b), ") Z ") {
				t.Errorf("pid %d still running after Remove", p)
			}
		}
	}
}

// The limits land in the files of the hierarchy in use, with the value
// each version wants.
func TestCreateWritesLimits(t *testing.T) {
	m := newTestManager(t)
	g, err := m.Create("vm-files", Limits{MemoryBytes: 300 << 20, Pids: 130, CPUWeight: 200, CPUQuota: 1.5, IOWeight: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	want := map[string]string{"memory.max": "314572800", "pids.max": "130", "cpu.weight": "200", "cpu.max": "150000 100000", "memory.swap.max": "0"}
	if m.Version() == V1 {
		want = map[string]string{"memory.limit_in_bytes": "314572800", "pids.max": "130", "cpu.shares": "2048", "cpu.cfs_quota_us": "150000", "cpu.cfs_period_us": "100000"}
	}
	for file, v := range want {
		h, ok := g.hierOf(file)
		if !ok {
			t.Logf("%s: no %s controller here", file, controller(file))
			continue
		}
		b, err := os.ReadFile(filepath.Join(h.dir, file))
		if file == "memory.swap.max" && errors.Is(err, fs.ErrNotExist) && !exists(filepath.Join(h.dir, "memory.swap.current")) {
			// A kernel built without swap (the guest kernel) has no swap
			// files at all; there is nothing to limit.
			t.Logf("%s: this kernel has no swap", file)
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		if got := string(trimNL(b)); got != v {
			t.Errorf("%s = %q, want %q", file, got, v)
		}
	}
	if _, err := m.Create("vm-files", Limits{MemoryBytes: 1 << 30}); err == nil {
		t.Error("creating an existing group succeeded")
	}
	if _, err := os.Stat(g.Dirs()[0]); err != nil {
		t.Errorf("a failed Create removed the existing group: %v", err)
	}
	if _, err := m.Create("../escape", Limits{MemoryBytes: 1 << 30}); err == nil {
		t.Error("a name with a slash was accepted")
	}
}

// Sweep removes the groups an earlier run of this instance left, killing
// their processes, and leaves other instances' alone.
func TestSweepOnlyThisInstance(t *testing.T) {
	mine := newTestManager(t)
	other := newTestManager(t)
	var cmds []*exec.Cmd
	for _, m := range []*Manager{mine, other} {
		g, err := m.Create("vm-left", Limits{MemoryBytes: 64 << 20})
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sleep", "600")
		start(t, g, cmd)
		cmds = append(cmds, cmd)
		if _, err := m.Create("vm-empty", Limits{MemoryBytes: 64 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	})
	waited := make(chan error, 1)
	go func() { waited <- cmds[0].Wait() }()

	// A new run of the same instance.
	again, err := New(mine.instance)
	if err != nil {
		t.Fatal(err)
	}
	removed, err := again.Sweep()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{"vm-empty", "vm-left"}) {
		t.Errorf("swept %v", removed)
	}
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("the left-behind process was not killed")
	}
	for _, d := range mine.Dirs() {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if e.IsDir() {
				t.Errorf("%s still holds %s", d, e.Name())
			}
		}
	}
	g := other.Open("vm-left")
	if pids, err := g.PIDs(); err != nil || !slices.Contains(pids, cmds[1].Process.Pid) {
		t.Errorf("the other instance's group lost its process: %v, %v", pids, err)
	}
	if _, err := os.Stat(other.Open("vm-empty").Dirs()[0]); err != nil {
		t.Errorf("the other instance's empty group was removed: %v", err)
	}
}

// The jailer gets the instance directory as its parent cgroup and the
// limits as --cgroup flags in the hierarchy's own file names.
func TestJailerArgs(t *testing.T) {
	m := newTestManager(t)
	args := strings.Join(m.JailerArgs(Limits{MemoryBytes: 100 << 20, Pids: 140, CPUWeight: 100}), " ")
	want := fmt.Sprintf("--cgroup-version %d --parent-cgroup %s", m.Version(), m.parentRel)
	mem := "--cgroup memory.max=104857600"
	if m.Version() == V1 {
		mem = "--cgroup memory.limit_in_bytes=104857600"
	}
	if !strings.HasPrefix(args, want) || !strings.Contains(args, mem) || !strings.Contains(args, "pids.max=140") {
		t.Fatalf("jailer args %q", args)
	}
	if !strings.HasSuffix(m.Dirs()[0], m.parentRel) {
		t.Errorf("--parent-cgroup %s is not where the instance's cgroups are (%s)", m.parentRel, m.Dirs()[0])
	}
}

// Hierarchies are recognised from mountinfo: unified v2, and hybrid (a v2
// mount without controllers beside the v1 ones).
func TestParseMountinfo(t *testing.T) {
	hybrid := `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
42 31 0:39 /docker/abc /sys/fs/cgroup/my\040pids rw - cgroup cgroup rw,pids
`
	got := parseMountinfo([]byte(hybrid))
	if len(got) != 4 || !slices.Equal(got[0].opts, []string{"rw", "cpu", "cpuacct"}) || !got[2].v2 ||
		got[3].dir != "/sys/fs/cgroup/my pids" || got[3].root != "/docker/abc" {
		t.Fatalf("%+v", got)
	}
	if d := onDisk(got[3], "/docker/abc/x"); d != "/sys/fs/cgroup/my pids/x" {
		t.Errorf("onDisk = %s", d)
	}
	own := parseProcCgroup([]byte("12:pids:/a\n4:cpu,cpuacct:/b\n0::/system.slice/execlaw.service\n"))
	if own["pids"] != "/a" || own["cpuacct"] != "/b" || own[""] != "/system.slice/execlaw.service" {
		t.Errorf("%v", own)
	}
}

func TestLimitSettings(t *testing.T) {
	l := Limits{MemoryBytes: 1 << 30, Pids: 100, CPUWeight: 300, CPUQuota: 0.5, IOWeight: 100}
	str := func(s []setting) string {
		var b strings.Builder
		for _, x := range s {
			fmt.Fprintf(&b, "%s=%s ", x.file, x.value)
		}
		return b.String()
	}
	if got, want := str(l.settings(V2)), "memory.max=1073741824 memory.swap.max=0 memory.oom.group=1 pids.max=100 cpu.weight=300 cpu.max=50000 100000 io.weight=default 100 "; got != want {
		t.Errorf("v2: %s\nwant %s", got, want)
	}
	if got, want := str(l.settings(V1)), "memory.limit_in_bytes=1073741824 memory.memsw.limit_in_bytes=1073741824 pids.max=100 cpu.shares=3072 cpu.cfs_period_us=100000 cpu.cfs_quota_us=50000 blkio.weight=500 "; got != want {
		t.Errorf("v1: %s\nwant %s", got, want)
	}
	if s := (Limits{}).settings(V2); len(s) != 0 {
		t.Errorf("zero limits set %v", s)
	}
}

// Raising a process's OOM score needs no privilege; it is what every VMM
// gets.
func TestOOMScoreAdj(t *testing.T) {
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if err := SetOOMScoreAdj(cmd.Process.Pid, VMMOOMScoreAdj); err != nil {
		t.Fatal(err)
	}
	if got, err := OOMScoreAdj(cmd.Process.Pid); err != nil || got != VMMOOMScoreAdj {
		t.Fatalf("oom_score_adj %d, %v", got, err)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
