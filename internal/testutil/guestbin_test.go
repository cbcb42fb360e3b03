package testutil

import (
	"os/exec"
	"strings"
	"testing"
)

func TestGuestBinary(t *testing.T) {
	p := GuestBinary(t)
	if p2 := GuestBinary(t); p2 != p {
		t.Errorf("second call returned %q, first %q", p2, p)
	}
	// The binary is the guest: it rejects a reserved transport by name.
	out, err := exec.Command(p, "--listen", "vsock:1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not supported yet") {
		t.Errorf("running %s: %v\n%s", p, err, out)
	}
	// Static: no dynamic loader needed.
	if out, err := exec.Command("file", p).Output(); err == nil && strings.Contains(string(out), "dynamically linked") {
		t.Errorf("guest binary is dynamically linked: %s", out)
	}
}
