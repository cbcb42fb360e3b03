package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestGuestTraffic covers NAT out, and the drops for the host itself, the
// metadata range, Config.DenyForward and the session netns itself.
func TestGuestTraffic(t *testing.T) {
	e := newTestEnv(t)
	m := e.manager(t)
	ctx := context.Background()
	a, err := m.Setup(ctx, "s_traffic")
	must(t, err)
	t.Cleanup(func() { m.Teardown(ctx, a) })
	if a.GuestIP != netip.MustParsePrefix("10.201.0.6/30") || a.Gateway != netip.MustParseAddr("10.201.0.5") ||
		a.TapName != "tap0" || a.NetNS != e.cfg.NetNSPrefix+e.cfg.Instance+"-s_traffic" ||
		a.HostLink != "xl"+e.cfg.Instance+"-0" || len(a.DNS) != 1 {
		t.Fatalf("unexpected attachment %+v", a)
	}
	g := startGuest(t, a)
	// No IPv6 on either end of the session link: nothing to reach over it.
	for _, c := range []struct{ ns, key string }{
		{e.hostNS, "net.ipv6.conf." + a.HostLink + ".disable_ipv6"},
		{a.NSPath, "net.ipv6.conf.all.disable_ipv6"},
		{a.NSPath, "net.ipv6.conf." + TapName + ".disable_ipv6"},
	} {
		var v string
		if err := inNS(c.ns, func() (err error) { v, err = readSysctl(c.key); return err }); err != nil && !errors.Is(err, unix.ENOENT) {
			t.Fatal(err)
		} else if err == nil && v != "1" {
			t.Fatalf("%s = %s in %s", c.key, v, c.ns)
		}
	}

	// 1. Out to the "internet", masqueraded behind the host's address.
	inet := listen(t, e.inetDo, "0.0.0.0:0")
	mustReach(t, "guest -> internet", g.do, inetAddr, inet.port())
	if src := <-inet.peers; src != hostAddr {
		t.Fatalf("internet saw the guest as %v, want the masquerade address %v", src, hostAddr)
	}

	// 2. The host's own addresses (standing in for the API port) are off
	// limits, through every door: its uplink address and its end of the veth.
	api := listen(t, m.HostDo, "0.0.0.0:0")
	mustReach(t, "control: internet -> host listener", e.inetDo, hostAddr, api.port())
	mustNotReach(t, "guest -> host uplink address", g.do, hostAddr, api.port())
	mustNotReach(t, "guest -> host veth address", g.do, netip.MustParseAddr("10.201.0.1"), api.port())

	// 3. Metadata (169.254.169.254 exists and listens in the internet ns)
	// and an operator-denied range.
	meta := listen(t, e.inetDo, "0.0.0.0:0")
	mustReach(t, "control: host -> metadata", m.HostDo, metaAddr, meta.port())
	mustReach(t, "control: host -> denied range", m.HostDo, denyAddr, meta.port())
	mustNotReach(t, "guest -> metadata", g.do, metaAddr, meta.port())
	mustNotReach(t, "guest -> DenyForward range", g.do, denyAddr, meta.port())

	// The session namespace itself (gateway and veth addresses).
	nsl := listen(t, a.Do, "0.0.0.0:0")
	mustNotReach(t, "guest -> its gateway", g.do, a.Gateway, nsl.port())
	mustNotReach(t, "guest -> session veth address", g.do, netip.MustParseAddr("10.201.0.2"), nsl.port())

	// Nobody outside may open connections to the guest.
	gl := listen(t, g.do, "0.0.0.0:0")
	mustNotReach(t, "internet -> guest", e.inetDo, a.GuestIP.Addr(), gl.port())
	mustReach(t, "control: host -> guest", m.HostDo, a.GuestIP.Addr(), gl.port())

	// Still working after all that.
	mustReach(t, "guest -> internet again", g.do, inetAddr, inet.port())
}

// TestSessionIsolation: 4. guest A and guest B cannot reach each other.
func TestSessionIsolation(t *testing.T) {
	e := newTestEnv(t)
	m := e.manager(t)
	ctx := context.Background()
	a, err := m.Setup(ctx, "s_alpha")
	must(t, err)
	b, err := m.Setup(ctx, "s_beta")
	must(t, err)
	if a.GuestIP == b.GuestIP || a.HostLink == b.HostLink || a.MAC == b.MAC {
		t.Fatalf("sessions share resources: %+v %+v", a, b)
	}
	ga, gb := startGuest(t, a), startGuest(t, b)
	la, lb := listen(t, ga.do, "0.0.0.0:0"), listen(t, gb.do, "0.0.0.0:0")

	mustReach(t, "control: host -> guest A", m.HostDo, a.GuestIP.Addr(), la.port())
	mustReach(t, "control: host -> guest B", m.HostDo, b.GuestIP.Addr(), lb.port())
	mustNotReach(t, "guest A -> guest B", ga.do, b.GuestIP.Addr(), lb.port())
	mustNotReach(t, "guest B -> guest A", gb.do, a.GuestIP.Addr(), la.port())
	// Nor B's session namespace (its veth side accepts the host).
	nsb := listen(t, b.Do, "0.0.0.0:0")
	mustReach(t, "control: host -> session B veth", m.HostDo, netip.MustParseAddr("10.201.0.10"), nsb.port())
	mustNotReach(t, "guest A -> session B veth", ga.do, netip.MustParseAddr("10.201.0.10"), nsb.port())

	must(t, m.Teardown(ctx, a))
	must(t, m.Teardown(ctx, b))
}

// TestAntiSpoofing: 5. a packet from the guest with a source other than
// its own address dies in the session namespace.
func TestAntiSpoofing(t *testing.T) {
	e := newTestEnv(t)
	m := e.manager(t)
	ctx := context.Background()
	a, err := m.Setup(ctx, "s_spoof")
	must(t, err)
	g := startGuest(t, a)

	// The manager turns strict rp_filter on, which would drop this spoof
	// too; switch it off here so what is tested is the nftables rule.
	must(t, a.Do(func() error {
		if v, err := readSysctl("net.ipv4.conf.all.rp_filter"); err != nil || v != "1" {
			return fmt.Errorf("rp_filter = %q, %v; want 1", v, err)
		}
		for _, k := range []string{"all", "default", "tap0", "veth0"} {
			if err := writeSysctl("net.ipv4.conf."+k+".rp_filter", "0"); err != nil {
				return err
			}
		}
		return nil
	}))

	spoofed := netip.MustParseAddr("192.0.2.77")
	gh := handleFor(t, g.ns)
	eth, err := gh.LinkByName("eth0")
	must(t, err)
	must(t, gh.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(spoofed, 32))}))

	var udp *net.UDPConn
	must(t, e.inetDo(func() (err error) {
		udp, err = net.ListenUDP("udp4", &net.UDPAddr{IP: inetAddr.AsSlice()})
		return err
	}))
	defer udp.Close()
	dst := udp.LocalAddr().(*net.UDPAddr).AddrPort()

	before := dropCounters(t, a.NSPath, TableName, "prerouting")
	send := func(src netip.Addr, payload string) {
		t.Helper()
		must(t, g.do(func() error {
			c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(dst))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte(payload))
			return err
		}))
	}
	send(spoofed, "spoofed")
	send(a.GuestIP.Addr(), "legit")

	// The legitimate datagram arrives; the spoofed one (sent first, same
	// path) never does.
	buf := make([]byte, 64)
	udp.SetReadDeadline(time.Now().Add(okTimeout))
	n, from, err := udp.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("legit datagram: %v", err)
	}
	if string(buf[:n]) != "legit" || from.Addr() != hostAddr {
		t.Fatalf("got %q from %v, want \"legit\" from %v", buf[:n], from, hostAddr)
	}
	udp.SetReadDeadline(time.Now().Add(dropTimeout))
	if n, from, err := udp.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("spoofed datagram got through: %q from %v", buf[:n], from)
	}
	// And it was the anti-spoofing rule (second drop rule) that dropped it.
	pollUntil(t, "anti-spoofing counter", okTimeout, func() bool {
		after := dropCounters(t, a.NSPath, TableName, "prerouting")
		return len(after) == 2 && after[1] > before[1]
	})
}

// TestTeardownAndReuse: 6. Teardown leaves nothing, addresses are reused,
// 20 cycles leave nothing; Teardown is idempotent.
func TestTeardownAndReuse(t *testing.T) {
	e := newTestEnv(t)
	m := e.manager(t)
	ctx := context.Background()

	a, err := m.Setup(ctx, "s_reuse")
	must(t, err)
	h := handleFor(t, e.hostNS)
	if _, err := h.LinkByName(a.HostLink); err != nil {
		t.Fatalf("host link missing after Setup: %v", err)
	}
	if _, err := os.Stat(a.NSPath); err != nil {
		t.Fatalf("netns missing after Setup: %v", err)
	}
	if links, routes, addrs, nss := leftovers(t, e); len(links) != 1 || routes != 2 || addrs != 1 || len(nss) != 1 {
		// routes: the connected .0/30 and the guest /30.
		t.Fatalf("after Setup: links %v, %d routes, %d addrs, ns %v", links, routes, addrs, nss)
	}
	// A guest (stand-in VMM attached to the TAP) that is never detached.
	startGuest(t, a)
	must(t, m.Teardown(ctx, a))
	assertClean(t, e)
	must(t, m.Teardown(ctx, a)) // idempotent
	if err := a.Do(func() error { return nil }); err == nil {
		t.Fatal("Do succeeded on a torn-down attachment")
	}

	b, err := m.Setup(ctx, "s_reuse2")
	must(t, err)
	if b.GuestIP != a.GuestIP || b.HostLink != a.HostLink {
		t.Fatalf("freed block not reused: %v/%s after %v/%s", b.GuestIP, b.HostLink, a.GuestIP, a.HostLink)
	}
	// A stale second Teardown of a must not touch b, which now holds the
	// same block.
	must(t, m.Teardown(ctx, a))
	if _, err := h.LinkByName(b.HostLink); err != nil {
		t.Fatalf("stale Teardown removed the new session's link: %v", err)
	}
	must(t, m.Teardown(ctx, b))

	for i := range 20 {
		s, err := m.Setup(ctx, "s_cycle"+strconv.Itoa(i))
		must(t, err)
		if s.GuestIP != a.GuestIP {
			t.Fatalf("cycle %d got %v", i, s.GuestIP)
		}
		must(t, m.Teardown(ctx, s))
	}
	assertClean(t, e)
}

// TestConcurrentSetup runs Setup/Teardown in parallel (meaningful with -race).
func TestConcurrentSetup(t *testing.T) {
	e := newTestEnv(t)
	m := e.manager(t)
	ctx := context.Background()
	const n = 8
	atts := make([]*Attachment, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { atts[i], errs[i] = m.Setup(ctx, fmt.Sprintf("s_par%d", i)) })
	}
	wg.Wait()
	seen := map[netip.Prefix]bool{}
	for i, a := range atts {
		must(t, errs[i])
		if seen[a.GuestIP] {
			t.Fatalf("duplicate guest address %v", a.GuestIP)
		}
		seen[a.GuestIP] = true
	}
	if _, err := m.Setup(ctx, "s_par0"); err == nil {
		t.Fatal("second Setup for the same session succeeded")
	}
	// Concurrent Sweep must leave live sessions alone.
	must(t, m.Sweep(ctx))
	if links, _, _, nss := leftovers(t, e); len(links) != n || len(nss) != n {
		t.Fatalf("Sweep touched live sessions: %v %v", links, nss)
	}
	for i := range n {
		wg.Go(func() { errs[i] = m.Teardown(ctx, atts[i]) })
	}
	wg.Wait()
	for _, err := range errs {
		must(t, err)
	}
	assertClean(t, e)
}

// TestSetupFailureLeavesNothing: an error half-way (namespace name taken)
// rolls back, and the block is free again.
func TestSetupFailureLeavesNothing(t *testing.T) {
	e := newTestEnv(t)
	m := e.manager(t)
	ctx := context.Background()
	squat, err := createNamedNS(e.cfg.NetNSPrefix + e.cfg.Instance + "-s_taken")
	must(t, err)
	if _, err := m.Setup(ctx, "s_taken"); err == nil {
		t.Fatal("Setup over an existing namespace succeeded")
	}
	if _, err := os.Stat(squat); err != nil {
		t.Fatalf("rollback removed a namespace it did not create: %v", err)
	}
	must(t, removeNamedNS(squat))
	assertClean(t, e)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Setup(cctx, "s_cancelled"); err == nil {
		t.Fatal("Setup with a cancelled context succeeded")
	}
	a, err := m.Setup(ctx, "s_after")
	must(t, err)
	if a.GuestIP != netip.MustParsePrefix("10.201.0.6/30") {
		t.Fatalf("block leaked by failed Setup: got %v", a.GuestIP)
	}
	must(t, m.Teardown(ctx, a))
}

// TestStartInNamespace: Start runs the child inside the session netns, the
// child survives Start's thread juggling (Pdeathsig), and Teardown after
// the "VMM" crashed still cleans up.
func TestStartInNamespace(t *testing.T) {
	e := newTestEnv(t)
	m := e.manager(t)
	ctx := context.Background()
	a, err := m.Setup(ctx, "s_vmm")
	must(t, err)

	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(t, a.Start(cmd))
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })

	var want, got unix.Stat_t
	must(t, unix.Stat(a.NSPath, &want))
	must(t, unix.Stat(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid), &got))
	if want.Ino != got.Ino || want.Dev != got.Dev {
		t.Fatal("child is not in the session namespace")
	}
	var self unix.Stat_t
	must(t, unix.Stat("/proc/thread-self/ns/net", &self))
	if self.Ino == want.Ino {
		t.Fatal("calling thread left in the session namespace")
	}
	// Churn threads and namespaces; the child must still be running.
	for range 20 {
		must(t, a.Do(func() error { return nil }))
		must(t, m.HostDo(func() error { return nil }))
	}
	select {
	case err := <-exited:
		t.Fatalf("child died: %v", err)
	default:
	}

	// The "VMM" crashes; Teardown still removes everything.
	cmd.Process.Kill()
	<-exited
	must(t, m.Teardown(ctx, a))
	assertClean(t, e)
}

// TestSweepAfterCrash: 7. a manager that vanished without Teardown/Close
// leaves namespaces, links, routes and its table; 8. New copes with the
// table and Sweep removes the rest.
func TestSweepAfterCrash(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	crashed, err := New(e.cfg)
	must(t, err)
	for i := range 3 {
		_, err := crashed.Setup(ctx, fmt.Sprintf("s_crash%d", i))
		must(t, err)
	}
	crash(crashed) // "process died": nothing else is released

	if links, routes, _, nss := leftovers(t, e); len(links) != 3 || routes != 6 || len(nss) != 3 {
		t.Fatalf("crash left %v, %d routes, %v", links, routes, nss)
	}
	m := e.manager(t) // over the existing table
	ruleCounts := func() map[string]int {
		out := map[string]int{}
		for _, ch := range []string{"input", "forward"} {
			out[ch] = len(dropCounters(t, e.hostNS, m.TableName(), ch))
		}
		return out
	}
	// forward: non-IPv4, to any session, each always-denied range and the
	// pool, each default and configured denied range, inbound to guests.
	wantForward := 2 + len(AlwaysDenied) + 1 + len(DefaultDenyForward) + len(e.cfg.DenyForward) + 1
	if c := ruleCounts(); c["input"] != 1 || c["forward"] != wantForward {
		t.Fatalf("table not replaced cleanly, drop rules per chain: %v (want input 1, forward %d)", c, wantForward)
	}
	must(t, m.Sweep(ctx))
	assertClean(t, e)
	a, err := m.Setup(ctx, "s_crash0") // same name as a swept namespace
	must(t, err)
	if a.GuestIP != netip.MustParsePrefix("10.201.0.6/30") {
		t.Fatalf("got %v after Sweep", a.GuestIP)
	}
	g := startGuest(t, a)
	inet := listen(t, e.inetDo, "0.0.0.0:0")
	mustReach(t, "guest -> internet after Sweep", g.do, inetAddr, inet.port())
}

// TestCloseRemovesTable: 8. Close deletes the table (and live sessions,
// which would otherwise be unisolated); New re-creates it.
func TestCloseRemovesTable(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	fd, err := openNS(e.hostNS)
	must(t, err)
	defer unix.Close(fd)

	table := hostTableName(e.cfg.Instance)
	m, err := New(e.cfg)
	must(t, err)
	if ok, err := tableExists(fd, table); err != nil || !ok {
		t.Fatalf("table after New: %v %v", ok, err)
	}
	// The same instance twice on one host would share every name: refused,
	// naming the holder.
	if m2, err := New(e.cfg); err == nil {
		m2.Close()
		t.Fatal("a second manager of the same instance started")
	} else if !strings.Contains(err.Error(), "instance "+e.cfg.Instance) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("refusal does not name the running instance: %v", err)
	}
	crash(m)              // m is abandoned, like a crashed run
	m2, err := New(e.cfg) // idempotent over a leftover table
	must(t, err)
	must(t, m2.Close())
	if ok, _ := tableExists(fd, table); ok {
		t.Fatal("table still there after Close")
	}
	m3, err := New(e.cfg)
	must(t, err)
	if _, err := m3.Setup(ctx, "s_close"); err != nil {
		t.Fatal(err)
	}
	must(t, m3.Close())
	must(t, m3.Close()) // idempotent
	if ok, _ := tableExists(fd, table); ok {
		t.Fatal("table still there after Close")
	}
	assertClean(t, e)
	if _, err := m3.Setup(ctx, "s_late"); err == nil {
		t.Fatal("Setup after Close succeeded")
	}
	checkIPForward(t, e)
}

// TestPoolOverlapRefused: a pool that collides with the host's own network
// is rejected up front.
func TestPoolOverlapRefused(t *testing.T) {
	e := newTestEnv(t)
	e.cfg.Pool = netip.MustParsePrefix("198.51.100.0/28")
	if m, err := New(e.cfg); err == nil {
		m.Close()
		t.Fatal("New accepted a pool overlapping the uplink subnet")
	}
}

// checkIPForward: New turned forwarding on in the (test) host namespace.
func checkIPForward(t *testing.T, e *testEnv) {
	t.Helper()
	var v string
	must(t, inNS(e.hostNS, func() (err error) { v, err = readSysctl("net.ipv4.ip_forward"); return err }))
	if v != "1" {
		t.Fatalf("ip_forward in the test host ns = %q", v)
	}
}

// TestDefaultDNS: without Config.DNS guests get the host's reachable
// resolvers: not loopback, not link-local, not the host's own addresses.
func TestDefaultDNS(t *testing.T) {
	e := newTestEnv(t)
	conf := t.TempDir() + "/resolv.conf"
	must(t, os.WriteFile(conf, []byte("nameserver 127.0.0.53\nnameserver 198.51.100.2\nnameserver 10.9.9.9\n"), 0o644))
	old, oldResolved := resolvConfPath, resolvedConfPath
	resolvConfPath, resolvedConfPath = conf, conf+".absent"
	t.Cleanup(func() { resolvConfPath, resolvedConfPath = old, oldResolved })

	e.cfg.DNS = nil
	m := e.manager(t)
	a, err := m.Setup(context.Background(), "s_dns")
	must(t, err)
	if len(a.DNS) != 1 || a.DNS[0] != netip.MustParseAddr("10.9.9.9") {
		t.Fatalf("DNS = %v, want [10.9.9.9]", a.DNS)
	}
	must(t, m.Teardown(context.Background(), a))
	must(t, m.Close())

	must(t, os.WriteFile(conf, []byte("nameserver 198.51.100.2\n"), 0o644))
	m2 := e.manager(t)
	if len(m2.dns) != 2 || m2.dns[0] != fallbackDNS[0] {
		t.Fatalf("fallback DNS = %v", m2.dns)
	}
}
