package guest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

func TestExecStreamsBeforeExit(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)
	// The command only finishes once the flag file exists, and the test only
	// creates it after seeing the first line: if output were buffered until
	// exit, this would hang until the context deadline.
	flag := filepath.Join(t.TempDir(), "go-on")
	req := sh(`echo first; while [ ! -e "$FLAG" ]; do sleep 0.01; done; echo second`)
	req.Env = []string{"FLAG=" + flag}
	var out output
	created := false
	res, err := g.c.Exec(ctx, req, func(stream string, data []byte) {
		out.add(stream, data)
		if !created && strings.Contains(out.stdout.String(), "first\n") {
			if err := os.WriteFile(flag, nil, 0o644); err != nil {
				t.Error(err)
			}
			created = true
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatal("never saw the first chunk")
	}
	if got := out.stdout.String(); got != "first\nsecond\n" {
		t.Errorf("stdout = %q", got)
	}
	if res.ExitCode != 0 || res.Signal != "" || res.TimedOut {
		t.Errorf("result = %+v", res)
	}
}

func TestExecResults(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)
	if err := os.Mkdir(filepath.Join(g.ws, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name           string
		req            ExecRequest
		code           int
		signal         string
		stdout, stderr string
	}{
		{name: "exit code", req: sh("echo out; echo err >&2; exit 3"), code: 3, stdout: "out\n", stderr: "err\n"},
		{name: "signal", req: sh("kill -9 $$"), code: -1, signal: "killed"},
		{name: "stdin", req: ExecRequest{Argv: []string{"cat"}, Stdin: []byte("hello\x00world")}, stdout: "hello\x00world"},
		{name: "no stdin is empty", req: ExecRequest{Argv: []string{"cat"}}, stdout: ""},
		{name: "relative dir", req: ExecRequest{Argv: []string{"pwd"}, Dir: "sub"}, stdout: filepath.Join(g.ws, "sub") + "\n"},
		{name: "default dir", req: ExecRequest{Argv: []string{"pwd"}}, stdout: g.ws + "\n"},
		{name: "absolute argv0", req: ExecRequest{Argv: []string{"/bin/sh", "-c", "echo abs"}}, stdout: "abs\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out output
			res, err := g.c.Exec(ctx, tc.req, out.add)
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != tc.code || res.Signal != tc.signal || res.TimedOut {
				t.Errorf("result = %+v, want code %d signal %q", res, tc.code, tc.signal)
			}
			if out.stdout.String() != tc.stdout || out.stderr.String() != tc.stderr {
				t.Errorf("stdout %q stderr %q, want %q %q", out.stdout.String(), out.stderr.String(), tc.stdout, tc.stderr)
			}
		})
	}
}

func TestExecOutputOrderAndChunking(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)
	var out output
	res, err := g.c.Exec(ctx, sh(`i=1; while [ $i -le 3000 ]; do echo $i; echo e$i >&2; i=$((i+1)); done; head -c 300000 /dev/zero`), out.add)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("res %+v err %v", res, err)
	}
	var want, wantErr strings.Builder
	for i := 1; i <= 3000; i++ {
		fmt.Fprintf(&want, "%d\n", i)
		fmt.Fprintf(&wantErr, "e%d\n", i)
	}
	want.WriteString(strings.Repeat("\x00", 300000))
	if out.stdout.String() != want.String() {
		t.Errorf("stdout differs: got %d bytes, want %d", out.stdout.Len(), want.Len())
	}
	if out.stderr.String() != wantErr.String() {
		t.Errorf("stderr differs: got %d bytes, want %d", out.stderr.Len(), wantErr.Len())
	}
	if out.chunks < 300000/MaxExecChunkBytes {
		t.Errorf("only %d chunks for more than 300 KB", out.chunks)
	}
}

func TestExecEnvironmentIsClean(t *testing.T) {
	t.Setenv("EXECLAW_TEST_SECRET", "hunter2")
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)
	var out output
	req := ExecRequest{Argv: []string{"env"}, Env: []string{"FOO=bar", "LANG=en_US.UTF-8"}}
	if _, err := g.c.Exec(ctx, req, out.add); err != nil {
		t.Fatal(err)
	}
	env := out.stdout.String()
	if strings.Contains(env, "EXECLAW_TEST_SECRET") || strings.Contains(env, "hunter2") {
		t.Errorf("the guest process's environment leaked into the command:\n%s", env)
	}
	for _, want := range []string{"PATH=" + defaultPath, "HOME=" + g.ws, "TERM=dumb", "FOO=bar", "LANG=en_US.UTF-8"} {
		if !strings.Contains(env, want+"\n") {
			t.Errorf("env lacks %q:\n%s", want, env)
		}
	}
	if strings.Contains(env, "LANG=C.UTF-8") {
		t.Errorf("request env did not override LANG:\n%s", env)
	}
}

func TestExecErrors(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)
	if err := os.WriteFile(filepath.Join(g.ws, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  ExecRequest
		code string
	}{
		{"missing command", ExecRequest{Argv: []string{"no-such-command-xyz"}}, CodeNotFound},
		{"PATH from request", ExecRequest{Argv: []string{"sh", "-c", "true"}, Env: []string{"PATH=/nonexistent"}}, CodeNotFound},
		{"missing dir", ExecRequest{Argv: []string{"true"}, Dir: "nope"}, CodeNotFound},
		{"dir is a file", ExecRequest{Argv: []string{"true"}, Dir: "file"}, CodeInvalid},
		{"bad env", ExecRequest{Argv: []string{"true"}, Env: []string{"NOEQUALS"}}, CodeInvalid},
		{"empty argv0", ExecRequest{Argv: []string{""}}, CodeInvalid},
		{"not executable", ExecRequest{Argv: []string{"./file"}}, CodePermission},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := g.c.Exec(ctx, tc.req, nil)
			ge, ok := errors.AsType[*Error](err)
			if !ok || ge.Code != tc.code {
				t.Fatalf("err = %v (%T), want code %s", err, err, tc.code)
			}
		})
	}
}

func TestExecTimeoutKillsProcessGroup(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)
	req := sh(`sleep 100 & echo $! > bg.pid; echo $$ > sh.pid; wait`)
	req.TimeoutSec = 1
	res, err := g.c.Exec(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut || res.ExitCode != -1 || res.Signal != "killed" {
		t.Errorf("result = %+v, want a timed-out kill", res)
	}
	waitGone(t, readPid(t, filepath.Join(g.ws, "sh.pid")))
	waitGone(t, readPid(t, filepath.Join(g.ws, "bg.pid")))
}

// Children that left the command's process group (a new session, as Node's
// detached children and so Claude Code's tools have; a group of their own,
// with a grandchild) die with the command too.
func TestExecKillReachesDetachedChildren(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)
	req := sh(`setsid sh -c 'echo $$ > sess.pid; sleep 101 & echo $! > sessbg.pid; wait' &
set -m; sleep 102 & echo $! > job.pid
while [ ! -s sessbg.pid ]; do sleep 0.01; done; wait`)
	req.TimeoutSec = 1
	res, err := g.c.Exec(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut {
		t.Fatalf("result = %+v, want a timeout", res)
	}
	for _, f := range []string{"sess.pid", "sessbg.pid", "job.pid"} {
		waitGone(t, readPid(t, filepath.Join(g.ws, f)))
	}
}

func TestExecCancelKillsProcessGroup(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	req := sh(`sleep 100 & echo $! > bg.pid; echo $$ > sh.pid; echo ready; wait`)
	_, err := g.c.Exec(ctx, req, func(_ string, data []byte) {
		if strings.Contains(string(data), "ready") {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	waitGone(t, readPid(t, filepath.Join(g.ws, "sh.pid")))
	waitGone(t, readPid(t, filepath.Join(g.ws, "bg.pid")))
}

func TestExecBackgroundOutputDoesNotBlockExit(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)
	// The background sleep holds stdout open; the answer must still end soon
	// after the shell exits (after drainDelay), not when the sleep does.
	var out output
	res, err := g.c.Exec(ctx, sh(`sleep 100 & echo $! > bg.pid; echo done`), out.add)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || out.stdout.String() != "done\n" {
		t.Errorf("res %+v stdout %q", res, out.stdout.String())
	}
	bg := readPid(t, filepath.Join(g.ws, "bg.pid"))
	if !alive(bg) {
		t.Errorf("background process died with its shell; it should keep running")
	}
	// Shutting the server down kills every group it started.
	g.srv.KillAll()
	waitGone(t, bg)
}

func TestKillAllRefusesNewCommands(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)
	started := make(chan struct{})
	var pidSeen atomic.Bool
	done := make(chan error, 1)
	go func() {
		_, err := g.c.Exec(ctx, sh(`echo $$ > sh.pid; echo ready; sleep 100`), func(_ string, data []byte) {
			if strings.Contains(string(data), "ready") && !pidSeen.Swap(true) {
				close(started)
			}
		})
		done <- err
	}()
	<-started
	g.srv.KillAll()
	if err := <-done; err != nil {
		t.Fatalf("running exec: %v", err)
	}
	waitGone(t, readPid(t, filepath.Join(g.ws, "sh.pid")))
	_, err := g.c.Exec(ctx, sh("true"), nil)
	if ge, ok := errors.AsType[*Error](err); !ok || ge.Status != 503 {
		t.Fatalf("exec after KillAll: %v", err)
	}
}
