package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/execlaw/execlaw/internal/cgroup"
)

// Cgroups is a cgroup manager for an instance of the test's own (a random
// id), whose cgroups must all be gone when the test ends. Per-VM cgroups
// need root on this host's cgroup v1, as VM tests do.
func Cgroups(tb testing.TB) *cgroup.Manager {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Fatal("per-VM cgroups need root here (as the VM tests do)")
	}
	var b [3]byte
	rand.Read(b[:])
	m, err := cgroup.New(hex.EncodeToString(b[:]))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if left, _ := m.Sweep(); len(left) > 0 {
			tb.Errorf("cgroups left behind: %v", left)
		}
		m.Close()
	})
	return m
}
