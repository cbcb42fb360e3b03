// Package network gives each "full"-network session its own network
// namespace with a TAP device for the VM's NIC, a routed /29 from an address
// pool, NAT to the outside and nftables rules that keep the guest away from
// the host, cloud metadata and other sessions. Everything is done through
// netlink, nftables netlink and /dev/net/tun from Go; nothing shells out.
//
// Topology for a session with slot N of the pool (addresses for N=0):
//
//	host namespace                         session namespace execlaw-<id>
//	  xlhN 10.201.0.1/30  <--- veth --->     veth0 10.201.0.2/30  (default via .1)
//	  route 10.201.0.4/30 via 10.201.0.2     tap0  10.201.0.5/30  (the guest's gateway)
//	  nft table inet execlaw                   |  ip_forward=1, nft table inet execlaw
//	                                         guest NIC 10.201.0.6/30 (the VMM opens tap0)
//
// Sysctls written: net.ipv4.ip_forward=1 in the host namespace (by New, and
// never reverted: other things on the host may rely on it), and in each
// session namespace ip_forward=1, rp_filter=1 and disable_ipv6=1 (guests get
// IPv4 only; without IPv6 addresses there is no link-local path from the
// guest into the namespace).
package network

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Manager owns the host-side plumbing shared by all sessions (the nftables
// table, the address pool) and creates and removes per-session attachments.
// Its methods are safe for concurrent use.
type Manager struct {
	pool   *pool
	dns    []netip.Addr
	prefix string
	log    *slog.Logger

	// opMu: Setup/Teardown/Sweep/HostDo hold it shared; Close holds it
	// exclusively, so it waits for operations in flight and none start on
	// a closed host descriptor.
	opMu   sync.RWMutex
	closed bool
	hostFd int

	mu     sync.Mutex
	liveNS map[string]*Attachment // by namespace name
	liveHL map[string]*Attachment // by host link name
}

// New prepares the host namespace: installs (or atomically replaces, after a
// crash) the nftables table inet execlaw and then sets
// net.ipv4.ip_forward=1 there — in that order, so forwarding is never on
// without the isolation rules. It does not remove leftovers of an earlier
// run; call Sweep for that before the first Setup.
func New(cfg Config) (*Manager, error) {
	if !cfg.Pool.IsValid() {
		cfg.Pool = DefaultPool
	}
	p, err := newPool(cfg.Pool)
	if err != nil {
		return nil, err
	}
	if cfg.NetNSPrefix == "" {
		cfg.NetNSPrefix = DefaultNetNSPrefix
	}
	if err := validPrefixName(cfg.NetNSPrefix); err != nil {
		return nil, err
	}
	for _, d := range cfg.DenyForward {
		if !d.IsValid() || !d.Addr().Is4() {
			return nil, fmt.Errorf("network: DenyForward %v: want IPv4 prefixes", d)
		}
	}
	dns := slices.Clone(cfg.DNS)
	if len(dns) == 0 {
		dns = defaultDNS()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hostPath := cfg.HostNSPath
	if hostPath == "" {
		hostPath = "/proc/self/ns/net"
	}
	fd, err := openNS(hostPath)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		pool: p, dns: dns, prefix: cfg.NetNSPrefix, log: log,
		hostFd: fd, liveNS: map[string]*Attachment{}, liveHL: map[string]*Attachment{},
	}
	if err := m.init(cfg); err != nil {
		unix.Close(fd)
		return nil, err
	}
	log.Info("network: manager ready", "host_ns", hostPath, "pool", p.prefix, "dns", m.dns)
	return m, nil
}

func (m *Manager) init(cfg Config) error {
	h, err := newHandleAt(m.hostFd)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := checkPoolFree(h, m.pool.prefix); err != nil {
		return err
	}
	// Guests may not talk to the host, so a resolver listening on one of
	// the host's own addresses (dnsmasq, a Docker bridge's 172.17.0.1) is
	// unreachable for them: drop it from the default, warn if configured.
	local, err := localAddrs(h)
	if err != nil {
		return err
	}
	var dns []netip.Addr
	for _, d := range m.dns {
		if !local[d] {
			dns = append(dns, d)
		} else if len(cfg.DNS) > 0 {
			m.log.Warn("network: configured DNS server is a host address, which guests cannot reach", "dns", d)
			dns = append(dns, d)
		}
	}
	if len(dns) == 0 {
		dns = slices.Clone(fallbackDNS)
	}
	m.dns = dns
	deny := slices.Clone(cfg.DenyForward)
	for i := range deny {
		deny[i] = deny[i].Masked()
	}
	if err := installHostTable(m.hostFd, m.pool.prefix, deny); err != nil {
		return err
	}
	return inNSFd(m.hostFd, func() error { return writeSysctl("net.ipv4.ip_forward", "1") })
}

func localAddrs(h *netlink.Handle) (map[netip.Addr]bool, error) {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("network: listing addresses: %w", err)
	}
	out := map[netip.Addr]bool{}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok {
			out[p.Addr()] = true
		}
	}
	return out, nil
}

// checkPoolFree refuses a pool that overlaps addresses or routes the host
// already uses (other than leftovers on our own xlh* links): our /30 routes
// would silently shadow that part of the network, and Sweep deletes routes
// inside the pool.
func checkPoolFree(h *netlink.Handle, pool netip.Prefix) error {
	links, err := retryDump(h.LinkList)
	if err != nil {
		return fmt.Errorf("network: listing links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	ours := func(idx int) bool { return strings.HasPrefix(names[idx], hostLinkPrefix) }
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("network: listing addresses: %w", err)
	}
	for _, a := range addrs {
		if pa, ok := prefixOf(a.IPNet); ok && pa.Overlaps(pool) && !ours(a.LinkIndex) {
			return fmt.Errorf("network: pool %v overlaps address %v on %s", pool, pa, names[a.LinkIndex])
		}
	}
	routes, err := routesIn(h, pool)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if !ours(r.LinkIndex) {
			return fmt.Errorf("network: pool %v overlaps route %v on %s", pool, r.Dst, names[r.LinkIndex])
		}
	}
	return nil
}

// Close tears down sessions that are still attached (without the host
// table their traffic would be neither isolated nor NATed), then deletes
// the nftables table. ip_forward is left on. Calling it again is a no-op.
func (m *Manager) Close() error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	m.mu.Lock()
	var live []*Attachment
	for _, a := range m.liveNS {
		live = append(live, a)
	}
	m.mu.Unlock()
	var errs []error
	for _, a := range live {
		errs = append(errs, m.teardown(a))
	}
	errs = append(errs, deleteTable(m.hostFd))
	unix.Close(m.hostFd)
	return errors.Join(errs...)
}

// HostDo runs fn on a thread inside the host namespace (the one in
// Config.HostNSPath). Sockets fn opens stay in that namespace. Meant for
// tests and probes.
func (m *Manager) HostDo(fn func() error) error {
	m.opMu.RLock()
	if m.closed {
		m.opMu.RUnlock()
		return errors.New("network: manager closed")
	}
	// A private copy, so fn runs without holding opMu (fn may call back
	// into the manager, and Close should not wait for a probe).
	fd, err := unix.FcntlInt(uintptr(m.hostFd), unix.F_DUPFD_CLOEXEC, 0)
	m.opMu.RUnlock()
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	defer unix.Close(fd)
	return inNSFd(fd, fn)
}
