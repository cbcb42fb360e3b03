package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Attachment is one session's network: what the VMM needs to attach to it
// and what the guest must be told (address, gateway, DNS, MAC).
type Attachment struct {
	SessionID string
	NetNS     string // namespace name, e.g. "execlaw-3fa2c1-s_0123..."
	NSPath    string // its bind mount, /run/netns/<NetNS>
	TapName   string // "tap0", inside the namespace
	HostLink  string // host side of the veth pair, e.g. "xl3fa2c1-0"
	GuestIP   netip.Prefix
	Gateway   netip.Addr
	DNS       []netip.Addr
	MAC       string // guest NIC MAC: locally administered, derived from SessionID

	m         *Manager
	slot      int
	block     netip.Prefix // the whole /29
	guestNet  netip.Prefix // the guest /30, routed via the session veth
	mu        sync.Mutex
	nsCreated bool
	released  bool
}

// Setup creates the session's namespace, veth pair, TAP, addresses, routes
// and session firewall. It is safe to call concurrently for different
// sessions. On error everything it created is removed again and the address
// block is returned to the pool.
func (m *Manager) Setup(ctx context.Context, sessionID string) (_ *Attachment, err error) {
	if sessionID == "" {
		return nil, errors.New("network: empty session id")
	}
	m.opMu.RLock()
	defer m.opMu.RUnlock()
	if m.closed {
		return nil, errors.New("network: manager closed")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	name := m.nsPfx + shortID(sessionID)
	slot, err := m.pool.alloc()
	if err != nil {
		return nil, err
	}
	ad := m.pool.addrs(slot)
	a := &Attachment{
		SessionID: sessionID,
		NetNS:     name,
		NSPath:    filepath.Join(netnsDir, name),
		TapName:   TapName,
		HostLink:  hostLinkName(m.instance, slot),
		GuestIP:   ad.Guest,
		Gateway:   ad.Gateway.Addr(),
		DNS:       slices.Clone(m.dns),
		MAC:       macFor(sessionID),
		m:         m,
		slot:      slot,
		block:     netip.PrefixFrom(ad.HostVeth.Addr(), slotBits).Masked(),
		guestNet:  ad.GuestNet,
	}
	// Registered before anything exists, so a concurrent Sweep never
	// removes a half-built session.
	m.mu.Lock()
	if _, dup := m.liveNS[name]; dup {
		m.mu.Unlock()
		m.pool.free(slot)
		return nil, fmt.Errorf("network: session %s already has a network (%s)", sessionID, name)
	}
	m.liveNS[name], m.liveHL[a.HostLink] = a, a
	m.mu.Unlock()

	defer func() {
		if err != nil {
			if terr := m.teardown(a); terr != nil {
				// Leftovers are still named for this instance, so
				// Sweep will get them; the block stays reserved
				// meanwhile.
				m.log.Warn("network: rollback after failed setup", "session", sessionID, "err", terr)
			}
			err = fmt.Errorf("network: setting up session %s: %w", sessionID, err)
		}
	}()
	if err := m.build(ctx, a, ad); err != nil {
		return nil, err
	}
	m.log.Info("network: session attached", "session", sessionID, "netns", name,
		"host_link", a.HostLink, "guest", a.GuestIP, "gateway", a.Gateway)
	return a, nil
}

func (m *Manager) build(ctx context.Context, a *Attachment, ad slotAddrs) error {
	if _, err := createNamedNS(a.NetNS); err != nil {
		if errors.Is(err, unix.EEXIST) {
			err = fmt.Errorf("%w (left by an earlier run? Sweep removes it)", err)
		}
		return err
	}
	a.nsCreated = true
	nsFd, err := openNS(a.NSPath)
	if err != nil {
		return err
	}
	defer unix.Close(nsFd)

	// Sysctls first: disable_ipv6 via "default" must be in place before
	// the veth peer and the TAP appear, so they never get an IPv6 address.
	err = inNSFd(nsFd, func() error {
		for _, kv := range [][2]string{
			{"net.ipv6.conf.all.disable_ipv6", "1"},
			{"net.ipv6.conf.default.disable_ipv6", "1"},
		} {
			if err := writeSysctl(kv[0], kv[1]); err != nil && !errors.Is(err, unix.ENOENT) {
				return err // ENOENT: kernel without IPv6, nothing to disable
			}
		}
		// New namespaces inherit IPv4 conf values from the initial
		// namespace, so set rp_filter explicitly rather than depend on
		// the host: strict reverse-path filtering is a second
		// anti-spoofing layer under the nftables rule.
		for _, kv := range [][2]string{
			{"net.ipv4.ip_forward", "1"},
			{"net.ipv4.conf.all.rp_filter", "1"},
			{"net.ipv4.conf.default.rp_filter", "1"},
		} {
			if err := writeSysctl(kv[0], kv[1]); err != nil {
				return err
			}
		}
		return createTap(TapName)
	})
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	hh, err := newHandleAt(m.hostFd)
	if err != nil {
		return err
	}
	defer hh.Close()
	sh, err := newHandleAt(nsFd)
	if err != nil {
		return err
	}
	defer sh.Close()

	// Creating the peer directly in the session namespace avoids a moment
	// where two sessions' peers would need distinct names in the host ns.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a.HostLink}, PeerName: nsLinkName, PeerNamespace: netlink.NsFd(nsFd)}
	if err := hh.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s: %w", a.HostLink, err)
	}
	hostL, err := hh.LinkByName(a.HostLink)
	if err != nil {
		return err
	}
	// No IPv6 (not even link-local) on the host side either: nothing
	// IPv6 is forwarded for sessions, so the link needs none.
	err = inNSFd(m.hostFd, func() error {
		err := writeSysctl("net.ipv6.conf."+a.HostLink+".disable_ipv6", "1")
		if errors.Is(err, unix.ENOENT) {
			return nil // kernel or host without IPv6
		}
		return err
	})
	if err != nil {
		return err
	}
	if err := addrUp(hh, hostL, ad.HostVeth); err != nil {
		return err
	}

	lo, err := sh.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := sh.LinkSetUp(lo); err != nil {
		return err
	}
	nsL, err := sh.LinkByName(nsLinkName)
	if err != nil {
		return err
	}
	if err := addrUp(sh, nsL, ad.NSVeth); err != nil {
		return err
	}
	tap, err := sh.LinkByName(TapName)
	if err != nil {
		return err
	}
	if err := addrUp(sh, tap, ad.Gateway); err != nil {
		return err
	}
	if err := sh.RouteAdd(&netlink.Route{LinkIndex: nsL.Attrs().Index, Gw: ad.HostVeth.Addr().AsSlice()}); err != nil {
		return fmt.Errorf("session default route: %w", err)
	}
	if err := hh.RouteAdd(&netlink.Route{LinkIndex: hostL.Attrs().Index, Dst: ipNet(ad.GuestNet), Gw: ad.NSVeth.Addr().AsSlice()}); err != nil {
		return fmt.Errorf("host route to %v: %w", ad.GuestNet, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return installSessionTable(nsFd, ad.Guest.Addr())
}

// Teardown removes the session's network: host route, veth pair, TAP,
// namespace, conntrack state, and returns the address block to the pool. It
// is idempotent and does not need the VMM's cooperation: after a VMM crash
// everything is still found by name. It keeps going when ctx is done —
// stopping half-way would only leak — so ctx is accepted for symmetry.
//
// If a process (a VMM that was not killed) still runs inside the namespace,
// the kernel keeps the namespace alive until it exits, but it is empty and
// unreachable by then: the veth and TAP are deleted explicitly.
func (m *Manager) Teardown(ctx context.Context, a *Attachment) error {
	if a == nil {
		return nil
	}
	if a.m != m {
		return errors.New("network: attachment belongs to another manager")
	}
	m.opMu.RLock()
	defer m.opMu.RUnlock()
	a.mu.Lock()
	released := a.released
	a.mu.Unlock()
	if released {
		return nil
	}
	if m.closed {
		return errors.New("network: manager closed")
	}
	if err := m.teardown(a); err != nil {
		return err
	}
	m.log.Info("network: session detached", "session", a.SessionID, "netns", a.NetNS)
	return nil
}

// teardown does Teardown's work; callers hold opMu (either way).
func (m *Manager) teardown(a *Attachment) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.released {
		return nil
	}
	hh, err := newHandleAt(m.hostFd)
	if err != nil {
		return err
	}
	defer hh.Close()
	var errs []error
	errs = append(errs, deleteRoute(hh, a.guestNet), deleteLink(hh, a.HostLink))
	if a.nsCreated {
		// Empty the namespace before unpinning it; see Teardown.
		if fd, err := openNS(a.NSPath); err == nil {
			if sh, err := newHandleAt(fd); err == nil {
				errs = append(errs, deleteLink(sh, TapName), deleteLink(sh, nsLinkName))
				sh.Close()
			}
			unix.Close(fd)
		}
		errs = append(errs, removeNamedNS(a.NSPath))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("network: tearing down session %s: %w", a.SessionID, err)
	}
	// After the links are gone, so no new flows can appear.
	if err := flushConntrack(hh, a.block); err != nil {
		m.log.Warn("network: conntrack flush", "session", a.SessionID, "err", err)
	}
	a.released = true
	m.mu.Lock()
	delete(m.liveNS, a.NetNS)
	delete(m.liveHL, a.HostLink)
	m.mu.Unlock()
	m.pool.free(a.slot)
	return nil
}

// Start starts cmd inside the session's namespace, so the VMM can open the
// TAP by name. The calling OS thread is locked, moved into the namespace,
// cmd.Start() runs (the child inherits the namespace), the thread is moved
// back and only then unlocked. The work happens on a dedicated goroutine
// whose thread stays alive afterwards, so a child started with
// SysProcAttr.Pdeathsig is not killed by its creating thread exiting; see
// onNSThread for the case where moving back fails.
func (a *Attachment) Start(cmd *exec.Cmd) error {
	return a.Do(cmd.Start)
}

// Do runs fn on a thread inside the session's namespace, the same way as
// Start. Sockets fn opens stay in that namespace after it returns; goroutines
// fn starts do not run in it.
func (a *Attachment) Do(fn func() error) error {
	return inNS(a.NSPath, fn)
}
