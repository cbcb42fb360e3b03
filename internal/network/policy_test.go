package network

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// Addresses on the test "internet" side that stand for the other private
// ranges a host may sit in (a VPC's 10/8, Docker's 172.16/12, CGNAT or
// Tailscale's 100.64/10, the benchmarking 198.18/15). They are routed through
// the host like any destination, so only the policy keeps guests away.
var (
	privateTen   = netip.MustParseAddr("10.9.9.9")
	private172   = netip.MustParseAddr("172.16.5.5")
	cgnatAddr    = netip.MustParseAddr("100.64.1.1")
	benchmarkNet = netip.MustParseAddr("198.18.0.1")
)

// newPolicyEnv is newTestEnv with the private stand-ins on the internet side
// and the LAN's resolver as the guests' DNS server.
func newPolicyEnv(t *testing.T) *testEnv {
	t.Helper()
	requireRoot(t)
	extra := []netip.Prefix{netip.PrefixFrom(denyAddr, 32)}
	for _, a := range []netip.Addr{privateTen, private172, cgnatAddr, benchmarkNet} {
		extra = append(extra, netip.PrefixFrom(a, 32))
	}
	e := newTestEnvWith(t, extra...)
	e.cfg.DNS = []netip.Addr{e.tb.LANResolverAddr}
	return e
}

// udpEcho answers every datagram on addr, in a namespace, with the same bytes.
func udpEcho(t *testing.T, do func(func() error) error, addr string) int {
	t.Helper()
	var c *net.UDPConn
	must(t, do(func() error {
		ua, err := net.ResolveUDPAddr("udp4", addr)
		if err != nil {
			return err
		}
		c, err = net.ListenUDP("udp4", ua)
		return err
	}))
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// udpRoundTrip sends a datagram from a namespace and waits for its echo.
func udpRoundTrip(do func(func() error) error, ip netip.Addr, port int, timeout time.Duration) error {
	return do(func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))))
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write([]byte("query")); err != nil {
			return err
		}
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) != "query" {
			return fmt.Errorf("bad echo %q", buf[:n])
		}
		return nil
	})
}

type target struct {
	what string
	ip   netip.Addr
	port int
}

// mustNotReachAll dials every target at once; none may answer. Run in
// parallel, the drops cost one dropTimeout in all.
func mustNotReachAll(t *testing.T, do func(func() error) error, targets ...target) {
	t.Helper()
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, tg := range targets {
		wg.Go(func() { errs[i] = dial(do, tg.ip, tg.port, dropTimeout) })
	}
	wg.Wait()
	for i, tg := range targets {
		if errs[i] == nil {
			t.Errorf("guest reached %s (%v:%d), which must be denied", tg.what, tg.ip, tg.port)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// TestGuestEgressPolicy: guests reach the internet but not the host's LAN
// or any other private range; the resolver, though on the LAN, answers on
// port 53 (UDP and TCP) and nothing else; an allowed range is carved out of
// the denial, while metadata, the host and other sessions stay denied
// whatever is allowed.
func TestGuestEgressPolicy(t *testing.T) {
	e := newPolicyEnv(t)
	tb := e.tb
	ctx := context.Background()

	// Servers: "public" on the internet, one on the LAN, the LAN's resolver
	// (port 53 both ways, plus another service on it), the private
	// stand-ins, metadata.
	pub := listen(t, e.inetDo, "0.0.0.0:0")
	lan := listen(t, tb.LANDo, tb.LANAddr.String()+":0")
	dnsTCP := listen(t, tb.LANDo, tb.LANResolverAddr.String()+":53")
	dnsUDP := udpEcho(t, tb.LANDo, tb.LANResolverAddr.String()+":53")
	resolverOther := listen(t, tb.LANDo, tb.LANResolverAddr.String()+":0")
	resolverOtherUDP := udpEcho(t, tb.LANDo, tb.LANResolverAddr.String()+":0")
	if dnsTCP.port() != 53 || dnsUDP != 53 {
		t.Fatalf("resolver ports %d/%d", dnsTCP.port(), dnsUDP)
	}
	hostSvc := listen(t, tb.HostDo, "0.0.0.0:0")

	// Controls: everything is up and routed; the host reaches all of it.
	for _, a := range []netip.Addr{privateTen, private172, cgnatAddr, benchmarkNet, metaAddr} {
		mustReach(t, "control: host -> "+a.String(), tb.HostDo, a, pub.port())
	}
	mustReach(t, "control: host -> LAN server", tb.HostDo, tb.LANAddr, lan.port())
	mustReach(t, "control: host -> resolver's other port", tb.HostDo, tb.LANResolverAddr, resolverOther.port())
	must(t, udpRoundTrip(tb.HostDo, tb.LANResolverAddr, resolverOtherUDP, okTimeout))

	// Denied: the private ranges, including one DenyForward adds.
	privates := func(port int) []target {
		return []target{
			{"the LAN server", tb.LANAddr, lan.port()},
			{"the resolver's other TCP port", tb.LANResolverAddr, resolverOther.port()},
			{"10/8", privateTen, port},
			{"172.16/12", private172, port},
			{"CGNAT 100.64/10", cgnatAddr, port},
			{"198.18/15", benchmarkNet, port},
			{"a DenyForward range", denyAddr, port},
		}
	}
	fixed := func(other *Attachment, otherPort int) []target {
		return []target{
			{"the metadata address", metaAddr, pub.port()},
			{"the host's uplink address", hostAddr, hostSvc.port()},
			{"the host's LAN address", tb.LANHostAddr, hostSvc.port()},
			{"the host's end of the session link", netip.MustParseAddr("10.201.0.1"), hostSvc.port()},
			{"another session's guest", other.GuestIP.Addr(), otherPort},
		}
	}

	t.Run("default", func(t *testing.T) {
		m := e.manager(t)
		a, err := m.Setup(ctx, "s_pol")
		must(t, err)
		b, err := m.Setup(ctx, "s_pol_b")
		must(t, err)
		if len(a.DNS) != 1 || a.DNS[0] != tb.LANResolverAddr {
			t.Fatalf("guest DNS %v, want the LAN resolver", a.DNS)
		}
		g, gb := startGuest(t, a), startGuest(t, b)
		bl := listen(t, gb.do, "0.0.0.0:0")

		mustReach(t, "guest -> public server", g.do, inetAddr, pub.port())
		mustReach(t, "guest -> resolver, TCP 53", g.do, tb.LANResolverAddr, 53)
		if err := udpRoundTrip(g.do, tb.LANResolverAddr, 53, okTimeout); err != nil {
			t.Fatalf("guest -> resolver, UDP 53: %v", err)
		}
		if err := udpRoundTrip(g.do, tb.LANResolverAddr, resolverOtherUDP, dropTimeout); err == nil {
			t.Fatal("guest reached the resolver on another UDP port")
		}
		mustNotReachAll(t, g.do, append(privates(pub.port()), fixed(b, bl.port())...)...)
		// The public server is still fine afterwards.
		mustReach(t, "guest -> public server again", g.do, inetAddr, pub.port())
		must(t, m.Close())
	})

	t.Run("allow a host", func(t *testing.T) {
		e.cfg.AllowForward = []netip.Prefix{netip.PrefixFrom(tb.LANAddr, 32)}
		m := e.manager(t)
		a, err := m.Setup(ctx, "s_pol")
		must(t, err)
		g := startGuest(t, a)
		mustReach(t, "guest -> allowed LAN server", g.do, tb.LANAddr, lan.port())
		mustReach(t, "guest -> public server", g.do, inetAddr, pub.port())
		mustNotReachAll(t, g.do, privates(pub.port())[1:]...)
		must(t, m.Close())
	})

	t.Run("allow everything", func(t *testing.T) {
		// 0.0.0.0/0 opens every private range, but never the fixed ones.
		e.cfg.AllowForward = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
		m := e.manager(t)
		a, err := m.Setup(ctx, "s_pol")
		must(t, err)
		b, err := m.Setup(ctx, "s_pol_b")
		must(t, err)
		g, gb := startGuest(t, a), startGuest(t, b)
		bl := listen(t, gb.do, "0.0.0.0:0")
		for _, tg := range privates(pub.port()) {
			mustReach(t, "guest -> "+tg.what+" (allowed)", g.do, tg.ip, tg.port)
		}
		mustNotReachAll(t, g.do, fixed(b, bl.port())...)
		must(t, m.Close())
	})

	t.Run("cannot allow the fixed ranges", func(t *testing.T) {
		for _, p := range []string{"169.254.169.254/32", "127.0.0.1/32", "10.201.3.0/24", "224.0.0.0/8"} {
			e.cfg.AllowForward = []netip.Prefix{netip.MustParsePrefix(p)}
			if m, err := New(e.cfg); err == nil {
				m.Close()
				t.Errorf("AllowForward %s accepted", p)
			}
		}
	})
}

// TestPolicyDropCounted: the counters of the rule that dropped the LAN
// connection move, so `nft list table` tells an operator which rule fired.
func TestPolicyDropCounted(t *testing.T) {
	e := newPolicyEnv(t)
	m := e.manager(t)
	a, err := m.Setup(context.Background(), "s_ctr")
	must(t, err)
	g := startGuest(t, a)
	lan := listen(t, e.tb.LANDo, e.tb.LANAddr.String()+":0")
	sum := func() (n uint64) {
		for _, c := range dropCounters(t, e.hostNS, m.TableName(), "forward") {
			n += c
		}
		return n
	}
	before := sum()
	mustNotReach(t, "guest -> LAN", g.do, e.tb.LANAddr, lan.port())
	pollUntil(t, "a forward drop counted", okTimeout, func() bool { return sum() > before })
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes(" 192.168.1.50, 10.1.0.0/16,,172.16.0.9/12 ")
	must(t, err)
	want := mustPrefixes("192.168.1.50/32", "10.1.0.0/16", "172.16.0.0/12")
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got, err := ParsePrefixes(""); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
	for _, bad := range []string{"fd00::/8", "10.0.0.0/33", "lan", "10.0.0"} {
		if _, err := ParsePrefixes(bad); err == nil {
			t.Errorf("ParsePrefixes(%q) accepted", bad)
		}
	}
}

func TestGuestPolicyString(t *testing.T) {
	p, err := newGuestPolicy(DefaultPool, mustPrefixes("192.168.1.50/32"), mustPrefixes("203.0.113.0/24"),
		[]netip.Addr{netip.MustParseAddr("192.168.1.1")})
	must(t, err)
	s := p.String()
	for _, want := range []string{"169.254.0.0/16", "10.201.0.0/16", "10.0.0.0/8", "100.64.0.0/10", "203.0.113.0/24",
		"allowed: 192.168.1.50/32", "DNS: 192.168.1.1 port 53"} {
		if !strings.Contains(s, want) {
			t.Errorf("policy %q lacks %q", s, want)
		}
	}
	if strings.Contains(s, "\n") {
		t.Errorf("policy is not one line: %q", s)
	}
	if _, err := newGuestPolicy(DefaultPool, mustPrefixes("10.201.0.0/24"), nil, nil); err == nil {
		t.Error("allowing part of the pool accepted")
	}
	if _, err := newGuestPolicy(DefaultPool, nil, []netip.Prefix{netip.MustParsePrefix("fd00::/8")}, nil); err == nil {
		t.Error("IPv6 deny accepted")
	}
	var bad netip.Prefix
	if _, err := newGuestPolicy(DefaultPool, []netip.Prefix{bad}, nil, nil); err == nil {
		t.Error("invalid allow accepted")
	}
}

// TestDefaultDNSResolved: where /etc/resolv.conf names only systemd-resolved's
// stub, guests get resolved's upstream servers (a home router, say), not the
// public fallback.
func TestDefaultDNSResolved(t *testing.T) {
	dir := t.TempDir()
	stub, upstream := dir+"/resolv.conf", dir+"/resolved.conf"
	must(t, os.WriteFile(stub, []byte("nameserver 127.0.0.53\noptions edns0\n"), 0o644))
	must(t, os.WriteFile(upstream, []byte("nameserver 192.168.1.1\nnameserver fe80::1%eth0\n"), 0o644))
	old, oldResolved := resolvConfPath, resolvedConfPath
	t.Cleanup(func() { resolvConfPath, resolvedConfPath = old, oldResolved })

	resolvConfPath, resolvedConfPath = stub, upstream
	if got := defaultDNS(); len(got) != 1 || got[0] != netip.MustParseAddr("192.168.1.1") {
		t.Fatalf("DNS behind the resolved stub = %v", got)
	}
	resolvedConfPath = dir + "/absent"
	if got := defaultDNS(); fmt.Sprint(got) != fmt.Sprint(fallbackDNS) {
		t.Fatalf("DNS with only the stub = %v, want the fallback", got)
	}
}
