package vmtest

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/session"
)

// startWork leaves, in a session's VM, a file and a process running in the
// background, and returns the process's pid in the guest.
func startWork(t *testing.T, e *env, id string) string {
	t.Helper()
	out := e.bash(t, id, "echo kept > /workspace/kept.txt; sleep 100000 >/dev/null 2>&1 & echo $!")
	pid := strings.TrimSpace(out)
	if _, err := strconv.Atoi(pid); err != nil {
		t.Fatalf("background process: %q", out)
	}
	return pid
}

// qemuPID is the QEMU process of a session.
func qemuPID(t *testing.T, e *env, id string) int {
	t.Helper()
	var pids []int
	for _, pid := range apitest.ProcessesMentioning(filepath.Join(e.h.DataDir, "sandboxes", id)) {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.HasPrefix(string(comm), "qemu-system") {
			pids = append(pids, pid)
		}
	}
	if len(pids) != 1 {
		t.Fatalf("QEMU processes of %s: %v", id, pids)
	}
	return pids[0]
}

// checkClock fails when the guest's clock (date +%s.%N output, read
// between the host times before and after) is more than two seconds off
// the host's: outside [before-2s, after+2s]. The window, not the time of
// the check, since a tool call under load can take seconds.
func checkClock(t *testing.T, out string, before, after time.Time) {
	t.Helper()
	guest, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
	if err != nil {
		t.Fatalf("guest date: %q", out)
	}
	g := time.Unix(0, int64(guest*1e9))
	if ahead := g.Sub(after); ahead > 2*time.Second {
		t.Errorf("the guest's clock is %s ahead of the host's", ahead.Round(time.Millisecond))
	}
	if behind := before.Sub(g); behind > 2*time.Second {
		t.Errorf("the guest's clock is %s behind the host's", behind.Round(time.Millisecond))
	}
}

func pause(t *testing.T, e *env, id string) session.View {
	t.Helper()
	var v session.View
	e.h.Must(http.StatusOK, "POST", "/api/sessions/"+id+"/pause", nil).JSON(t, &v)
	return v
}

// A paused VM session gives its memory back (its QEMU is gone) and keeps
// everything on disk; input restores it from its snapshot: the process it
// ran still runs, the file is there, the clock is the host's, the network
// (a new attachment) works, and the agent's tool calls go on.
func TestPauseResumeVM(t *testing.T) {
	e := newEnv(t)
	inetPort := listen(t, e.tb.InternetDo, e.tb.InternetAddr)
	id := e.session(t, "full")
	sleeper := startWork(t, e, id)
	pid := qemuPID(t, e, id)
	rss := vmRSS(t, pid)

	began := time.Now()
	v := pause(t, e, id)
	pauseTook := time.Since(began)
	if v.State != "paused" || v.ResumeKind != event.ResumeSnapshot {
		t.Fatalf("after pause: %+v", v)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Fatalf("QEMU %d still runs after pause", pid)
	}
	st := e.h.Stream(id, "")
	paused := st.WaitType(t, apitest.Wait, event.Paused, 1)
	if paused.Field("kind") != event.ResumeSnapshot {
		t.Fatalf("paused event: %s", paused.Data)
	}
	st.Close()
	snapBytes, _ := strconv.ParseFloat(paused.Field("bytes"), 64)
	t.Logf("pause took %s; QEMU held %d MiB, freed; the snapshot is %d MiB", pauseTook.Round(time.Millisecond), rss>>20, int64(snapBytes)>>20)

	time.Sleep(3 * time.Second) // time passes while it is paused: the clock must catch up
	before := time.Now()
	out := e.bash(t, id, "cat /workspace/kept.txt; kill -0 "+sleeper+" && echo alive; "+
		probe(e.tb.InternetAddr.String(), inetPort)+"; date +%s.%N")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || lines[0] != "kept" || lines[1] != "alive" || lines[2] != "open" {
		t.Fatalf("after resume: %q", out)
	}
	checkClock(t, lines[3], before, time.Now())
	all := e.h.Stream(id, "")
	defer all.Close()
	resumed := all.WaitType(t, apitest.Wait, event.Resumed, 1)
	if resumed.Field("kind") != event.ResumeSnapshot {
		t.Fatalf("resumed event: %s", resumed.Data)
	}
	t.Logf("resume from the snapshot took %s ms", resumed.Field("ms"))
	if entries, _ := filepath.Glob(filepath.Join(e.h.DataDir, "sandboxes", id, "vm.state*")); len(entries) > 0 {
		t.Errorf("the snapshot is still there after resuming: %v", entries)
	}
}

// Stopping the server pauses its VM sessions; after the restart both are
// paused, and each resumes from its snapshot on input, once given its key.
func TestServerRestartPausesVMs(t *testing.T) {
	e := newEnv(t)
	e.h.Stop()
	e.h.Opts.PauseOnStop = true
	e.h.Start()
	a, b := e.session(t, "none"), e.session(t, "full")
	sleepers := map[string]string{a: startWork(t, e, a), b: startWork(t, e, b)}
	e.h.Stop()
	e.h.Start()
	for _, id := range []string{a, b} {
		v := e.h.WaitState(id, "paused")
		if v.ResumeKind != event.ResumeSnapshot || !v.KeyNeeded {
			t.Fatalf("%s after the restart: %+v", id, v)
		}
		e.h.Must(http.StatusAccepted, "POST", "/api/sessions/"+id+"/resume", map[string]string{"apiKey": "sk-ant-test-key"})
	}
	for id, sleeper := range sleepers {
		if out := e.bash(t, id, "kill -0 "+sleeper+" && echo alive; cat /workspace/kept.txt"); out != "alive\nkept\n" {
			t.Errorf("%s after the restart: %q", id, out)
		}
	}
}

// A server killed with SIGKILL leaves its VMs dead and their disks; after a
// restart the session resumes cold: its files are there, its processes are
// not, and an event says why.
func TestKilledServerResumesCold(t *testing.T) {
	e := newEnv(t)
	id := e.session(t, "none")
	sleeper := startWork(t, e, id)
	e.h.Crash()
	e.h.Start()
	if v := e.h.WaitState(id, "paused"); v.ResumeKind != event.ResumeCold {
		t.Fatalf("after a crash: %+v", v)
	}
	e.h.Must(http.StatusAccepted, "POST", "/api/sessions/"+id+"/resume", map[string]string{"apiKey": "sk-ant-test-key"})
	out := e.bash(t, id, "cat /workspace/kept.txt; kill -0 "+sleeper+" 2>/dev/null && echo alive || echo gone")
	if out != "kept\ngone\n" {
		t.Fatalf("after a cold resume: %q", out)
	}
	st := e.h.Stream(id, "")
	defer st.Close()
	if r := st.WaitType(t, apitest.Wait, event.Resumed, 1); r.Field("kind") != event.ResumeCold || !strings.Contains(r.Field("reason"), "killed") {
		t.Fatalf("resumed event: %s", r.Data)
	}
}

// A snapshot that cannot be restored (here, damaged) does not strand the
// session: it resumes cold on its disk, and the event says why.
func TestDamagedSnapshotResumesCold(t *testing.T) {
	e := newEnv(t)
	id := e.session(t, "none")
	startWork(t, e, id)
	pause(t, e, id)
	path := filepath.Join(e.h.DataDir, "sandboxes", id, "vm.state")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b[:len(b)/3], 0o600); err != nil {
		t.Fatal(err)
	}
	if out := e.bash(t, id, "cat /workspace/kept.txt"); out != "kept\n" {
		t.Fatalf("after resuming from a damaged snapshot: %q", out)
	}
	st := e.h.Stream(id, "")
	defer st.Close()
	if r := st.WaitType(t, apitest.Wait, event.Resumed, 1); r.Field("kind") != event.ResumeCold || !strings.Contains(r.Field("reason"), "could not be restored") {
		t.Fatalf("resumed event: %s", r.Data)
	}
}

// vmRSS is a process's resident memory in bytes.
func vmRSS(t *testing.T, pid int) int64 {
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
	return 0
}
