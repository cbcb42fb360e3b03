package guest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const reaperHelperEnv = "EXECLAW_GUEST_REAPER_HELPER"

// TestReaper runs the real server with a Reaper in a child test process that
// is a child subreaper, which makes it adopt orphans exactly as PID 1 would.
// It must run apart: a reaper collects every untracked child of its process,
// which would break other tests' exec.Cmd.Wait.
func TestReaper(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestReaperHelperProcess$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), reaperHelperEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestReaperHelperProcess")) {
		t.Fatalf("helper process: %v\n%s", err, out)
	}
}

func TestReaperHelperProcess(t *testing.T) {
	if os.Getenv(reaperHelperEnv) != "1" {
		t.Skip("only runs as TestReaper's child process")
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	r := NewReaper(nil)
	go r.Run(t.Context())
	g := startGuest(t, ServerConfig{Reaper: r})
	ctx := testCtx(t)

	// Every command leaves an orphan behind (adopted by us) while exiting with
	// its own status: a reaper that stole statuses would break the codes.
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Go(func() {
			res, err := g.c.Exec(ctx, sh(fmt.Sprintf("sleep 0.0%d & exit %d", i%10, i)), nil)
			if err != nil {
				t.Errorf("exec %d: %v", i, err)
				return
			}
			if res.ExitCode != i {
				t.Errorf("exec %d: exit code %d", i, res.ExitCode)
			}
		})
	}
	wg.Wait()

	// The orphans end soon after; none may stay a zombie.
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		z, total := childZombies(os.Getpid())
		if z == 0 && total == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d zombie children of %d children remain", z, total)
		}
		<-tick.C
	}
}

// childZombies counts the children of pid, and how many are zombies.
func childZombies(pid int) (zombies, total int) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		var state byte
		var ppid int
		if _, err := fmt.Sscanf(string(b[i+2:]), "%c %d", &state, &ppid); err != nil || ppid != pid {
			continue
		}
		total++
		if state == 'Z' {
			zombies++
		}
	}
	return zombies, total
}
