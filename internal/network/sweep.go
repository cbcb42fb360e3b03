package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Sweep removes what an earlier run of this instance left behind: its
// namespaces (<NetNSPrefix><instance>-*), its host links (xl<instance>-*),
// routes into its block on its own links, and the block's conntrack
// entries. Other instances' resources are never touched, live or not: each
// sweeps its own when it starts. Attachments of this manager that are still
// live are left alone, so calling it at any time is safe; it is meant for
// server start, before the first Setup.
func (m *Manager) Sweep(ctx context.Context) error {
	m.opMu.RLock()
	defer m.opMu.RUnlock()
	if m.closed {
		return errors.New("network: manager closed")
	}
	hh, err := newHandleAt(m.hostFd)
	if err != nil {
		return err
	}
	defer hh.Close()
	// Liveness is checked per item, after listing: Setup registers a
	// session before creating anything, so whatever a concurrent Setup
	// created and we listed is already known to be live.
	isLive := func(ns, link string, dst netip.Prefix) bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.liveNS[ns] != nil || m.liveHL[link] != nil {
			return true
		}
		for _, a := range m.liveNS {
			if dst.IsValid() && a.block.Overlaps(dst) {
				return true
			}
		}
		return false
	}
	var errs []error
	links, err := hostLinks(hh, m.linkPfx)
	if err != nil {
		return err
	}
	for _, l := range links {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !isLive("", l, netip.Prefix{}) {
			m.log.Info("network: sweeping link", "link", l)
			errs = append(errs, deleteLink(hh, l))
		}
	}
	// Routes normally go with their links; this catches one left on a
	// link of ours that is still being set up or torn down elsewhere.
	routes, err := routesIn(hh, m.pool.prefix)
	if err != nil {
		return err
	}
	ourLinks, err := hostLinks(hh, m.linkPfx)
	if err != nil {
		return err
	}
	ourIdx := map[int]bool{}
	for _, n := range ourLinks {
		if l, err := hh.LinkByName(n); err == nil {
			ourIdx[l.Attrs().Index] = true
		}
	}
	for _, r := range routes {
		d, _ := prefixOf(r.Dst)
		if !ourIdx[r.LinkIndex] || isLive("", "", d) {
			continue
		}
		m.log.Info("network: sweeping route", "dst", d)
		if err := hh.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("network: deleting route %v: %w", d, err))
		}
	}
	names, err := listNamedNS(m.nsPfx)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !isLive(n, "", netip.Prefix{}) {
			m.log.Info("network: sweeping namespace", "netns", n)
			errs = append(errs, removeNamedNS(filepath.Join(netnsDir, n)))
		}
	}
	m.mu.Lock()
	idle := len(m.liveNS) == 0
	m.mu.Unlock()
	if idle {
		if err := flushConntrack(hh, m.pool.prefix); err != nil {
			m.log.Warn("network: conntrack flush", "err", err)
		}
	}
	return errors.Join(errs...)
}
