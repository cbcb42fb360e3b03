package network

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Testbed stands in for a host's network in tests: a "host" namespace (pass
// HostNS as Config.HostNSPath) and an "internet" namespace behind it,
// joined by a veth. Sessions' traffic then never leaves namespaces the test
// made. The internet namespace also holds 169.254.169.254, so a test can
// show the metadata address is blocked rather than merely absent.
type Testbed struct {
	HostNS     string
	InternetNS string
	// HostAddr is the host namespace's uplink address; InternetAddr is "a
	// server on the internet".
	HostAddr     netip.Addr
	InternetAddr netip.Addr
	MetadataAddr netip.Addr
}

// Addresses of a Testbed, from the documentation ranges.
var (
	TestbedInternetAddr = netip.MustParseAddr("198.51.100.1")
	TestbedHostAddr     = netip.MustParseAddr("198.51.100.2")
	TestbedMetadataAddr = netip.MustParseAddr("169.254.169.254")
)

// NewTestbed creates the two namespaces, named prefix+"host" and prefix+"inet".
// extra addresses are added to the internet side.
func NewTestbed(prefix string, extra ...netip.Prefix) (_ *Testbed, err error) {
	tb := &Testbed{HostAddr: TestbedHostAddr, InternetAddr: TestbedInternetAddr, MetadataAddr: TestbedMetadataAddr}
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
	return tb, nil
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

// Close removes both namespaces.
func (tb *Testbed) Close() error {
	var errs []error
	for _, p := range []string{tb.HostNS, tb.InternetNS} {
		if p != "" {
			errs = append(errs, removeNamedNS(p))
		}
	}
	return errors.Join(errs...)
}

// HostState is what sessions add to the host namespace: links and firewall
// rules. Tests compare it before and after.
type HostState struct {
	Links []string // session links (xlh*)
	Rules int      // rules in the execlaw table
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
		if strings.HasPrefix(l.Attrs().Name, hostLinkPrefix) {
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
		if ch.Table.Name != TableName {
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
