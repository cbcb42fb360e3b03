package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/testutil"
)

func newDriver(t *testing.T, cfg Config) *Driver {
	t.Helper()
	if cfg.GuestBinary == "" {
		cfg.GuestBinary = testutil.GuestBinary(t)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// newSpec returns a spec whose directory is checked, at cleanup, for
// anything left running (and anything found is killed so tests do not leak).
func newSpec(t *testing.T) sandbox.Spec {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() {
		for _, p := range procsUnder(dir) {
			t.Errorf("left running: %s", p.desc)
			syscall.Kill(p.pid, syscall.SIGKILL)
		}
	})
	return sandbox.Spec{SessionID: t.Name(), Dir: dir}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type proc struct {
	pid  int
	desc string
}

// procsUnder lists live processes that belong to a sandbox directory: the
// guest (its arguments name the directory) and everything running in it.
func procsUnder(dir string) []proc {
	var out []proc
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		cwd, _ := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		args := string(bytes.ReplaceAll(bytes.TrimRight(cmdline, "\x00"), []byte{0}, []byte{' '}))
		if strings.Contains(args, dir) || cwd == dir || strings.HasPrefix(cwd, dir+"/") {
			out = append(out, proc{pid, fmt.Sprintf("pid %d %q (cwd %s)", pid, args, cwd)})
		}
	}
	return out
}

// waitNoProcs polls until nothing runs under dir.
func waitNoProcs(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		left := procsUnder(dir)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still running under %s: %v", dir, left)
		}
		<-tick.C
	}
}

func hasProc(dir, substr string) bool {
	for _, p := range procsUnder(dir) {
		if strings.Contains(p.desc, substr) {
			return true
		}
	}
	return false
}

func run(t *testing.T, sb sandbox.Sandbox, script string) (guest.ExecResult, string) {
	t.Helper()
	var out strings.Builder
	res, err := sb.Guest().Exec(testCtx(t), guest.ExecRequest{Argv: []string{"sh", "-c", script}}, func(_ string, d []byte) { out.Write(d) })
	if err != nil {
		t.Fatalf("exec %q: %v", script, err)
	}
	return res, out.String()
}

func waitDone(t *testing.T, sb sandbox.Sandbox) {
	t.Helper()
	select {
	case <-sb.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed")
	}
}

func TestStartExecFilesStop(t *testing.T) {
	t.Setenv("EXECLAW_TEST_SECRET", "hunter2")
	d := newDriver(t, Config{})
	if d.Name() != "process" || d.Isolated() {
		t.Errorf("Name %q Isolated %v", d.Name(), d.Isolated())
	}
	spec := newSpec(t)
	var phases []string
	spec.Progress = func(p string) { phases = append(phases, p) }
	ctx := testCtx(t)
	sbi, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	sb := sbi.(*Sandbox)
	if got := strings.Join(phases, ","); got != "process,guest-api" {
		t.Errorf("phases = %s", got)
	}
	ws := filepath.Join(spec.Dir, "workspace")
	if sb.Workspace() != ws {
		t.Errorf("Workspace = %s", sb.Workspace())
	}
	h, err := sb.Guest().Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	root := os.Geteuid() == 0
	if h.Workspace != ws || h.PID1 != root || sb.PIDNamespace() != root {
		t.Errorf("health %+v, pidns %v, root %v", h, sb.PIDNamespace(), root)
	}

	// The guest itself gets a clean environment, not the server's.
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", sb.pid))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Split(strings.TrimRight(string(environ), "\x00"), "\x00"); strings.Join(got, " ") != "PATH="+guestPath+" HOME="+ws+" LANG=C.UTF-8" {
		t.Errorf("guest environment = %q", got)
	}

	res, out := run(t, sb, "echo hi; pwd; sleep 1000 >/dev/null 2>&1 &")
	if res.ExitCode != 0 || out != "hi\n"+ws+"\n" {
		t.Errorf("exec: %+v %q", res, out)
	}
	if !hasProc(spec.Dir, "sleep 1000") {
		t.Errorf("background sleep not found: %v", procsUnder(spec.Dir))
	}

	if err := sb.Guest().Write(ctx, guest.WriteRequest{Path: "dir/f.txt", Data: []byte("data")}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(ws, "dir/f.txt")); err != nil || string(b) != "data" {
		t.Errorf("host view of written file: %q %v", b, err)
	}
	if r, err := sb.Guest().Read(ctx, guest.ReadRequest{Path: filepath.Join(ws, "dir/f.txt")}); err != nil || string(r.Data) != "data" {
		t.Errorf("read: %+v %v", r, err)
	}

	// Concurrent Stops all succeed and agree.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := sb.Stop(ctx); err != nil {
				t.Errorf("Stop: %v", err)
			}
		})
	}
	wg.Wait()
	waitDone(t, sb)
	if err := sb.ExitError(); err != nil {
		t.Errorf("ExitError after Stop = %v", err)
	}
	waitNoProcs(t, spec.Dir)
	if _, err := os.Stat(filepath.Join(spec.Dir, "guest.sock")); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	if err := sb.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := sb.Guest().Health(ctx); err == nil {
		t.Error("guest still answers after Stop")
	}
	if b, _ := os.ReadFile(filepath.Join(spec.Dir, "guest.log")); !bytes.Contains(b, []byte("execlaw-guest serving")) {
		t.Errorf("guest.log = %q", b)
	}
}

func TestGuestKilled(t *testing.T) {
	d := newDriver(t, Config{})
	spec := newSpec(t)
	ctx := testCtx(t)
	sbi, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	sb := sbi.(*Sandbox)
	run(t, sb, "sleep 1000 >/dev/null 2>&1 &")
	if !hasProc(spec.Dir, "sleep 1000") {
		t.Fatal("background sleep not running")
	}
	if sb.ExitError() != nil {
		t.Error("ExitError before exit")
	}

	if err := syscall.Kill(sb.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, sb)
	err = sb.ExitError()
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("ExitError = %v, want it to say killed", err)
	}
	if sb.PIDNamespace() {
		// The kernel killed the namespace with its init.
		waitNoProcs(t, spec.Dir)
	} else {
		t.Log("no PID namespace (not root): children of a killed guest are not cleaned up")
	}
	if err := sb.Stop(ctx); err != nil {
		t.Errorf("Stop after crash: %v", err)
	}
	if sb.ExitError() != nil {
		t.Error("ExitError not nil after Stop")
	}
	if !sb.PIDNamespace() {
		for _, p := range procsUnder(spec.Dir) {
			syscall.Kill(p.pid, syscall.SIGKILL)
		}
	}
}

func TestStartCancelled(t *testing.T) {
	d := newDriver(t, Config{})
	spec := newSpec(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	// Cancel once the guest process exists, before it can answer.
	spec.Progress = func(phase string) {
		if phase == "guest-api" {
			cancel()
		}
	}
	sb, err := d.Start(ctx, spec)
	if !errors.Is(err, context.Canceled) || sb != nil {
		t.Fatalf("Start = %v, %v; want context.Canceled", sb, err)
	}
	if left := procsUnder(spec.Dir); len(left) != 0 {
		t.Errorf("left running after a cancelled Start: %v", left)
	}
	if _, err := os.Stat(filepath.Join(spec.Dir, "guest.sock")); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestStartFailures(t *testing.T) {
	bin := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(bin, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, body string
		want       []string
	}{
		{"never answers", "exec sleep 1000", []string{"did not answer within"}},
		{"exits at once", "echo boom >&2; exit 3", []string{"exited before answering", "exit status 3", "boom"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newDriver(t, Config{GuestBinary: script(strings.ReplaceAll(tc.name, " ", "-"), tc.body), StartTimeout: 300 * time.Millisecond})
			spec := newSpec(t)
			_, err := d.Start(testCtx(t), spec)
			if err == nil {
				t.Fatal("Start succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if left := procsUnder(spec.Dir); len(left) != 0 {
				t.Errorf("left running: %v", left)
			}
		})
	}
}

func TestConcurrentSandboxes(t *testing.T) {
	d := newDriver(t, Config{})
	ctx := testCtx(t)
	var wg sync.WaitGroup
	dirs := make([]string, 10)
	for i := range dirs {
		spec := newSpec(t)
		dirs[i] = spec.Dir
		wg.Go(func() {
			sb, err := d.Start(ctx, spec)
			if err != nil {
				t.Errorf("start %d: %v", i, err)
				return
			}
			var out bytes.Buffer
			res, err := sb.Guest().Exec(ctx, guest.ExecRequest{Argv: []string{"sh", "-c", "echo $N; sleep 1000 >/dev/null 2>&1 &"}, Env: []string{"N=" + strconv.Itoa(i)}},
				func(_ string, d []byte) { out.Write(d) })
			if err != nil || res.ExitCode != 0 || out.String() != strconv.Itoa(i)+"\n" {
				t.Errorf("exec %d: %+v %q %v", i, res, out.String(), err)
			}
			if err := sb.Stop(ctx); err != nil {
				t.Errorf("stop %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	for _, dir := range dirs {
		waitNoProcs(t, dir)
	}
}

func TestPID1ReapsOrphans(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a PID namespace")
	}
	d := newDriver(t, Config{})
	spec := newSpec(t)
	ctx := testCtx(t)
	sbi, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	sb := sbi.(*Sandbox)
	defer sb.Stop(ctx)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			res, err := sb.Guest().Exec(ctx, guest.ExecRequest{Argv: []string{"sh", "-c", fmt.Sprintf("sleep 0.0%d & exit %d", i%10, i)}}, nil)
			if err != nil || res.ExitCode != i {
				t.Errorf("exec %d: %+v %v", i, res, err)
			}
		})
	}
	wg.Wait()
	// Orphaned sleeps were adopted by the guest (PID 1); none may stay a zombie.
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		n := children(sb.pid)
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest still has %d children (zombies?)", n)
		}
		<-tick.C
	}
}

// children counts processes whose parent is pid, zombies included.
func children(pid int) int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		var state byte
		var ppid int
		if i > 0 {
			if _, err := fmt.Sscanf(string(b[i+2:]), "%c %d", &state, &ppid); err == nil && ppid == pid {
				n++
			}
		}
	}
	return n
}

func TestNoPIDNamespace(t *testing.T) {
	d := newDriver(t, Config{NoPIDNamespace: true})
	spec := newSpec(t)
	ctx := testCtx(t)
	sb, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := sb.Guest().Health(ctx); err != nil || h.PID1 {
		t.Errorf("health %+v %v", h, err)
	}
	run(t, sb, "sleep 1000 >/dev/null 2>&1 &")
	if !hasProc(spec.Dir, "sleep 1000") {
		t.Fatal("background sleep not running")
	}
	// Without a namespace, the guest's own shutdown must kill the groups.
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitNoProcs(t, spec.Dir)
}

func TestLongDirectoryPath(t *testing.T) {
	d := newDriver(t, Config{})
	spec := newSpec(t)
	spec.Dir = filepath.Join(spec.Dir, strings.Repeat("d", 120))
	if err := os.Mkdir(spec.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	sb, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if res, out := run(t, sb, "echo ok"); res.ExitCode != 0 || out != "ok\n" {
		t.Errorf("exec: %+v %q", res, out)
	}
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(spec.Dir, "guest.sock")); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"", filepath.Join(dir, "missing"), plain, dir} {
		if _, err := New(Config{GuestBinary: p}); err == nil {
			t.Errorf("New(%q) succeeded", p)
		}
	}
}

func TestFindGuestBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, GuestBinaryName)
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	if p, err := FindGuestBinary(env(GuestBinaryEnv, bin)); err != nil || p != bin {
		t.Errorf("from env: %q %v", p, err)
	}
	if _, err := FindGuestBinary(env(GuestBinaryEnv, filepath.Join(dir, "nope"), "PATH", dir)); err == nil || !strings.Contains(err.Error(), GuestBinaryEnv) {
		t.Errorf("bad env var must not fall back to PATH: %v", err)
	}
	if p, err := FindGuestBinary(env("PATH", "relative:"+t.TempDir()+":"+dir)); err != nil || p != bin {
		t.Errorf("from PATH: %q %v", p, err)
	}
	empty := t.TempDir()
	_, err := FindGuestBinary(env("PATH", empty))
	if err == nil || !strings.Contains(err.Error(), filepath.Join(empty, GuestBinaryName)) || !strings.Contains(err.Error(), GuestBinaryEnv) {
		t.Errorf("not found error should say where it looked: %v", err)
	}
}
