package network

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"
)

// A testbed whose test process is gone is removed; one whose process runs
// is kept.
func TestSweepTestbeds(t *testing.T) {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	gone := fmt.Sprintf("%s%d-env1-host", testFamily, dead.Process.Pid)
	alive := fmt.Sprintf("%ssweep%d-host", testPrefix, nsCounter.Add(1))
	for _, name := range []string{gone, alive} {
		if _, err := createNamedNS(name); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { removeNamedNS(netnsDir + "/" + alive) })
	if err := SweepTestbeds(testFamily); err != nil {
		t.Fatal(err)
	}
	left, err := listNamedNS(testFamily)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(left, gone) || !slices.Contains(left, alive) {
		t.Errorf("after the sweep: %q (want %s gone, %s kept)", left, gone, alive)
	}
	if _, err := os.Stat(netnsDir + "/" + gone); !os.IsNotExist(err) {
		t.Errorf("%s: %v", gone, err)
	}
}
