package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/testutil"
)

func noenv(string) string { return "" }

func TestRunRejectsBadArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "--listen is required"},
		{[]string{"--listen", "vsock:1024"}, "not supported yet"},
		{[]string{"--listen", "serial:/dev/hvc1"}, "not supported yet"},
		{[]string{"--listen", "tcp:1.2.3.4:5"}, "unknown transport"},
		{[]string{"--listen", "unix:"}, "want unix:PATH"},
		{[]string{"--bogus"}, "flag provided but not defined"},
		{[]string{"--listen", "unix:/tmp/x.sock", "extra"}, "unexpected arguments"},
	}
	for _, tc := range tests {
		var stderr bytes.Buffer
		err := run(t.Context(), tc.args, noenv, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q) = %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestRunServesUntilShutdown(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "g.sock")
	ws := filepath.Join(dir, "new", "ws")
	var stderr testutil.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(context.Background(), []string{"--listen", "unix:" + sock, "--workspace", ws}, noenv, &stderr)
	}()

	c := guest.NewClient(guest.UnixDialer(sock))
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		h, err := c.Health(ctx)
		if err == nil {
			if h.Workspace != ws {
				t.Errorf("workspace %q", h.Workspace)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("guest never answered: %v\n%s", err, stderr.String())
		case err := <-done:
			t.Fatalf("run returned early: %v", err)
		case <-tick.C:
		}
	}
	if fi, err := os.Stat(ws); err != nil || !fi.IsDir() {
		t.Errorf("workspace not created: %v", err)
	}
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("run did not return after shutdown")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket not removed: %v", err)
	}
}

// TestSIGTERM runs the real binary: SIGTERM must kill what it started and
// exit 0.
func TestSIGTERM(t *testing.T) {
	bin := testutil.GuestBinary(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "g.sock")
	cmd := exec.Command(bin, "--listen", "unix:"+sock, "--workspace", dir)
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	c := guest.NewClient(guest.UnixDialer(sock))
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var pid int
	for {
		var out bytes.Buffer
		_, err := c.Exec(ctx, guest.ExecRequest{Argv: []string{"sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"}}, func(_ string, d []byte) { out.Write(d) })
		if err == nil {
			pid, _ = strconv.Atoi(strings.TrimSpace(out.String()))
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("guest never answered: %v\n%s", err, stderr.String())
		case <-tick.C:
		}
	}
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		t.Fatalf("background sleep (pid %d) not running", pid)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
	}
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil || bytes.Contains(b, []byte(") Z ")) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("background sleep %d survived SIGTERM of the guest", pid)
		case <-tick.C:
		}
	}
}
