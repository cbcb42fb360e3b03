package testutil

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ProcessesWithArgs returns the host PIDs of processes whose command line is
// exactly args. Tests use distinctive arguments to find what a sandbox
// started, since PIDs inside a sandbox's namespace differ from the host's.
func ProcessesWithArgs(args ...string) []int {
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		raw, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		got := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
		if slices.Equal(got, args) {
			if pid, err := strconv.Atoi(filepath.Base(d)); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
