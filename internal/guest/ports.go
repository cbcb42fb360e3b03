package guest

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
)

// The guest reports the TCP ports that programs it started listen on, so
// that the host can offer them as previews (forwarded with PathForward).
// Only sockets held by processes descended from the guest count: in a VM
// that is every program the agent and the user ran, and in the process
// sandbox, which shares the host's network, it leaves out the host's own
// listeners (and the guest's own tunnel listeners, which are its, not its
// descendants').

// PathPorts lists listening TCP ports.
const PathPorts = "/v1/ports"

// Bounds of a port listing.
const (
	MaxPorts        = 256     // most ports one answer lists
	maxProcNetLines = 1 << 16 // most lines read of each /proc/net/tcp{,6}
	maxProcsScanned = 1 << 14 // most processes whose descriptors are looked at
	maxFDsScanned   = 1 << 14 // most descriptors looked at per process
)

// ListeningPort is a TCP port a program in the guest listens on.
type ListeningPort struct {
	Port int `json:"port"`
	// Address is the address it listens on: 0.0.0.0 or :: for every
	// address, 127.0.0.1 or ::1 for loopback only, or a specific one.
	Address string `json:"address"`
	// Loopback reports whether a connection to the guest's own loopback
	// reaches it (what PathForward makes).
	Loopback bool `json:"loopback"`
}

// PortsResponse is the answer to GET /v1/ports, ordered by port.
type PortsResponse struct {
	Ports     []ListeningPort `json:"ports"`
	Truncated bool            `json:"truncated,omitempty"`
}

func (s *Server) handlePorts(w http.ResponseWriter, r *http.Request) {
	resp, err := listeningPorts()
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// listeningPorts reads the kernel's TCP tables and keeps the listening
// sockets that a descendant of this process holds.
func listeningPorts() (PortsResponse, error) {
	if !procIsOurs() {
		// PIDs read in /proc would be another namespace's.
		return PortsResponse{Ports: []ListeningPort{}}, nil
	}
	owned := descendantSockets(os.Getpid())
	byPort := map[int]ListeningPort{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		listens, err := readListens(f)
		if err != nil {
			if os.IsNotExist(err) {
				continue // no IPv6
			}
			return PortsResponse{}, err
		}
		for _, l := range listens {
			if !owned[l.inode] {
				continue
			}
			p := ListeningPort{Port: l.port, Address: l.addr.String(), Loopback: l.addr.IsLoopback() || l.addr.IsUnspecified()}
			// One program often listens on both families: keep the one a
			// forward reaches best, the wildcard first.
			if old, ok := byPort[l.port]; !ok || listenRank(p) > listenRank(old) {
				byPort[l.port] = p
			}
		}
	}
	out := PortsResponse{Ports: make([]ListeningPort, 0, len(byPort))}
	for _, p := range byPort {
		out.Ports = append(out.Ports, p)
	}
	slices.SortFunc(out.Ports, func(a, b ListeningPort) int { return a.Port - b.Port })
	if len(out.Ports) > MaxPorts {
		out.Ports, out.Truncated = out.Ports[:MaxPorts], true
	}
	return out, nil
}

func listenRank(p ListeningPort) int {
	switch a, _ := netip.ParseAddr(p.Address); {
	case a.IsUnspecified():
		return 2
	case a.IsLoopback():
		return 1
	}
	return 0
}

type listenSocket struct {
	addr  netip.Addr
	port  int
	inode uint64
}

// readListens parses /proc/net/tcp or tcp6 and returns its LISTEN sockets.
func readListens(path string) ([]listenSocket, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseListens(f)
}

// parseListens reads the table format of /proc/net/tcp{,6}: "sl local_address
// rem_address st ... uid timeout inode", addresses as hex words in the
// kernel's byte order followed by a hex port.
func parseListens(r io.Reader) ([]listenSocket, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 4096)
	var out []listenSocket
	for n := 0; sc.Scan() && n < maxProcNetLines; n++ {
		f := strings.Fields(sc.Text())
		if n == 0 || len(f) < 10 || f[3] != "0A" { // the header, or not TCP_LISTEN
			continue
		}
		host, port, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		p, err1 := strconv.ParseUint(port, 16, 16)
		inode, err2 := strconv.ParseUint(f[9], 10, 64)
		addr, ok := procAddr(host)
		if err1 != nil || err2 != nil || !ok || p == 0 {
			continue
		}
		out = append(out, listenSocket{addr: addr, port: int(p), inode: inode})
	}
	return out, sc.Err()
}

// procAddr decodes an address of /proc/net/tcp{,6}: 4 or 16 bytes written
// as 32-bit words in host (little-endian) order.
func procAddr(s string) (netip.Addr, bool) {
	b, err := hex.DecodeString(s)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return netip.Addr{}, false
	}
	for i := 0; i < len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap(), true
}

// descendantSockets returns the socket inodes that processes descended from
// pid (not pid itself) hold open.
func descendantSockets(pid int) map[uint64]bool {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	parent := map[int]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _, ok := readStat(p); ok {
			parent[p] = ppid
		}
	}
	var desc []int
	for p := range parent {
		for q, hops := parent[p], 0; q > 0 && hops < 1024; q, hops = parent[q], hops+1 {
			if q == pid {
				desc = append(desc, p)
				break
			}
		}
	}
	if len(desc) > maxProcsScanned {
		desc = desc[:maxProcsScanned]
	}
	owned := map[uint64]bool{}
	for _, p := range desc {
		dir := "/proc/" + strconv.Itoa(p) + "/fd"
		d, err := os.Open(dir)
		if err != nil {
			continue // gone, or not ours to look at
		}
		names, _ := d.Readdirnames(maxFDsScanned)
		d.Close()
		for _, n := range names {
			link, err := os.Readlink(dir + "/" + n)
			if err != nil {
				continue
			}
			if v, ok := strings.CutPrefix(link, "socket:["); ok {
				if ino, err := strconv.ParseUint(strings.TrimSuffix(v, "]"), 10, 64); err == nil {
					owned[ino] = true
				}
			}
		}
	}
	return owned
}

// Ports lists the TCP ports programs in the guest listen on.
func (c *Client) Ports(ctx context.Context) (PortsResponse, error) {
	var r PortsResponse
	if err := c.call(ctx, http.MethodGet, PathPorts, nil, &r); err != nil {
		return PortsResponse{}, err
	}
	if len(r.Ports) > MaxPorts {
		return PortsResponse{}, fmt.Errorf("guest ports: answer lists %d ports, more than %d", len(r.Ports), MaxPorts)
	}
	for _, p := range r.Ports {
		if p.Port < 1 || p.Port > 65535 {
			return PortsResponse{}, fmt.Errorf("guest ports: port %d out of range", p.Port)
		}
	}
	return r, nil
}
