package cgroup

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// OOM score adjustments (/proc/PID/oom_score_adj, -1000 to 1000): when the
// host runs out of memory the kernel kills the process with the highest
// score, its share of memory plus this adjustment in thousandths of the
// total.
const (
	// VMMOOMScoreAdj is what every VMM gets: a VM is killed before the
	// server, whatever their sizes (a VMM of even a small share of memory
	// scores 700/1000 of the host above the server), and the session it
	// served ends with an exit event. Raising a score needs no privilege.
	VMMOOMScoreAdj = 700
	// ServerOOMScoreAdj is what the server asks for itself. Lowering a
	// score needs CAP_SYS_RESOURCE, which the unit does not grant (it sets
	// OOMScoreAdjust= before dropping privileges instead) and some hosts
	// refuse even to root (EACCES, or EIO): the server then keeps its score
	// and relies on the VMMs' raised ones.
	ServerOOMScoreAdj = -500
)

func oomPath(pid int) string {
	if pid == 0 {
		return "/proc/self/oom_score_adj"
	}
	return "/proc/" + strconv.Itoa(pid) + "/oom_score_adj"
}

// OOMScoreAdj reads a process's adjustment; pid 0 is this process.
func OOMScoreAdj(pid int) (int, error) {
	b, err := os.ReadFile(oomPath(pid))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// SetOOMScoreAdj sets a process's adjustment; pid 0 is this process.
func SetOOMScoreAdj(pid, adj int) error {
	if err := writeFile(oomPath(pid), strconv.Itoa(adj)); err != nil {
		return fmt.Errorf("oom_score_adj: %w", err)
	}
	return nil
}
