package network

// Claiming a block of the address pool.
//
// Several servers (instances) may share one host namespace and one pool. Each
// claims a block of the pool (a /20 of the default /16: 512 sessions) and
// hands out /29s from that block only. A claim is an abstract Unix socket,
// bound in the host network namespace and held open by the server:
//
//	@execlaw-net/claim/<instance>/<block>   e.g. @execlaw-net/claim/3fa2c1/10.201.48.0/20
//
// Abstract socket names belong to a network namespace, exactly the scope in
// which addresses and routes can collide, and the kernel releases them when
// the process dies, however it dies: no stale lock files, nothing on disk,
// nothing the systemd unit has to make writable. `ss -xlp | grep
// execlaw-net` shows who holds what. Claiming (list the live claims, pick a
// block, bind) happens under a host-wide mutex, itself an abstract socket
// (@execlaw-net/lock), so two servers starting at once cannot pick
// overlapping blocks even when their pools differ. A claim socket answers
// every connection with one JSON line describing its holder (instance, pid,
// data directory), which error messages and execlaw doctor show.
//
// Limitation: abstract names carry no permissions, so a local process on the
// host could squat on them. That denies VM networking (execlaw then says
// which name is taken); it cannot make two servers share a block.

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// claimBits is the size of the block one instance claims: a /20, 512
// sessions. A pool of /20 or smaller is claimed whole.
const claimBits = 20

const (
	abstractPrefix = "execlaw-net/"
	claimPrefix    = abstractPrefix + "claim/"
	lockName       = abstractPrefix + "lock"
	// lockWait bounds how long New waits for another server's claim in
	// progress (a list and a bind: microseconds, normally).
	lockWait = 10 * time.Second
)

// ClaimInfo describes one instance's claim on a block of the pool.
type ClaimInfo struct {
	Instance string       `json:"instance"`
	Block    netip.Prefix `json:"block"`
	PID      int          `json:"pid,omitempty"`
	Owner    string       `json:"owner,omitempty"` // the holder's data directory
}

func (c ClaimInfo) String() string {
	s := fmt.Sprintf("instance %s holds %v", c.Instance, c.Block)
	switch {
	case c.PID != 0 && c.Owner != "":
		s += fmt.Sprintf(" (pid %d, data dir %s)", c.PID, c.Owner)
	case c.PID != 0:
		s += fmt.Sprintf(" (pid %d)", c.PID)
	}
	return s
}

func claimName(instance string, block netip.Prefix) string {
	return claimPrefix + instance + "/" + block.String()
}

// claim is a held block; release gives it up. Its socket is close-on-exec
// (as every socket Go opens), so VMMs the server starts never hold it: the
// claim ends with the server's process.
type claim struct {
	info ClaimInfo
	ln   net.Listener
	wg   sync.WaitGroup
}

func (c *claim) release() {
	if c == nil {
		return
	}
	c.ln.Close()
	c.wg.Wait()
}

// serve answers each connection with the claim's description.
func (c *claim) serve() {
	defer c.wg.Done()
	line, _ := json.Marshal(c.info)
	line = append(line, '\n')
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: do not spin
			continue
		}
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		conn.Write(line)
		conn.Close()
	}
}

// liveClaims lists the claims bound in the calling thread's network
// namespace (run it inside inNSFd), from /proc/thread-self/net/unix:
// instance and block come from the socket name; PID and Owner are left
// empty (see describeClaim).
func liveClaims() ([]ClaimInfo, error) {
	f, err := os.Open("/proc/thread-self/net/unix")
	if err != nil {
		return nil, fmt.Errorf("network: listing claims: %w", err)
	}
	defer f.Close()
	var out []ClaimInfo
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 {
			continue
		}
		name, ok := strings.CutPrefix(fields[7], "@"+claimPrefix)
		if !ok {
			continue
		}
		inst, blk, ok := strings.Cut(name, "/")
		if !ok || validInstance(inst) != nil {
			continue
		}
		p, err := netip.ParsePrefix(blk)
		if err != nil || !p.Addr().Is4() {
			continue
		}
		c := ClaimInfo{Instance: inst, Block: p}
		// An accepted connection shows its listener's name too.
		if !containsClaim(out, c) {
			out = append(out, c)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("network: listing claims: %w", err)
	}
	return out, nil
}

func containsClaim(cs []ClaimInfo, c ClaimInfo) bool {
	for _, x := range cs {
		if x.Instance == c.Instance && x.Block == c.Block {
			return true
		}
	}
	return false
}

// describeClaim asks a claim's holder who it is (run it inside inNSFd). On
// any failure it returns c as it was.
func describeClaim(c ClaimInfo) ClaimInfo {
	conn, err := net.DialTimeout("unix", "@"+claimName(c.Instance, c.Block), time.Second)
	if err != nil {
		return c
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		return c
	}
	var got ClaimInfo
	if json.Unmarshal(line, &got) != nil || got.Instance != c.Instance || got.Block != c.Block {
		return c
	}
	return got
}

// lockClaims takes the host-wide claim mutex of the calling thread's
// namespace (run inside inNSFd); closing the descriptor releases it.
func lockClaims() (int, error) {
	addr := &unix.SockaddrUnix{Name: "@" + lockName}
	deadline := time.Now().Add(lockWait)
	for {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("network: claim lock: %w", err)
		}
		err = unix.Bind(fd, addr)
		if err == nil {
			return fd, nil
		}
		unix.Close(fd)
		if !errors.Is(err, unix.EADDRINUSE) {
			return -1, fmt.Errorf("network: claim lock: %w", err)
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("network: claim lock @%s is held for more than %s (another execlaw starting, or a squatter: ss -xlp | grep %s)", lockName, lockWait, lockName)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// blocks lists pool's blocks in the order instance tries them: starting at
// one derived from the instance id, so a restarted server gets the block it
// had (and finds its leftovers there), then upwards, wrapping around.
func blocks(pool netip.Prefix, instance string) []netip.Prefix {
	if pool.Bits() >= claimBits {
		return []netip.Prefix{pool}
	}
	n := 1 << (claimBits - pool.Bits())
	sum := sha256.Sum256([]byte(instance))
	start := int(binary.BigEndian.Uint32(sum[:4]) % uint32(n))
	a := pool.Addr().As4()
	base := binary.BigEndian.Uint32(a[:])
	out := make([]netip.Prefix, 0, n)
	for i := range n {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], base+uint32((start+i)%n)<<(32-claimBits))
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(b), claimBits))
	}
	return out
}

// hostUse is what the host namespace already has in the pool's range: the
// reasons a block cannot be used, by block, from addresses and routes on
// links that are not this instance's own.
type hostUse struct {
	names map[int]string
	addrs []netlink.Addr
	rts   []netlink.Route
	ours  string // this instance's link prefix
}

func readHostUse(h *netlink.Handle, pool netip.Prefix, instance string) (*hostUse, error) {
	links, err := retryDump(h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("network: listing links: %w", err)
	}
	u := &hostUse{names: map[int]string{}, ours: hostLinkPrefix(instance)}
	for _, l := range links {
		u.names[l.Attrs().Index] = l.Attrs().Name
	}
	if u.addrs, err = retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V4) }); err != nil {
		return nil, fmt.Errorf("network: listing addresses: %w", err)
	}
	if u.rts, err = routesIn(h, pool); err != nil {
		return nil, err
	}
	return u, nil
}

// conflict says why block is taken on the host, or "" when it is free.
func (u *hostUse) conflict(block netip.Prefix) string {
	ours := func(idx int) bool { return strings.HasPrefix(u.names[idx], u.ours) }
	for _, a := range u.addrs {
		if pa, ok := prefixOf(a.IPNet); ok && pa.Overlaps(block) && !ours(a.LinkIndex) {
			return fmt.Sprintf("address %v on %s", pa, u.names[a.LinkIndex])
		}
	}
	for _, r := range u.rts {
		if d, ok := prefixOf(r.Dst); ok && d.Overlaps(block) && !ours(r.LinkIndex) {
			return fmt.Sprintf("route %v on %s", d, u.names[r.LinkIndex])
		}
	}
	return ""
}

// pickBlock chooses instance's block of pool given the live claims and the
// host's use of the range. It does not bind anything.
func pickBlock(pool netip.Prefix, instance string, live []ClaimInfo, use *hostUse) (netip.Prefix, error) {
	var why []string
	for _, b := range blocks(pool, instance) {
		taken := ""
		for _, c := range live {
			if c.Block.Overlaps(b) {
				taken = "claimed by instance " + c.Instance
				break
			}
		}
		if taken == "" {
			taken = use.conflict(b)
		}
		if taken == "" {
			return b, nil
		}
		why = append(why, fmt.Sprintf("%v: %s", b, taken))
	}
	if len(why) > 4 {
		why = append(why[:4], fmt.Sprintf("and %d more", len(why)-4))
	}
	return netip.Prefix{}, fmt.Errorf("network: no free block in pool %v (%s)", pool, strings.Join(why, "; "))
}

// claimBlock claims instance's block of pool in the namespace nsFd refers
// to. It fails, naming the holder, when the same instance is already running
// there: two servers on one data directory would share every name.
func claimBlock(nsFd int, h *netlink.Handle, pool netip.Prefix, instance, owner string) (*claim, error) {
	var c *claim
	err := inNSFd(nsFd, func() error {
		lock, err := lockClaims()
		if err != nil {
			return err
		}
		defer unix.Close(lock)
		live, err := liveClaims()
		if err != nil {
			return err
		}
		for _, l := range live {
			if l.Instance == instance {
				return fmt.Errorf("network: this server's instance is already running on this host: %v; two servers need different data directories", describeClaim(l))
			}
		}
		use, err := readHostUse(h, pool, instance)
		if err != nil {
			return err
		}
		block, err := pickBlock(pool, instance, live, use)
		if err != nil {
			var held []string
			for _, l := range live {
				held = append(held, describeClaim(l).String())
			}
			if len(held) > 0 {
				err = fmt.Errorf("%w; held: %s", err, strings.Join(held, "; "))
			}
			return err
		}
		ln, err := net.Listen("unix", "@"+claimName(instance, block))
		if err != nil {
			return fmt.Errorf("network: claiming %v: %w", block, err)
		}
		c = &claim{info: ClaimInfo{Instance: instance, Block: block, PID: os.Getpid(), Owner: owner}, ln: ln}
		c.wg.Add(1)
		go c.serve()
		return nil
	})
	return c, err
}

// Info describes an instance's place on a host, for execlaw doctor.
type Info struct {
	Instance string       `json:"instance"`
	Pool     netip.Prefix `json:"pool"`
	// Block is the block the instance holds when Running, else the one
	// it would claim if it started now (invalid when none is free).
	Block   netip.Prefix `json:"block"`
	Running bool         `json:"running"`
	Holder  *ClaimInfo   `json:"holder,omitempty"` // when Running
	Others  []ClaimInfo  `json:"others,omitempty"` // other instances' claims
	Problem string       `json:"problem,omitempty"`
	Policy  string       `json:"policy"`
}

// Describe reports, without changing anything, the instance cfg names, the
// block of the pool it holds or would claim, the other instances on this
// host and the guest policy cfg gives.
func Describe(cfg Config) (Info, error) {
	cfg, err := normalize(cfg)
	if err != nil {
		return Info{}, err
	}
	info := Info{Instance: cfg.Instance, Pool: cfg.Pool}
	// In the caller's own namespace nothing needs entering, so doctor
	// works without privileges; tests name a namespace of their own.
	in := func(fn func() error) error { return fn() }
	var h *netlink.Handle
	if cfg.HostNSPath == "" {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		var fd int
		if fd, err = openNS(cfg.HostNSPath); err != nil {
			return info, err
		}
		defer unix.Close(fd)
		in = func(fn func() error) error { return inNSFd(fd, fn) }
		h, err = newHandleAt(fd)
	}
	if err != nil {
		return info, fmt.Errorf("network: netlink: %w", err)
	}
	defer h.Close()
	dns := cfg.DNS
	if len(dns) == 0 {
		if dns, err = reachableDNS(h, defaultDNS(), false, nil); err != nil {
			return info, err
		}
	}
	pol, err := newGuestPolicy(cfg.Pool, cfg.AllowForward, cfg.DenyForward, dns)
	if err != nil {
		return info, err
	}
	info.Policy = pol.String()
	err = in(func() error {
		live, err := liveClaims()
		if err != nil {
			return err
		}
		var others []ClaimInfo
		for _, l := range live {
			l = describeClaim(l)
			if l.Instance == cfg.Instance {
				info.Running, info.Block, info.Holder = true, l.Block, &l
			} else {
				others = append(others, l)
			}
		}
		info.Others = others
		if info.Running {
			return nil
		}
		use, err := readHostUse(h, cfg.Pool, cfg.Instance)
		if err != nil {
			return err
		}
		if info.Block, err = pickBlock(cfg.Pool, cfg.Instance, others, use); err != nil {
			info.Problem = err.Error()
		}
		return nil
	})
	return info, err
}

// String is Info in one line.
func (i Info) String() string {
	s := "instance " + i.Instance + ", pool " + i.Pool.String()
	switch {
	case i.Running && i.Holder != nil:
		s += fmt.Sprintf(": holds %v (pid %d)", i.Block, i.Holder.PID)
	case i.Block.IsValid():
		s += fmt.Sprintf(": would claim %v (free now)", i.Block)
	default:
		s += ": " + i.Problem
	}
	if len(i.Others) > 0 {
		o := make([]string, len(i.Others))
		for k, c := range i.Others {
			o[k] = c.String()
		}
		s += "; other instances: " + strings.Join(o, "; ")
	}
	return s
}
