package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Sweep removes what an earlier run left behind: every namespace named
// <NetNSPrefix>*, every xlh* link in the host namespace and every route into
// the pool there, plus the pool's conntrack entries. Attachments of this
// manager that are still live are left alone, so calling it at any time is
// safe; it is meant for server start, before the first Setup.
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
	links, err := hostLinks(hh)
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
	routes, err := routesIn(hh, m.pool.prefix)
	if err != nil {
		return err
	}
	for _, r := range routes {
		d, _ := prefixOf(r.Dst)
		if isLive("", "", d) {
			continue
		}
		m.log.Info("network: sweeping route", "dst", d)
		if err := hh.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("network: deleting route %v: %w", d, err))
		}
	}
	names, err := listNamedNS(m.prefix)
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
