package vmtest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/agent/builtin"
	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/image"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/network"
	"github.com/execlaw/execlaw/internal/sandbox/qemu"
	"github.com/execlaw/execlaw/internal/sandbox/vm"
	"github.com/execlaw/execlaw/internal/testutil"
)

// newTestbed makes a testbed named so that SweepTestbeds("xlv") removes it
// after a killed run; extra addresses go on the internet side.
func newTestbed(t testing.TB, extra ...netip.Prefix) (*network.Testbed, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("VM tests need root: network namespaces, TAP devices, debootstrap")
	}
	sweepOnce.Do(func() {
		if err := network.SweepTestbeds("xlv"); err != nil {
			t.Logf("removing what killed test runs left: %v", err)
		}
	})
	envCounter++
	pfx := fmt.Sprintf("xlv%d-%d-", os.Getpid(), envCounter)
	tb, err := network.NewTestbed(pfx, extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	return tb, pfx
}

// newServerOn is one full server (API, session manager, QEMU driver) whose
// VM networking uses cfg in the testbed's host namespace.
func newServerOn(t testing.TB, tb *network.Testbed, pfx string, cfg network.Config) *env {
	return newServerWith(t, tb, pfx, cfg, testutil.VMImage(t), 4, nil)
}

// newServerWith is newServerOn for img, up to maxSessions sessions and the
// given agents besides the built-in one; opts adjust the server's options.
func newServerWith(t testing.TB, tb *network.Testbed, pfx string, cfg network.Config, img image.Boot, maxSessions int, agents []agent.Kind, opts ...func(*apitest.Options)) *env {
	t.Helper()
	cfg.HostNSPath = tb.HostNS
	e := &env{tb: tb, pfx: pfx, img: img}
	e.net = vm.NewHostNetwork(cfg)
	// What execlaw serve does at start: claim a block, sweep leftovers.
	if err := e.net.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.net.Close() })
	d, err := qemu.New(qemu.Config{Image: e.img, Accel: qemu.AccelTCG, Network: e.net})
	if err != nil {
		t.Fatal(err)
	}
	o := apitest.Options{Driver: d, MaxSessions: maxSessions, Agents: append([]agent.Kind{builtin.Kind}, agents...)}
	for _, f := range opts {
		f(&o)
	}
	e.h = apitest.New(t, o)
	e.fake = llmtest.NewAnthropic().Attach(t)
	return e
}

// probes runs several TCP (and UDP echo) probes at once in the guest and
// returns each one's outcome by name: "open", "refused" or "timeout" (for
// UDP: "open" when the echo came back, else "timeout").
func (e *env) probes(t *testing.T, id string, tcp map[string]netip.AddrPort, udp map[string]netip.AddrPort) map[string]string {
	t.Helper()
	var sb strings.Builder
	for name, ap := range tcp {
		fmt.Fprintf(&sb, `( if timeout 4 bash -c 'exec 3<>/dev/tcp/%s/%d' 2>/tmp/err.%s; then r=open; `+
			`elif grep -q refused /tmp/err.%s; then r=refused; else r=timeout; fi; echo "%s $r" ) & `,
			ap.Addr(), ap.Port(), name, name, name)
	}
	for name, ap := range udp {
		fmt.Fprintf(&sb, `( if [ "$(timeout 4 bash -c 'exec 3<>/dev/udp/%s/%d; printf query >&3; head -c 5 <&3' 2>/dev/null)" = query ]; `+
			`then r=open; else r=timeout; fi; echo "%s $r" ) & `, ap.Addr(), ap.Port(), name)
	}
	sb.WriteString("wait")
	out := e.bash(t, id, sb.String())
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
			got[k] = v
		}
	}
	return got
}

// udpEcho answers datagrams on addr inside a testbed namespace.
func udpEcho(t *testing.T, do func(func() error) error, addr netip.AddrPort) {
	t.Helper()
	var c *net.UDPConn
	if err := do(func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
		return err
	}); err != nil {
		t.Fatal(err)
	}
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
}

// A VM guest reaches the internet but not the host's LAN or other private
// ranges; its resolver, on the LAN, answers on port 53 (TCP and UDP) and
// nothing else; a range the operator allows (--guest-allow) is reachable.
func TestGuestEgressPolicy(t *testing.T) {
	private := netip.MustParseAddr("10.9.9.9") // a VPC neighbour, routed like the internet
	tb, pfx := newTestbed(t, netip.PrefixFrom(private, 32))
	e := newServerOn(t, tb, pfx, network.Config{
		NetNSPrefix:  pfx + "s-",
		Instance:     network.InstanceID(t.TempDir()),
		DNS:          []netip.Addr{tb.LANResolverAddr},
		AllowForward: []netip.Prefix{netip.PrefixFrom(tb.LANAddr, 32)},
	})
	inetPort := listen(t, tb.InternetDo, tb.InternetAddr)
	privPort := listen(t, tb.InternetDo, private)
	lanPort := listen(t, tb.LANDo, tb.LANAddr)
	otherPort := listen(t, tb.LANDo, tb.LANResolverAddr)
	var dnsLn net.Listener
	if err := tb.LANDo(func() (err error) {
		dnsLn, err = net.Listen("tcp4", netip.AddrPortFrom(tb.LANResolverAddr, 53).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dnsLn.Close() })
	go func() {
		for {
			c, err := dnsLn.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	udpEcho(t, tb.LANDo, netip.AddrPortFrom(tb.LANResolverAddr, 53))
	udpEcho(t, tb.LANDo, netip.AddrPortFrom(tb.LANResolverAddr, 5353))

	id := e.session(t, "full")
	if out := e.bash(t, id, "cat /etc/resolv.conf"); !strings.Contains(out, tb.LANResolverAddr.String()) {
		t.Errorf("guest resolv.conf does not name the resolver: %q", out)
	}
	ap := netip.AddrPortFrom
	got := e.probes(t, id, map[string]netip.AddrPort{
		"internet":       ap(tb.InternetAddr, uint16(inetPort)),
		"lan-allowed":    ap(tb.LANAddr, uint16(lanPort)),
		"dns-tcp":        ap(tb.LANResolverAddr, 53),
		"resolver-other": ap(tb.LANResolverAddr, uint16(otherPort)),
		"private-10":     ap(private, uint16(privPort)),
		"host-lan-addr":  ap(tb.LANHostAddr, 22),
	}, map[string]netip.AddrPort{
		"dns-udp":            ap(tb.LANResolverAddr, 53),
		"resolver-other-udp": ap(tb.LANResolverAddr, 5353),
	})
	want := map[string]string{
		"internet": "open", "lan-allowed": "open", "dns-tcp": "open", "dns-udp": "open",
		"resolver-other": "timeout", "resolver-other-udp": "timeout", "private-10": "timeout", "host-lan-addr": "timeout",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("guest -> %s: %q, want %s", k, got[k], w)
		}
	}
}

// Two servers with different data directories share one host (namespace,
// pool, namespace prefix). The second starts (claims, sweeps) while the
// first one's VM session is active: the first session keeps running
// commands and reaching the outside; both guests reach it with addresses of
// their own, and not each other.
func TestTwoServersShareHost(t *testing.T) {
	tb, pfx := newTestbed(t)
	inetPort := listen(t, tb.InternetDo, tb.InternetAddr)
	shared := pfx + "s-" // as two real servers would both use "execlaw-"
	dataA, dataB := t.TempDir(), t.TempDir()
	a := newServerOn(t, tb, pfx, network.Config{NetNSPrefix: shared, Instance: network.InstanceID(dataA), Owner: dataA,
		DNS: []netip.Addr{netip.MustParseAddr("192.0.2.53")}})
	idA := a.session(t, "full")
	ipA := strings.TrimSpace(a.bash(t, idA, "hostname -I"))
	if got := strings.TrimSpace(a.bash(t, idA, probe(tb.InternetAddr.String(), inetPort))); got != "open" {
		t.Fatalf("guest A -> internet before B: %s", got)
	}
	nsA, _ := filepath.Glob("/run/netns/" + shared + network.InstanceID(dataA) + "-*")

	b := newServerOn(t, tb, pfx, network.Config{NetNSPrefix: shared, Instance: network.InstanceID(dataB), Owner: dataB,
		DNS: []netip.Addr{netip.MustParseAddr("192.0.2.53")}})
	for _, p := range nsA {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("starting server B removed server A's namespace: %v", err)
		}
	}
	if len(nsA) != 1 {
		t.Fatalf("server A's namespaces: %v", nsA)
	}
	idB := b.session(t, "full")
	ipB := strings.TrimSpace(b.bash(t, idB, "hostname -I"))
	if ipA == "" || ipB == "" || ipA == ipB {
		t.Fatalf("guest addresses %q and %q", ipA, ipB)
	}

	a.h.WaitState(idA, "active")
	if got := strings.TrimSpace(a.bash(t, idA, probe(tb.InternetAddr.String(), inetPort)+"; "+probe(ipB, 22))); got != "open\ntimeout" {
		t.Errorf("guest A after server B started: internet, guest B = %q, want open, timeout", got)
	}
	if got := strings.TrimSpace(b.bash(t, idB, probe(tb.InternetAddr.String(), inetPort)+"; "+probe(ipA, 22))); got != "open\ntimeout" {
		t.Errorf("guest B: internet, guest A = %q, want open, timeout", got)
	}
	st, err := tb.State()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Links) != 2 {
		t.Errorf("host links %v, want one per server", st.Links)
	}
}
