package guest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func needBash(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		t.Skip("no /dev/ptmx")
	}
}

func ttyShell(t *testing.T, g *testGuest, size WindowSize) *attached {
	t.Helper()
	return attach(t, g.c, ExecRequest{
		Argv: []string{"bash", "--norc", "--noprofile", "-i"},
		Env:  []string{"TERM=xterm-256color", "PS1=$ "},
		TTY:  &size,
	})
}

// TestPTYEcho: a shell on a terminal echoes what is typed, reports a
// terminal on its stdin, and its stderr arrives on the one stream.
func TestPTYEcho(t *testing.T) {
	needBash(t)
	g := startGuest(t, ServerConfig{})
	s := ttyShell(t, g, WindowSize{Cols: 80, Rows: 24})
	s.write("echo hi-$((40+2)); test -t 0 && echo is-a-tty; echo oops >&2; echo $TERM\r")
	s.waitStdout("hi-42")
	s.waitStdout("is-a-tty")
	s.waitStdout("oops")
	s.waitStdout("xterm-256color")
	if s.stderr.Len() != 0 {
		t.Errorf("stderr frames on a terminal: %q", s.stderr.String())
	}
	s.write("exit 7\r")
	if f := s.wait(); f.Type != FrameExit || f.ExitCode != 7 {
		t.Errorf("end = %+v, want exit 7", f)
	}
}

// TestPTYResize: the size given at start and each resize are what stty
// reports inside.
func TestPTYResize(t *testing.T) {
	needBash(t)
	g := startGuest(t, ServerConfig{})
	s := ttyShell(t, g, WindowSize{Cols: 100, Rows: 30})
	s.write("stty size\r")
	s.waitStdout("30 100")
	if err := s.a.Resize(WindowSize{Cols: 132, Rows: 43}); err != nil {
		t.Fatal(err)
	}
	s.write("stty size\r")
	s.waitStdout("43 132")
	if err := s.a.Resize(WindowSize{Cols: 0, Rows: 43}); err == nil {
		t.Error("Resize accepted 0 columns")
	}
	if err := s.a.Resize(WindowSize{Cols: MaxTTYCols + 1, Rows: 1}); err == nil {
		t.Error("Resize accepted too many columns")
	}
}

// TestPTYCtrlC: Ctrl+C typed on the terminal interrupts the foreground job
// and the shell goes on.
func TestPTYCtrlC(t *testing.T) {
	needBash(t)
	g := startGuest(t, ServerConfig{})
	s := ttyShell(t, g, WindowSize{Cols: 80, Rows: 24})
	s.write("sleep 100; echo after-$((1+1))\r")
	time.Sleep(300 * time.Millisecond) // let sleep start: typed too early, ^C reaches the shell instead
	s.write("\x03")
	s.write("echo alive-$((2+3))\r")
	s.waitStdout("alive-5")
	if strings.Contains(s.stdout.String(), "after-2") {
		t.Errorf("the interrupted line went on: %q", s.stdout.String())
	}
}

// TestPTYCloseKillsTree: closing the session kills the shell and what it
// started, even a job in a process group of its own.
func TestPTYCloseKillsTree(t *testing.T) {
	needBash(t)
	g := startGuest(t, ServerConfig{})
	s := ttyShell(t, g, WindowSize{Cols: 80, Rows: 24})
	pidFile := filepath.Join(g.ws, "bg.pid")
	// bash -i has job control: the background job gets a group of its own.
	s.write("sleep 300 & echo $! > " + pidFile + "; echo started-$((3*3))\r")
	s.waitStdout("started-9")
	var shellPID int
	s.write("echo shell-$$\r")
	for shellPID == 0 {
		s.next()
		out := s.stdout.String()
		if i := strings.LastIndex(out, "shell-"); i >= 0 {
			rest := out[i+len("shell-"):]
			if j := strings.IndexAny(rest, "\r\n"); j > 0 {
				shellPID, _ = strconv.Atoi(rest[:j])
			}
		}
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	bgPID, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if bgPID == 0 {
		t.Fatalf("pid file %q", b)
	}
	s.a.Close()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range []int{shellPID, bgPID} {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d still runs after the terminal closed", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestPTYRefused: a terminal on a plain exec, or of a bad size, is refused
// before anything runs.
func TestPTYRefused(t *testing.T) {
	needBash(t)
	g := startGuest(t, ServerConfig{})
	if _, err := g.c.Exec(testCtx(t), ExecRequest{Argv: []string{"true"}, TTY: &WindowSize{Cols: 80, Rows: 24}}, nil); err == nil {
		t.Error("exec with a tty was accepted")
	}
	for _, size := range []WindowSize{{0, 24}, {80, 0}, {MaxTTYCols + 1, 24}, {80, MaxTTYRows + 1}, {-1, -1}} {
		if _, err := g.c.Attach(testCtx(t), ExecRequest{Argv: []string{"true"}, TTY: &size}); err == nil {
			t.Errorf("attach with a %dx%d terminal was accepted", size.Cols, size.Rows)
		}
	}
	// A resize frame to a command without a terminal breaks the session.
	s := attach(t, g.c, ExecRequest{Argv: []string{"sleep", "30"}})
	if err := s.a.send(InputFrame{Type: FrameResize, Cols: 80, Rows: 24}); err != nil {
		t.Fatal(err)
	}
	if f := s.wait(); f.Type != FrameError || !strings.Contains(f.Message, "terminal") {
		t.Errorf("end = %+v, want an error frame about the terminal", f)
	}
}
