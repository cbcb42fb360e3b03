package vm

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// WithoutAmbientCaps returns the command line that runs argv without the
// capabilities this process would hand it. The systemd unit gives the
// server CAP_NET_ADMIN and CAP_SYS_ADMIN as ambient capabilities (for
// namespaces, nftables and TAP devices), and ambient capabilities pass to
// every child; a VMM needs neither (its TAP device is owned by the server's
// user), so it is started through setpriv with the ambient and inheritable
// sets cleared, and a VMM that is broken into holds no capability. Without
// ambient capabilities (root, or none given) argv is returned as it is:
// root's VMM is root either way.
func WithoutAmbientCaps(argv []string) ([]string, error) {
	amb, err := ambientCaps("/proc/self/status")
	if err != nil || amb == 0 {
		return argv, err
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return nil, errors.New("the server holds ambient capabilities and setpriv (util-linux) is missing to keep them from the VMM")
	}
	return append([]string{setpriv, "--ambient-caps=-all", "--inh-caps=-all", "--"}, argv...), nil
}

// ambientCaps reads the CapAmb mask from a /proc/PID/status file.
func ambientCaps(statusPath string) (uint64, error) {
	f, err := os.Open(statusPath)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapAmb:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, nil // a kernel before 4.3 has no ambient capabilities
}
