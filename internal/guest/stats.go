package guest

import (
	"bufio"
	"bytes"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	h := Health{Version: Version, Workspace: s.ws, PID1: os.Getpid() == 1, Boot: s.boot}
	h.Hostname, _ = os.Hostname()
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	writeJSON(w, http.StatusOK, h)
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.stats())
}

// stats is best effort: a missing source leaves its fields zero rather than
// failing the whole answer.
func (s *Server) stats() Stats {
	var st Stats
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 {
				continue
			}
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			switch f[0] {
			case "MemTotal:":
				st.MemTotalMiB = kb / 1024
			case "MemAvailable:":
				st.MemAvailableMiB = kb / 1024
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			st.Load1, _ = strconv.ParseFloat(f[0], 64)
			st.Load5, _ = strconv.ParseFloat(f[1], 64)
			st.Load15, _ = strconv.ParseFloat(f[2], 64)
		}
	}
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 1 {
			st.UptimeSec, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	var fs unix.Statfs_t
	if unix.Statfs(s.ws, &fs) == nil {
		bs := uint64(fs.Bsize)
		st.DiskTotalMiB = int64(fs.Blocks * bs >> 20)
		st.DiskFreeMiB = int64(fs.Bavail * bs >> 20)
	}
	if ents, err := os.ReadDir("/proc"); err == nil {
		for _, e := range ents {
			if _, err := strconv.Atoi(e.Name()); err == nil {
				st.Processes++
			}
		}
	}
	return st
}
