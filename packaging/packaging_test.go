// Package packaging checks the files that install ExeClaw as a service:
// install.sh and the systemd unit. (It holds no Go code of its own.)
package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const unitPath = "execlaw.service"

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// directives reads a unit's Key=value lines (comments left out), in order.
func directives(unit string) map[string][]string {
	out := map[string][]string{}
	for _, line := range strings.Split(unit, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok {
			out[k] = append(out[k], v)
		}
	}
	return out
}

// systemd-analyze verify checks the unit as systemd would load it. The
// command must exist for verify to pass, and install.sh is what installs
// it, so the check runs on a copy whose ExecStart names a stand-in; the
// installed unit is verified by install.sh itself (and here, when present).
func TestUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd); scripts/deps.sh --test installs it")
	}
	dir := t.TempDir()
	stand := filepath.Join(dir, "execlaw")
	if err := os.WriteFile(stand, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit := readFile(t, unitPath)
	if !strings.Contains(unit, "ExecStart=/usr/local/bin/execlaw serve\n") {
		t.Fatal("ExecStart is not /usr/local/bin/execlaw serve")
	}
	copyPath := filepath.Join(dir, "execlaw.service")
	if err := os.WriteFile(copyPath, []byte(strings.Replace(unit, "/usr/local/bin/execlaw", stand, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(path string) ([]byte, error) {
		cmd := exec.Command(analyze, "verify", path)
		// Warnings go to stderr, not to a journal; they do not change the
		// exit status, so the output must be empty too.
		cmd.Env = append(os.Environ(), "SYSTEMD_LOG_TARGET=console", "SYSTEMD_LOG_LEVEL=notice")
		return cmd.CombinedOutput()
	}
	verify := func(path string) {
		out, err := run(path)
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", path, err, out)
		}
	}
	verify(copyPath)
	if _, err := os.Stat("/usr/local/bin/execlaw"); err == nil {
		verify(unitPath)
	}

	// And it can fail: a bad value and an unknown key are reported.
	for _, c := range []struct{ from, to, says string }{
		{"\nProtectSystem=strict\n", "\nProtectSystem=strictest\n", "strictest"},
		{"\nPrivateTmp=yes\n", "\nPrivateTmp=yes\nAmbientCapability=CAP_SYS_ADMIN\n", "AmbientCapability"},
	} {
		bad := filepath.Join(dir, "bad.service")
		text := readFile(t, copyPath)
		if !strings.Contains(text, c.from) {
			t.Fatalf("no %q in the unit", c.from)
		}
		if err := os.WriteFile(bad, []byte(strings.Replace(text, c.from, c.to, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, _ := run(bad); !strings.Contains(string(out), c.says) {
			t.Errorf("%s went unnoticed: %q", c.says, out)
		}
	}
}

// The unit grants what VM networking needs and nothing more.
func TestUnitPrivileges(t *testing.T) {
	d := directives(readFile(t, unitPath))
	one := func(key, want string) {
		t.Helper()
		if got := d[key]; len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want exactly %q", key, got, want)
		}
	}
	one("User", "execlaw")
	one("Group", "execlaw")
	one("SupplementaryGroups", "kvm")
	one("NoNewPrivileges", "yes")
	one("ProtectSystem", "strict")
	one("PrivateTmp", "yes")
	one("ProtectHome", "yes")
	one("EnvironmentFile", "-/etc/execlaw/env")
	one("ExecStart", "/usr/local/bin/execlaw serve")
	for _, key := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		caps := strings.Fields(strings.Join(d[key], " "))
		slices.Sort(caps)
		if !slices.Equal(caps, []string{"CAP_NET_ADMIN", "CAP_SYS_ADMIN"}) {
			t.Errorf("%s = %v, want CAP_NET_ADMIN CAP_SYS_ADMIN", key, caps)
		}
	}
	rw := strings.Fields(strings.Join(d["ReadWritePaths"], " "))
	slices.Sort(rw)
	if !slices.Equal(rw, []string{"/run/netns", "/var/lib/execlaw"}) {
		t.Errorf("ReadWritePaths = %v", rw)
	}
	devices := strings.Join(d["DeviceAllow"], "\n")
	for _, dev := range []string{"/dev/kvm rw", "/dev/net/tun rw", "/dev/vhost-vsock rw"} {
		if !strings.Contains(devices, dev) {
			t.Errorf("DeviceAllow lacks %s", dev)
		}
	}
	// The server writes per-session net.* sysctls through /proc/sys.
	if slices.Contains(d["ProtectKernelTunables"], "yes") {
		t.Error("ProtectKernelTunables=yes would stop the per-session sysctls")
	}
	// Per-VM cgroups: the server manages its delegated cgroup, which
	// ProtectControlGroups would make read-only; systemd lowers its OOM
	// score (VMMs raise theirs).
	one("Delegate", "yes")
	one("OOMScoreAdjust", "-500")
	if slices.Contains(d["ProtectControlGroups"], "yes") {
		t.Error("ProtectControlGroups=yes would make the delegated cgroup read-only")
	}
	for _, key := range []string{"PermissionsStartOnly", "PrivateUsers"} {
		if len(d[key]) > 0 {
			t.Errorf("%s is set", key)
		}
	}
	for _, exec := range append(append([]string{}, d["ExecStart"]...), d["ExecStartPre"]...) {
		if strings.HasPrefix(exec, "+") || strings.HasPrefix(exec, "!") {
			t.Errorf("%q runs with full privileges", exec)
		}
	}
}

func TestInstallScript(t *testing.T) {
	if out, err := exec.Command("bash", "-n", "../install.sh").CombinedOutput(); err != nil {
		t.Fatalf("bash -n install.sh: %v\n%s", err, out)
	}
	if sc, err := exec.LookPath("shellcheck"); err == nil {
		if out, err := exec.Command(sc, "../install.sh").CombinedOutput(); err != nil {
			t.Errorf("shellcheck install.sh: %v\n%s", err, out)
		}
	} else {
		t.Log("shellcheck is not installed; skipped that check")
	}
	script := readFile(t, "../install.sh")
	if regexp.MustCompile(`(?i)NOPASSWD|sudoers`).MatchString(script) {
		t.Error("install.sh touches sudo")
	}
	for _, want := range []string{
		"scripts/deps.sh", "make build", "/usr/local/bin/execlaw-guest", "useradd --system", "/var/lib/execlaw",
		"image build --data-dir", "net.ipv4.ip_forward = 1", "/run/netns", "packaging/execlaw.service",
		"chmod 0600", "systemd-analyze verify",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("install.sh lacks %q", want)
		}
	}
	// It only enables or starts the service when asked (--enable).
	inEnable, sawEnable := false, false
	for _, line := range strings.Split(script, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "if [ $enable -eq 1 ]"):
			inEnable, sawEnable = true, true
		case inEnable && (trimmed == "fi" || strings.HasPrefix(trimmed, "elif")):
			inEnable = false
		case !inEnable && regexp.MustCompile(`^systemctl (enable|start|restart)`).MatchString(trimmed):
			t.Errorf("install.sh runs %q unasked", trimmed)
		}
	}
	if !sawEnable {
		t.Error("no --enable block in install.sh")
	}
	if mk := readFile(t, "../Makefile"); !regexp.MustCompile(`(?m)^install:\n\t\./install\.sh`).MatchString(mk) {
		t.Error("make install does not run install.sh")
	}
}
