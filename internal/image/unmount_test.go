package image

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A build's tree may hold mounts (debootstrap's /proc); they are all taken
// down, nested ones and names with spaces included.
func TestUnmountUnder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	dir := t.TempDir()
	outer := filepath.Join(dir, "root", "proc with space")
	if err := os.MkdirAll(outer, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("proc", outer, "proc", 0, ""); err != nil {
		t.Fatal(err)
	}
	inner := filepath.Join(dir, "root", "run")
	os.MkdirAll(inner, 0o755)
	if err := syscall.Mount("tmpfs", inner, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := unmountUnder(dir); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(b), dir) {
		t.Fatalf("mounts left under %s", dir)
	}
}
