package vm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const capsHelperEnv = "EXECLAW_TEST_CAPS_HELPER"

// With no ambient capabilities (root here) the command is left alone.
func TestWithoutAmbientCapsAsRoot(t *testing.T) {
	if os.Getenv(capsHelperEnv) != "" {
		capsHelper()
		return
	}
	argv := []string{"/usr/bin/qemu-system-x86_64", "-M", "microvm"}
	got, err := WithoutAmbientCaps(argv)
	if err != nil || strings.Join(got, " ") != strings.Join(argv, " ") {
		t.Errorf("WithoutAmbientCaps = %q, %v", got, err)
	}
}

// A server running as an unprivileged user with ambient CAP_NET_ADMIN, as
// the systemd unit starts it, starts a VMM that holds no capability. The
// test runs itself again that way (setpriv, as the unit would) and has that
// process start `cat /proc/self/status` through WithoutAmbientCaps.
func TestWithoutAmbientCapsDropsThem(t *testing.T) {
	if os.Getenv(capsHelperEnv) != "" {
		return
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root, to start a process as another user with ambient capabilities")
	}
	// A copy of the test binary that user nobody may run.
	dir, err := os.MkdirTemp("", "execlaw-caps-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	self, _ := os.Executable()
	bin := filepath.Join(dir, "vm.test")
	copyFile(t, self, bin)

	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps=+net_admin", "--ambient-caps=+net_admin", "--",
		bin, "-test.run=^TestWithoutAmbientCapsAsRoot$")
	cmd.Env = []string{capsHelperEnv + "=1", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	fields := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	if fields["helper CapAmb"] == "" || fields["helper CapAmb"] == "0000000000000000" {
		t.Fatalf("the helper holds no ambient capability, so this proves nothing:\n%s", out)
	}
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapAmb"} {
		if fields[k] != "0000000000000000" {
			t.Errorf("the VMM's %s = %q, want none:\n%s", k, fields[k], out)
		}
	}
}

// capsHelper is the unprivileged server: it prints its own ambient set, then
// the status of what it starts through WithoutAmbientCaps.
func capsHelper() {
	amb, err := ambientCaps("/proc/self/status")
	if err != nil {
		os.Stdout.WriteString("helper error: " + err.Error() + "\n")
		os.Exit(1)
	}
	fmt.Printf("helper CapAmb: %016x\n", amb)
	argv, err := WithoutAmbientCaps([]string{"/bin/cat", "/proc/self/status"})
	if err != nil {
		os.Stdout.WriteString("helper error: " + err.Error() + "\n")
		os.Exit(1)
	}
	var buf bytes.Buffer
	c := exec.Command(argv[0], argv[1:]...)
	c.Stdout, c.Stderr = &buf, &buf
	if err := c.Run(); err != nil {
		os.Stdout.WriteString("helper error: " + err.Error() + "\n")
		os.Exit(1)
	}
	os.Stdout.Write(buf.Bytes())
	os.Exit(0)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestAmbientCapsParse(t *testing.T) {
	p := filepath.Join(t.TempDir(), "status")
	os.WriteFile(p, []byte("Name:\tx\nCapInh:\t0000000000000000\nCapAmb:\t0000000000001000\n"), 0o644)
	if v, err := ambientCaps(p); err != nil || v != 0x1000 {
		t.Errorf("ambientCaps = %x, %v", v, err)
	}
	os.WriteFile(p, []byte("Name:\tx\n"), 0o644)
	if v, err := ambientCaps(p); err != nil || v != 0 {
		t.Errorf("without CapAmb: %x, %v", v, err)
	}
	os.WriteFile(p, []byte("CapAmb:\tzz\n"), 0o644)
	if _, err := ambientCaps(p); err == nil {
		t.Error("a bad mask was accepted")
	}
}
