package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Testbed stands in for a host's network in tests: a "host" namespace (pass
// HostNS as Config.HostNSPath), an "internet" namespace behind it (its
// default route) and a "LAN" namespace on a private subnet the host is
// attached to, each joined to the host by a veth. Sessions' traffic then
// never leaves namespaces the test made. The internet namespace also holds
// 169.254.169.254, so a test can show the metadata address is blocked
// rather than merely absent; the LAN holds a server and a resolver on
// private addresses, as a home or office network (or a VPC) would.
//
//	internet ns  wan0 198.51.100.1/24 (+169.254.169.254, extras)
//	   | veth
//	host ns      uplink 198.51.100.2/24 (default route), lan 192.168.77.2/24
//	   | veth
//	LAN ns       eth0 192.168.77.10/24 (a server), 192.168.77.53/24 (a resolver)
type Testbed struct {
	HostNS     string
	InternetNS string
	LANNS      string
	// HostAddr is the host namespace's uplink address; InternetAddr is "a
	// server on the internet".
	HostAddr     netip.Addr
	InternetAddr netip.Addr
	MetadataAddr netip.Addr
	// LANHostAddr is the host's address on the LAN; LANAddr is a server on
	// the LAN and LANResolverAddr its DNS server (a home router, a VPC
	// resolver).
	LANHostAddr     netip.Addr
	LANAddr         netip.Addr
	LANResolverAddr netip.Addr
}

// Addresses of a Testbed: documentation ranges for the internet, a private
// /24 for the LAN.
var (
	TestbedInternetAddr    = netip.MustParseAddr("198.51.100.1")
	TestbedHostAddr        = netip.MustParseAddr("198.51.100.2")
	TestbedMetadataAddr    = netip.MustParseAddr("169.254.169.254")
	TestbedLANHostAddr     = netip.MustParseAddr("192.168.77.2")
	TestbedLANAddr         = netip.MustParseAddr("192.168.77.10")
	TestbedLANResolverAddr = netip.MustParseAddr("192.168.77.53")
)

// NewTestbed creates the three namespaces, named prefix+"host",
// prefix+"inet" and prefix+"lan". extra addresses are added to the internet
// side.
func NewTestbed(prefix string, extra ...netip.Prefix) (_ *Testbed, err error) {
	tb := &Testbed{HostAddr: TestbedHostAddr, InternetAddr: TestbedInternetAddr, MetadataAddr: TestbedMetadataAddr,
		LANHostAddr: TestbedLANHostAddr, LANAddr: TestbedLANAddr, LANResolverAddr: TestbedLANResolverAddr}
	defer func() {
		if err != nil {
			tb.Close()
		}
	}()
	if tb.HostNS, err = createNamedNS(prefix + "host"); err != nil {
		return nil, err
	}
	if tb.InternetNS, err = createNamedNS(prefix + "inet"); err != nil {
		return nil, err
	}
	if tb.LANNS, err = createNamedNS(prefix + "lan"); err != nil {
		return nil, err
	}
	hfd, err := openNS(tb.HostNS)
	if err != nil {
		return nil, err
	}
	defer unix.Close(hfd)
	ifd, err := openNS(tb.InternetNS)
	if err != nil {
		return nil, err
	}
	defer unix.Close(ifd)
	hh, err := newHandleAt(hfd)
	if err != nil {
		return nil, err
	}
	defer hh.Close()
	ih, err := newHandleAt(ifd)
	if err != nil {
		return nil, err
	}
	defer ih.Close()

	if err := hh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "wan0", PeerNamespace: netlink.NsFd(ifd)}); err != nil {
		return nil, fmt.Errorf("testbed veth: %w", err)
	}
	up, err := bringUp(hh, "uplink", netip.PrefixFrom(tb.HostAddr, 24))
	if err != nil {
		return nil, err
	}
	if _, err := bringUp(hh, "lo"); err != nil {
		return nil, err
	}
	if err := hh.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Gw: tb.InternetAddr.AsSlice()}); err != nil {
		return nil, err
	}
	addrs := append([]netip.Prefix{netip.PrefixFrom(tb.InternetAddr, 24), netip.PrefixFrom(tb.MetadataAddr, 32)}, extra...)
	wan, err := bringUp(ih, "wan0", addrs...)
	if err != nil {
		return nil, err
	}
	if _, err := bringUp(ih, "lo"); err != nil {
		return nil, err
	}
	// A route back to the pool, so "the internet" could reach guests
	// directly: NAT and the inbound drop are then what stops it.
	if err := ih.RouteAdd(&netlink.Route{LinkIndex: wan.Attrs().Index, Dst: ipNet(DefaultPool), Gw: tb.HostAddr.AsSlice()}); err != nil {
		return nil, err
	}
	if err := tb.addLAN(hh); err != nil {
		return nil, fmt.Errorf("testbed LAN: %w", err)
	}
	return tb, nil
}

func (tb *Testbed) addLAN(hh *netlink.Handle) error {
	lfd, err := openNS(tb.LANNS)
	if err != nil {
		return err
	}
	defer unix.Close(lfd)
	lh, err := newHandleAt(lfd)
	if err != nil {
		return err
	}
	defer lh.Close()
	if err := hh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lan"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(lfd)}); err != nil {
		return err
	}
	if _, err := bringUp(hh, "lan", netip.PrefixFrom(tb.LANHostAddr, 24)); err != nil {
		return err
	}
	eth, err := bringUp(lh, "eth0", netip.PrefixFrom(tb.LANAddr, 24), netip.PrefixFrom(tb.LANResolverAddr, 24))
	if err != nil {
		return err
	}
	if _, err := bringUp(lh, "lo"); err != nil {
		return err
	}
	// A default route via the host, as if it were the LAN's router: so
	// only the host's rules keep guests from the LAN (and the LAN from
	// guests), not a missing route.
	return lh.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: tb.LANHostAddr.AsSlice()})
}

func bringUp(h *netlink.Handle, name string, addrs ...netip.Prefix) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(a)}); err != nil {
			return nil, fmt.Errorf("%s %s: %w", name, a, err)
		}
	}
	return l, h.LinkSetUp(l)
}

// InternetDo runs fn inside the internet namespace (to listen there).
func (tb *Testbed) InternetDo(fn func() error) error { return inNS(tb.InternetNS, fn) }

// HostDo runs fn inside the host namespace.
func (tb *Testbed) HostDo(fn func() error) error { return inNS(tb.HostNS, fn) }

// LANDo runs fn inside the LAN namespace (to listen there).
func (tb *Testbed) LANDo(fn func() error) error { return inNS(tb.LANNS, fn) }

// Close removes the namespaces.
func (tb *Testbed) Close() error {
	var errs []error
	for _, p := range []string{tb.HostNS, tb.InternetNS, tb.LANNS} {
		if p != "" {
			errs = append(errs, removeNamedNS(p))
		}
	}
	return errors.Join(errs...)
}

// HostState is what sessions add to the host namespace: links and firewall
// rules, of every instance. Tests compare it before and after.
type HostState struct {
	Links []string // session links (xl<instance>-*)
	Rules int      // rules in the execlaw-* tables
}

// State reads the testbed host namespace's HostState.
func (tb *Testbed) State() (HostState, error) {
	var st HostState
	fd, err := openNS(tb.HostNS)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	h, err := newHandleAt(fd)
	if err != nil {
		return st, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return st, err
	}
	for _, l := range links {
		if isSessionLink(l.Attrs().Name) {
			st.Links = append(st.Links, l.Attrs().Name)
		}
	}
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		return st, err
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return st, err
	}
	for _, ch := range chains {
		if !strings.HasPrefix(ch.Table.Name, TableName+"-") {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return st, err
		}
		st.Rules += len(rules)
	}
	return st, nil
}

// SweepTestbeds removes what tests of a family left behind when they were
// killed before their cleanup ran (a timeout, an interrupted run): the
// named namespaces called <family><pid>-…, for a pid that no longer runs.
// Tests name their namespaces that way and sweep their family at start.
func SweepTestbeds(family string) error {
	names, err := listNamedNS(family)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		rest := strings.TrimPrefix(name, family)
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 {
			continue // not a testbed name of this family
		}
		if unix.Kill(pid, 0) != unix.ESRCH {
			continue // its test still runs (or may: EPERM)
		}
		errs = append(errs, removeNamedNS(filepath.Join(netnsDir, name)))
	}
	return errors.Join(errs...)
}

// Dial connects from the testbed's host namespace, as a process of that
// "host" would: to a server listening on its loopback, say, which the
// test's own namespace cannot reach.
func (tb *Testbed) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := inNS(tb.HostNS, func() (err error) {
		var d net.Dialer
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// Listen opens a listener in the testbed's host namespace: a service on the
// "host" that a server running there reaches on its own loopback.
func (tb *Testbed) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := inNS(tb.HostNS, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}
