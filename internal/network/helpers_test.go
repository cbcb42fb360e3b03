package network

// Test topology. Every packet stays inside namespaces the tests create:
//
//	"internet" ns  wan0 198.51.100.1/24, 169.254.169.254/32, 203.0.113.10/32
//	     |  veth
//	test "host" ns uplink 198.51.100.2/24, default via .1   <- Config.HostNSPath
//	     |  xlhN veth (made by the Manager)
//	session ns     veth0, tap0 (made by the Manager)
//	     |  tap0 fd  <-- frame copier -->  eth0 fd (a TAP in the guest ns)
//	"guest" ns     eth0 = guest IP, Attachment.MAC, default via the gateway
//
// The guest stand-in: the test opens the session's tap0 exactly as a VMM
// does (/dev/net/tun, TUNSETIFF by name, inside the session ns), and shuttles
// raw Ethernet frames between it and a TAP in a separate guest namespace
// whose kernel stack plays the guest OS. So the session side sees precisely
// what a VM would produce: frames arriving on tap0 from the guest's MAC and
// IP, carrier coming up when the "VMM" attaches. A veth moved into the guest
// ns would have been simpler but would not exercise the TAP at all.

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// testPrefix makes every namespace a test creates unique to this process,
// and keeps the tests' Sweep away from anything a real server owns.
var testPrefix = fmt.Sprintf("%s%d-", testFamily, os.Getpid())

const testFamily = "xlt"

var (
	inetAddr = TestbedInternetAddr
	hostAddr = TestbedHostAddr
	metaAddr = TestbedMetadataAddr
	denyAddr = netip.MustParseAddr("203.0.113.10")
	denyNet  = netip.MustParsePrefix("203.0.113.0/24")
)

const (
	okTimeout   = 5 * time.Second
	dropTimeout = 600 * time.Millisecond // a dropped SYN: the dial just times out
)

type realHostState struct {
	links      []string
	tables     []string
	claims     []ClaimInfo
	poolRoutes int
	ipForward  string
}

// execlawTables lists the inet tables named execlaw or execlaw-* in a
// namespace.
func execlawTables(fd int) ([]string, error) {
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		return nil, err
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range ts {
		if t.Name == TableName || strings.HasPrefix(t.Name, TableName+"-") {
			out = append(out, t.Name)
		}
	}
	slices.Sort(out)
	return out, nil
}

func snapshotRealHost() (realHostState, error) {
	var s realHostState
	fd, err := openNS("/proc/self/ns/net")
	if err != nil {
		return s, err
	}
	defer unix.Close(fd)
	h, err := newHandleAt(fd)
	if err != nil {
		return s, err
	}
	defer h.Close()
	if s.links, err = hostLinks(h, ""); err != nil {
		return s, err
	}
	rs, err := routesIn(h, DefaultPool)
	if err != nil {
		return s, err
	}
	s.poolRoutes = len(rs)
	if s.tables, err = execlawTables(fd); err != nil {
		return s, err
	}
	if err := inNSFd(fd, func() (err error) { s.claims, err = liveClaims(); return err }); err != nil {
		return s, err
	}
	s.ipForward, err = readSysctl("net.ipv4.ip_forward")
	return s, err
}

func TestMain(m *testing.M) {
	var before realHostState
	var err error
	root := os.Geteuid() == 0
	if root {
		if err := SweepTestbeds(testFamily); err != nil {
			fmt.Fprintln(os.Stderr, "removing what killed test runs left:", err)
		}
		if before, err = snapshotRealHost(); err != nil {
			fmt.Fprintln(os.Stderr, "snapshot of the real host namespace:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	if root {
		after, err := snapshotRealHost()
		switch {
		case err != nil:
			fmt.Fprintln(os.Stderr, "snapshot of the real host namespace:", err)
			code = 1
		case !slices.Equal(before.links, after.links) || !slices.Equal(before.tables, after.tables) ||
			!slices.Equal(before.claims, after.claims) ||
			before.poolRoutes != after.poolRoutes || before.ipForward != after.ipForward:
			fmt.Fprintf(os.Stderr, "tests changed the real host namespace:\nbefore %+v\nafter  %+v\n", before, after)
			code = 1
		}
		if left, _ := listNamedNS(testPrefix); len(left) > 0 {
			fmt.Fprintln(os.Stderr, "namespaces left behind:", left)
			code = 1
		}
	}
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables, /dev/net/tun)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun")
	}
}

var nsCounter atomic.Int64

// testNS creates a named namespace removed at the end of the test.
func testNS(t *testing.T, role string) string {
	t.Helper()
	path, err := createNamedNS(fmt.Sprintf("%s%s%d", testPrefix, role, nsCounter.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := removeNamedNS(path); err != nil {
			t.Error(err)
		}
	})
	return path
}

// handleFor returns a netlink handle in the namespace at path.
func handleFor(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	fd, err := openNS(path)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	h, err := newHandleAt(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func linkUp(t *testing.T, h *netlink.Handle, name string, addrs ...netip.Prefix) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	must(t, err)
	for _, a := range addrs {
		must(t, h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(a)}))
	}
	must(t, h.LinkSetUp(l))
	return l
}

type testEnv struct {
	hostNS, inetNS string
	tb             *Testbed
	cfg            Config
}

// newTestEnv builds the "host", "internet" and "LAN" namespaces.
func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	return newTestEnvWith(t, netip.PrefixFrom(denyAddr, 32))
}

// newTestEnvWith is newTestEnv with extra addresses on the internet side.
func newTestEnvWith(t *testing.T, extra ...netip.Prefix) *testEnv {
	t.Helper()
	requireRoot(t)
	tb, err := NewTestbed(fmt.Sprintf("%senv%d-", testPrefix, nsCounter.Add(1)), extra...)
	must(t, err)
	t.Cleanup(func() {
		if err := tb.Close(); err != nil {
			t.Error(err)
		}
	})
	e := &testEnv{hostNS: tb.HostNS, inetNS: tb.InternetNS, tb: tb}
	e.cfg = Config{
		HostNSPath: e.hostNS,
		// One /20: the whole pool is this instance's block, so addresses
		// are predictable (10.201.0.x). Tests of several instances use
		// the default /16.
		Pool:        netip.MustParsePrefix("10.201.0.0/20"),
		Instance:    InstanceID(fmt.Sprintf("%senv%d", testPrefix, nsCounter.Add(1))),
		NetNSPrefix: testPrefix + "s-",
		DNS:         []netip.Addr{netip.MustParseAddr("192.0.2.53")},
		DenyForward: []netip.Prefix{denyNet},
		Logger:      slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (e *testEnv) manager(t *testing.T) *Manager {
	t.Helper()
	m, err := New(e.cfg)
	must(t, err)
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return m
}

func (e *testEnv) inetDo(fn func() error) error { return inNS(e.inetNS, fn) }

// crash abandons m as a killed process would: its descriptors close (and
// with them its claim on the pool); nothing is torn down.
func crash(m *Manager) {
	unix.Close(m.hostFd)
	m.claim.release()
}

// openTapFd attaches to (or creates) a TAP device by name in the calling
// thread's namespace, non-blocking so os.File can use the poller and Close
// unblocks a pending Read.
func openTapFd(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

type guest struct {
	ns string
	a  *Attachment
}

func (g *guest) do(fn func() error) error { return inNS(g.ns, fn) }

// startGuest puts a live endpoint with a's guest IP and MAC behind a's TAP.
func startGuest(t *testing.T, a *Attachment) *guest {
	t.Helper()
	g := &guest{ns: testNS(t, "guest"), a: a}
	var vmm, nic *os.File
	must(t, a.Do(func() (err error) { vmm, err = openTapFd(a.TapName); return err }))
	must(t, g.do(func() (err error) { nic, err = openTapFd("eth0"); return err }))
	var wg sync.WaitGroup
	shuttle := func(dst, src *os.File) {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, err := src.Read(buf)
			if err != nil {
				return // closed
			}
			if _, err := dst.Write(buf[:n]); err != nil && errors.Is(err, os.ErrClosed) {
				return
			}
		}
	}
	wg.Add(2)
	go shuttle(nic, vmm)
	go shuttle(vmm, nic)
	t.Cleanup(func() {
		vmm.Close()
		nic.Close()
		wg.Wait()
	})

	h := handleFor(t, g.ns)
	hw, err := net.ParseMAC(a.MAC)
	must(t, err)
	eth, err := h.LinkByName("eth0")
	must(t, err)
	must(t, h.LinkSetHardwareAddr(eth, hw))
	linkUp(t, h, "eth0", a.GuestIP)
	linkUp(t, h, "lo")
	must(t, h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: a.Gateway.AsSlice()}))
	return g
}

// listener accepts TCP connections in a namespace, writes "hi" to each and
// records the peer address.
type listener struct {
	ln    net.Listener
	peers chan netip.Addr
}

func listen(t *testing.T, do func(func() error) error, addr string) *listener {
	t.Helper()
	l := &listener{peers: make(chan netip.Addr, 16)}
	must(t, do(func() (err error) { l.ln, err = net.Listen("tcp4", addr); return err }))
	t.Cleanup(func() { l.ln.Close() })
	go func() {
		for {
			c, err := l.ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			select {
			case l.peers <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap():
			default:
			}
			c.Close()
		}
	}()
	return l
}

func (l *listener) port() int { return l.ln.Addr().(*net.TCPAddr).Port }

// dial connects from a namespace and reads the listener's greeting, so
// success means a full round trip.
func dial(do func(func() error) error, ip netip.Addr, port int, timeout time.Duration) error {
	return do(func() error {
		c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(ip, uint16(port)).String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		b := make([]byte, 2)
		if _, err := io.ReadFull(c, b); err != nil {
			return err
		}
		if string(b) != "hi" {
			return fmt.Errorf("bad greeting %q", b)
		}
		return nil
	})
}

func mustReach(t *testing.T, what string, do func(func() error) error, ip netip.Addr, port int) {
	t.Helper()
	if err := dial(do, ip, port, okTimeout); err != nil {
		t.Fatalf("%s: %v:%d should be reachable: %v", what, ip, port, err)
	}
}

func mustNotReach(t *testing.T, what string, do func(func() error) error, ip netip.Addr, port int) {
	t.Helper()
	if err := dial(do, ip, port, dropTimeout); err == nil {
		t.Fatalf("%s: %v:%d must not be reachable", what, ip, port)
	}
}

// dropCounters returns the packet counters of the drop rules of a chain in
// a table of the namespace, in rule order.
func dropCounters(t *testing.T, nsPath, table, chain string) []uint64 {
	t.Helper()
	fd, err := openNS(nsPath)
	must(t, err)
	defer unix.Close(fd)
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	must(t, err)
	tbl := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
	rules, err := c.GetRules(tbl, &nftables.Chain{Name: chain, Table: tbl})
	must(t, err)
	var out []uint64
	for _, r := range rules {
		for _, e := range r.Exprs {
			if ctr, ok := e.(*expr.Counter); ok {
				out = append(out, ctr.Packets)
			}
		}
	}
	return out
}

// pollUntil retries cond until it holds or the deadline passes.
func pollUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// leftovers reports everything a manager could leave in the host ns and
// /run/netns.
func leftovers(t *testing.T, e *testEnv) (links []string, routes int, addrs int, nss []string) {
	t.Helper()
	h := handleFor(t, e.hostNS)
	links, err := hostLinks(h, "")
	must(t, err)
	rs, err := routesIn(h, DefaultPool)
	must(t, err)
	as, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V4) })
	must(t, err)
	for _, a := range as {
		if p, ok := prefixOf(a.IPNet); ok && DefaultPool.Contains(p.Addr()) {
			addrs++
		}
	}
	nss, err = listNamedNS(e.cfg.NetNSPrefix)
	must(t, err)
	return links, len(rs), addrs, nss
}

func assertClean(t *testing.T, e *testEnv) {
	t.Helper()
	links, routes, addrs, nss := leftovers(t, e)
	if len(links) != 0 || routes != 0 || addrs != 0 || len(nss) != 0 {
		t.Fatalf("left behind: links %v, %d pool routes, %d pool addresses, namespaces %v", links, routes, addrs, nss)
	}
}
