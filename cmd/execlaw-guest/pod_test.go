package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/testutil"
)

func writeSecrets(t *testing.T, data map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, b := range data {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A guest whose secrets are missing or wrong must not start. run returns
// before it starts reaping, so this runs in the test process.
func TestRunPodRefusesBadSecrets(t *testing.T) {
	cred, err := guest.NewPodCredentials("s_test")
	if err != nil {
		t.Fatal(err)
	}
	other, err := guest.NewPodCredentials("s_other")
	if err != nil {
		t.Fatal(err)
	}
	without := func(name string) map[string][]byte {
		m := cred.SecretData()
		delete(m, name)
		return m
	}
	with := func(name string, b []byte) map[string][]byte {
		m := cred.SecretData()
		m[name] = b
		return m
	}
	tests := []struct {
		name    string
		secrets map[string][]byte // nil: the directory does not exist
		extra   []string
		want    string
	}{
		{"no secret directory", nil, nil, "secret token: open"},
		{"missing token", without(guest.PodTokenFile), nil, "secret token: open"},
		{"missing certificate", without(guest.PodCertFile), nil, "secret tls.crt: open"},
		{"missing key", without(guest.PodKeyFile), nil, "secret tls.key: open"},
		{"short token", with(guest.PodTokenFile, []byte("0123456789abcdef")), nil, "token is 16 bytes, want at least 32"},
		{"mismatched key", with(guest.PodKeyFile, other.KeyPEM), nil, "key does not go with the certificate"},
		{"unix listen address", cred.SecretData(), []string{"--listen", "unix:/tmp/x.sock"}, "want HOST:PORT"},
		{"private proc", cred.SecretData(), []string{"--private-proc"}, "--private-proc does not go with --pod"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "absent")
			if tc.secrets != nil {
				dir = writeSecrets(t, tc.secrets)
			}
			args := append([]string{"--pod", "--listen", "127.0.0.1:0", "--secret-dir", dir, "--workspace", t.TempDir()}, tc.extra...)
			var stderr bytes.Buffer
			err := run(t.Context(), args, noenv, &stderr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error()+stderr.String(), cred.Token) {
				t.Fatal("the token was shown")
			}
		})
	}
}

var listenLine = regexp.MustCompile(`msg="execlaw-guest serving" listen=(\S+)`)

// TestPodBinary runs the real binary in pod mode: the host reaches it only
// with the session's credentials, and it reaps the orphans of its commands
// although it is not PID 1.
func TestPodBinary(t *testing.T) {
	testPodBinary(t, nil)
}

// TestPodBinaryAsPID1 runs it as a container runtime would: PID 1 of its
// own PID namespace.
func TestPodBinaryAsPID1(t *testing.T) {
	testPodBinary(t, &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID})
}

func testPodBinary(t *testing.T, attr *syscall.SysProcAttr) {
	bin := testutil.GuestBinary(t)
	cred, err := guest.NewPodCredentials("s_test")
	if err != nil {
		t.Fatal(err)
	}
	ws := filepath.Join(t.TempDir(), "workspace")
	cmd := exec.Command(bin, "--pod", "--listen", "127.0.0.1:0", "--secret-dir", writeSecrets(t, cred.SecretData()), "--workspace", ws)
	cmd.SysProcAttr = attr
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		if attr != nil && errors.Is(err, syscall.EPERM) {
			t.Skipf("no new PID namespace here: %v", err)
		}
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var addr string
	for addr == "" {
		if m := listenLine.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("guest never listened:\n%s", stderr.String())
		case err := <-exited:
			t.Fatalf("guest exited: %v\n%s", err, stderr.String())
		case <-tick.C:
		}
	}

	wrong := cred
	wrong.Token = strings.Repeat("f", 64)
	if _, _, err := guest.DialPod(ctx, addr, wrong); !errors.Is(err, guest.ErrPodAuth) {
		t.Errorf("wrong token: %v, want ErrPodAuth", err)
	}

	c, ch, err := guest.DialPod(ctx, addr, cred)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	defer ch.Close()
	defer c.Close()
	h, err := c.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.Workspace != ws || h.PID1 != (attr != nil) {
		t.Errorf("health %+v", h)
	}
	if err := c.Write(ctx, guest.WriteRequest{Path: "in.txt", Data: []byte("from the host\n")}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := c.Exec(ctx, guest.ExecRequest{Argv: []string{"sh", "-c", "tr a-z A-Z <in.txt >out.txt && cat out.txt"}},
		func(_ string, d []byte) { out.Write(d) })
	if err != nil || res.ExitCode != 0 || out.String() != "FROM THE HOST\n" {
		t.Fatalf("exec: %v, exit %d, output %q", err, res.ExitCode, out.String())
	}
	body, _, err := c.WSRead(ctx, "out.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(body)
	body.Close()
	if err != nil || string(b) != "FROM THE HOST\n" {
		t.Fatalf("WSRead: %q, %v", b, err)
	}

	// The sleep outlives its shell: the guest must adopt it and, once it
	// ends, reap it rather than leave a zombie.
	if _, err := c.Exec(ctx, guest.ExecRequest{Argv: []string{"sh", "-c", "sleep 1 >/dev/null 2>&1 &"}}, nil); err != nil {
		t.Fatal(err)
	}
	adopted := false
	for {
		kids := children(cmd.Process.Pid)
		if len(kids) == 0 {
			break
		}
		adopted = adopted || slices.Contains(kids, "sleep S") || slices.Contains(kids, "sleep Z")
		select {
		case <-ctx.Done():
			t.Fatalf("orphans not reaped: %q", kids)
		case err := <-exited:
			t.Fatalf("the guest exited while its orphan ran: %v\n%s", err, stderr.String())
		case <-tick.C:
		}
	}
	if !adopted {
		t.Error("the orphan was never the guest's child")
	}

	// The guest stops as soon as it has the request, and may be gone
	// before its answer is out (the client then finds nothing to dial):
	// what counts is that it got the request and exits, cleanly.
	shutdownErr := c.Shutdown(ctx)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, stderr.String())
		}
	case <-ctx.Done():
		t.Fatalf("guest did not exit after shutdown (%v)", shutdownErr)
	}
	if shutdownErr != nil && !strings.Contains(stderr.String(), "shutdown requested") {
		t.Fatalf("%v\n%s", shutdownErr, stderr.String())
	}
	if strings.Contains(stderr.String(), cred.Token) {
		t.Error("the guest logged the token")
	}
}

// children lists the children of pid as "COMMAND STATE".
func children(pid int) []string {
	var kids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(string(b[end+2:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, string(b[open+1:end])+" "+f[0])
		}
	}
	return kids
}
