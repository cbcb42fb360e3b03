// Package network gives each "full"-network session its own network
// namespace with a TAP device for the VM's NIC, a routed /29 from an address
// pool, NAT to the outside and nftables rules that keep the guest away from
// the host, its LAN, cloud metadata and other sessions. Everything is done
// through netlink, nftables netlink and /dev/net/tun from Go; nothing shells
// out.
//
// Every host resource is named for the server instance (Config.Instance, a
// hash of the data directory, e.g. 3fa2c1) so that several servers share a
// host, and each sweeps only its own:
//
//	session namespace   /run/netns/execlaw-3fa2c1-<session id>
//	host veth           xl3fa2c1-<slot>        (IFNAMSIZ: at most 12 characters)
//	nftables table      inet execlaw-3fa2c1    (host namespace)
//	address block       a /20 of the pool, claimed by @execlaw-net/claim/3fa2c1/<block> (claim.go)
//	routes, conntrack   inside that block only
//
// Topology for a session with slot N of the block (addresses for N=0 of
// 10.201.0.0/20):
//
//	host namespace                         session namespace execlaw-<instance>-<id>
//	  xl<inst>-N 10.201.0.1/30 <-- veth -->  veth0 10.201.0.2/30  (default via .1)
//	  route 10.201.0.4/30 via 10.201.0.2     tap0  10.201.0.5/30  (the guest's gateway)
//	  nft table inet execlaw-<instance>        |  ip_forward=1, nft table inet execlaw
//	                                         guest NIC 10.201.0.6/30 (the VMM opens tap0)
//
// Sysctls written: net.ipv4.ip_forward=1 in the host namespace (by New, and
// never reverted: other things on the host may rely on it), disable_ipv6=1
// on each host veth, and in each session namespace ip_forward=1,
// rp_filter=1 and disable_ipv6=1. Guests get IPv4 only and there is no IPv6
// path: the session namespace has no IPv6 addresses, its table drops every
// non-IPv4 packet from the TAP before routing, and the host table drops
// non-IPv4 forwarded from session links.
package network

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Manager owns the host-side plumbing shared by all sessions of one server
// instance (its nftables table, its block of the address pool) and creates
// and removes per-session attachments. Its methods are safe for concurrent
// use.
type Manager struct {
	pool     *pool        // the claimed block
	fullPool netip.Prefix // Config.Pool, denied to guests as a whole
	instance string
	linkPfx  string // host links: xl<instance>-
	table    string // host table: execlaw-<instance>
	nsPfx    string // session namespaces: <NetNSPrefix><instance>-
	dns      []netip.Addr
	policy   guestPolicy
	claim    *claim
	log      *slog.Logger

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

// New claims a block of the pool for this instance and prepares the host
// namespace: installs (or atomically replaces, after a crash) the nftables
// table inet execlaw-<instance> and then sets net.ipv4.ip_forward=1 there
// — in that order, so forwarding is never on without the isolation rules.
// It fails when the same instance is already running on this host. It does
// not remove leftovers of an earlier run; call Sweep for that before the
// first Setup.
func New(cfg Config) (*Manager, error) {
	cfg, err := normalize(cfg)
	if err != nil {
		return nil, err
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
		fullPool: cfg.Pool, instance: cfg.Instance, linkPfx: hostLinkPrefix(cfg.Instance),
		table: hostTableName(cfg.Instance), nsPfx: nsPrefix(cfg.NetNSPrefix, cfg.Instance), log: log,
		hostFd: fd, liveNS: map[string]*Attachment{}, liveHL: map[string]*Attachment{},
	}
	if err := m.init(cfg); err != nil {
		m.claim.release()
		unix.Close(fd)
		return nil, err
	}
	log.Info("network: manager ready", "host_ns", hostPath, "instance", m.instance,
		"pool", cfg.Pool, "block", m.pool.prefix, "table", "inet "+m.table, "policy", m.policy.String())
	return m, nil
}

func (m *Manager) init(cfg Config) error {
	h, err := newHandleAt(m.hostFd)
	if err != nil {
		return err
	}
	defer h.Close()
	if m.claim, err = claimBlock(m.hostFd, h, cfg.Pool, cfg.Instance, cfg.Owner); err != nil {
		return err
	}
	if m.pool, err = newPool(m.claim.info.Block); err != nil {
		return err
	}
	dns := slices.Clone(cfg.DNS)
	if len(dns) == 0 {
		dns = defaultDNS()
	}
	if m.dns, err = reachableDNS(h, dns, len(cfg.DNS) > 0, m.log); err != nil {
		return err
	}
	if m.policy, err = newGuestPolicy(cfg.Pool, cfg.AllowForward, cfg.DenyForward, m.dns); err != nil {
		return err
	}
	for _, d := range m.dns {
		if m.policy.alwaysDenied(d) {
			m.log.Warn("network: DNS server lies in a range guests can never reach", "dns", d)
		}
	}
	if err := installHostTable(m.hostFd, m.table, m.linkPfx, m.pool.prefix, m.policy); err != nil {
		return err
	}
	return inNSFd(m.hostFd, func() error { return writeSysctl("net.ipv4.ip_forward", "1") })
}

// reachableDNS drops resolvers guests cannot reach from dns. Guests may not
// talk to the host, so a resolver listening on one of the host's own
// addresses (dnsmasq, a Docker bridge's 172.17.0.1) is unreachable for
// them: dropped from the default, kept with a warning when configured.
func reachableDNS(h *netlink.Handle, dns []netip.Addr, configured bool, log *slog.Logger) ([]netip.Addr, error) {
	local, err := localAddrs(h)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, d := range dns {
		if !local[d] {
			out = append(out, d)
		} else if configured {
			if log != nil {
				log.Warn("network: configured DNS server is a host address, which guests cannot reach", "dns", d)
			}
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		out = slices.Clone(fallbackDNS)
	}
	return out, nil
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

// Instance is the instance id that names this manager's host resources.
func (m *Manager) Instance() string { return m.instance }

// Block is the block of the pool this manager claimed.
func (m *Manager) Block() netip.Prefix { return m.pool.prefix }

// Policy describes in one line what guests may and may not reach.
func (m *Manager) Policy() string { return m.policy.String() }

// TableName is the nftables table (family inet) this manager owns in the
// host namespace.
func (m *Manager) TableName() string { return m.table }

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
	errs = append(errs, deleteTable(m.hostFd, m.table))
	unix.Close(m.hostFd)
	m.claim.release()
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
