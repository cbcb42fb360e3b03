package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Host links are named in instance.go: xl<instance>-<slot>. The host
// nftables rules match on those names, and Sweep deletes every link of its
// own instance, so nothing else on a host may use the "xl<6 hex>-" pattern.
const (
	// nsLinkName is the session side of the veth pair, inside the session ns.
	nsLinkName = "veth0"
	// TapName is the TAP device inside every session ns.
	TapName = "tap0"
)

// newHandleAt returns a netlink handle whose sockets live in the namespace
// fd refers to. The sockets are created on a namespace thread of our own
// (onNSThread) rather than by netlink.NewHandleAt, whose thread switching
// unlocks the thread even when switching back failed.
func newHandleAt(nsFd int) (*netlink.Handle, error) {
	var h *netlink.Handle
	err := inNSFd(nsFd, func() error {
		var err error
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE, unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("network: netlink handle: %w", err)
	}
	return h, nil
}

// createTap creates a persistent, single-queue TAP device in the calling
// thread's network namespace (run it inside inNS), owned by this process's
// user: the VMM, started as that user without capabilities
// (vm.WithoutAmbientCaps), may attach to a TAP device it owns, and to no
// other. A TAP can only
// be made through /dev/net/tun, and the device lands in the namespace of the
// thread that opens that file: rtnetlink refuses to create tun devices.
//
// Persistent, so it outlives this descriptor and the VMM can attach to it by
// name later (QEMU: -netdev tap,ifname=tap0,script=no,downscript=no);
// single-queue, because a VMM attaching with a different IFF_MULTI_QUEUE
// setting gets EINVAL. IFF_NO_PI/IFF_VNET_HDR are per attachment, so the
// VMM's own choice wins.
func createTap(name string) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening /dev/net/tun: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, os.Geteuid()); err != nil {
		return fmt.Errorf("TUNSETOWNER %s: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("TUNSETPERSIST %s: %w", name, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// addrUp gives link a single address and brings it up.
func addrUp(h *netlink.Handle, link netlink.Link, p netip.Prefix) error {
	if err := h.AddrAdd(link, &netlink.Addr{IPNet: ipNet(p)}); err != nil {
		return fmt.Errorf("adding %v to %s: %w", p, link.Attrs().Name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing up %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// deleteLink deletes the named link; a link that does not exist is fine.
func deleteLink(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("network: looking up %s: %w", name, err)
	}
	if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("network: deleting %s: %w", name, err)
	}
	return nil
}

// deleteRoute deletes a route to dst; a route that is already gone is fine
// (deleting a link takes its routes with it).
func deleteRoute(h *netlink.Handle, dst netip.Prefix) error {
	err := h.RouteDel(&netlink.Route{Dst: ipNet(dst)})
	if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("network: deleting route %v: %w", dst, err)
	}
	return nil
}

// retryDump repeats a netlink dump that the kernel reported as interrupted
// (the table changed under it, which concurrent Setups make likely).
func retryDump[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range 10 {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// hostLinks lists the session links in h's namespace whose names start
// with prefix: one instance's (hostLinkPrefix) or, with "", every
// instance's.
func hostLinks(h *netlink.Handle, prefix string) ([]string, error) {
	links, err := retryDump(h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("network: listing links: %w", err)
	}
	var names []string
	for _, l := range links {
		if n := l.Attrs().Name; isSessionLink(n) && strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	return names, nil
}

// routesIn lists IPv4 routes (main table) in h's namespace whose destination
// lies inside p.
func routesIn(h *netlink.Handle, p netip.Prefix) ([]netlink.Route, error) {
	routes, err := retryDump(func() ([]netlink.Route, error) { return h.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("network: listing routes: %w", err)
	}
	var out []netlink.Route
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		d, ok := prefixOf(r.Dst)
		if ok && d.Bits() >= p.Bits() && p.Contains(d.Addr()) {
			out = append(out, r)
		}
	}
	return out, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// flushConntrack drops conntrack entries whose original source or
// destination lies in p. A reused guest address must not inherit a previous
// guest's NAT/flow state; conntrack would otherwise keep it for up to days
// (established TCP timeout).
func flushConntrack(h *netlink.Handle, p netip.Prefix) error {
	src, dst := &netlink.ConntrackFilter{}, &netlink.ConntrackFilter{}
	if err := src.AddIPNet(netlink.ConntrackOrigSrcIP, ipNet(p)); err != nil {
		return err
	}
	if err := dst.AddIPNet(netlink.ConntrackOrigDstIP, ipNet(p)); err != nil {
		return err
	}
	_, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, src, dst)
	if err != nil {
		return fmt.Errorf("network: flushing conntrack for %v: %w", p, err)
	}
	return nil
}
