// Package egress is the outbound policy for what the server fetches on a
// user's behalf: model lists, model calls, the credential proxy's upstream
// requests, exe.dev's API and its e-mail gateway. A user picks a base URL, so
// without a policy the server would reach whatever that URL names from the
// host, where no VM firewall applies: loopback services, the private network,
// the cloud metadata address.
//
// The check runs on the resolved address at dial time (net.Dialer's
// ControlContext, after the socket is made and before connect), so a name
// that resolves to a refused address, or that changes its answer between a
// check and the connection, does not get through, and nothing is sent to a
// refused address. Clients built here use no proxy from the environment (a
// proxy would be dialled instead of the target, and the target never
// checked) and follow no redirects.
package egress

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Class is what kind of address an IP is, as the policy sees it.
type Class int

// Address classes, from the most to the least reachable.
const (
	// Public is every address not listed below.
	Public Class = iota
	// Loopback is 127.0.0.0/8 and ::1: services on this host.
	Loopback
	// Private is RFC 1918, CGNAT (100.64.0.0/10), ULA (fc00::/7) and the
	// like: the host's own networks.
	Private
	// Never is refused unless an explicit entry allows it: link-local
	// (169.254.0.0/16 with the cloud metadata address, fe80::/10), the
	// IPv6 metadata address fd00:ec2::254, unspecified, multicast,
	// broadcast, 0.0.0.0/8 and other reserved ranges.
	Never
)

func (c Class) String() string {
	switch c {
	case Public:
		return "public"
	case Loopback:
		return "loopback"
	case Private:
		return "private"
	}
	return "never"
}

type rangeClass struct {
	prefix netip.Prefix
	class  Class
	what   string
}

func mustRanges(rows ...rangeClass) []rangeClass { return rows }

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// v4Ranges classify IPv4 addresses; the first match wins, so the narrow
// exceptions come before the ranges that hold them.
var v4Ranges = mustRanges(
	rangeClass{pfx("0.0.0.0/8"), Never, `"this network" (0.0.0.0/8, unspecified)`},
	rangeClass{pfx("127.0.0.0/8"), Loopback, "loopback"},
	rangeClass{pfx("169.254.0.0/16"), Never, "link-local (the cloud metadata address 169.254.169.254 is one)"},
	rangeClass{pfx("100.100.100.200/32"), Never, "a cloud metadata address (Alibaba Cloud)"},
	rangeClass{pfx("168.63.129.16/32"), Never, "a cloud platform address (Azure's host endpoint)"},
	rangeClass{pfx("10.0.0.0/8"), Private, "private (RFC 1918)"},
	rangeClass{pfx("172.16.0.0/12"), Private, "private (RFC 1918)"},
	rangeClass{pfx("192.168.0.0/16"), Private, "private (RFC 1918)"},
	rangeClass{pfx("100.64.0.0/10"), Private, "private (carrier-grade NAT, 100.64.0.0/10)"},
	rangeClass{pfx("198.18.0.0/15"), Private, "private (benchmarking, 198.18.0.0/15)"},
	rangeClass{pfx("192.0.0.0/24"), Never, "reserved (IETF protocol assignments)"},
	rangeClass{pfx("192.0.2.0/24"), Never, "reserved (documentation)"},
	rangeClass{pfx("198.51.100.0/24"), Never, "reserved (documentation)"},
	rangeClass{pfx("203.0.113.0/24"), Never, "reserved (documentation)"},
	rangeClass{pfx("224.0.0.0/4"), Never, "multicast"},
	rangeClass{pfx("255.255.255.255/32"), Never, "broadcast"},
	rangeClass{pfx("240.0.0.0/4"), Never, "reserved (240.0.0.0/4)"},
)

// v6Ranges classify IPv6 addresses that carry no IPv4 address.
var v6Ranges = mustRanges(
	rangeClass{pfx("::/128"), Never, "unspecified"},
	rangeClass{pfx("::1/128"), Loopback, "loopback"},
	rangeClass{pfx("64:ff9b:1::/48"), Private, "private (local-use NAT64, 64:ff9b:1::/48)"},
	rangeClass{pfx("::/8"), Never, "reserved (::/8, with the deprecated IPv4-compatible addresses)"},
	rangeClass{pfx("100::/64"), Never, "reserved (discard-only, 100::/64)"},
	rangeClass{pfx("2001::/32"), Never, "reserved (Teredo tunnelling)"},
	rangeClass{pfx("2001:db8::/32"), Never, "reserved (documentation)"},
	rangeClass{pfx("fd00:ec2::254/128"), Never, "a cloud metadata address (AWS, fd00:ec2::254)"},
	rangeClass{pfx("fc00::/7"), Private, "private (unique local, fc00::/7)"},
	rangeClass{pfx("fe80::/10"), Never, "link-local (fe80::/10)"},
	rangeClass{pfx("fec0::/10"), Private, "private (site-local, fec0::/10)"},
	rangeClass{pfx("ff00::/8"), Never, "multicast"},
)

// IPv6 ranges that carry an IPv4 address (IPv4-mapped ::ffff:0:0/96 is
// recognised by netip.Addr.Is4In6).
var (
	nat64   = pfx("64:ff9b::/96")    // RFC 6052: the IPv4 address in the last 32 bits
	siit    = pfx("::ffff:0:0:0/96") // RFC 2765 IPv4-translated: the last 32 bits
	sixToFo = pfx("2002::/16")       // RFC 3056 6to4: bits 16 to 48
)

// Classify says what kind of address ip is, and in words why. IPv4 addresses
// written as IPv6 (mapped, IPv4-translated, NAT64 64:ff9b::/96, 6to4) are
// classified by the IPv4 address they carry: ::ffff:169.254.169.254 is as
// link-local as 169.254.169.254.
func Classify(ip netip.Addr) (Class, string) {
	ip = ip.WithZone("")
	if v4, how, ok := embeddedV4(ip); ok {
		c, what := classify4(v4)
		if how != "" {
			what += " (" + v4.String() + " " + how + ")"
		}
		return c, what
	}
	if !ip.IsValid() {
		return Never, "not an IP address"
	}
	for _, r := range v6Ranges {
		if r.prefix.Contains(ip) {
			return r.class, r.what
		}
	}
	return Public, "public"
}

func classify4(ip netip.Addr) (Class, string) {
	for _, r := range v4Ranges {
		if r.prefix.Contains(ip) {
			return r.class, r.what
		}
	}
	return Public, "public"
}

// embeddedV4 is the IPv4 address ip is or carries, and how it carries it.
func embeddedV4(ip netip.Addr) (netip.Addr, string, bool) {
	switch {
	case ip.Is4():
		return ip, "", true
	case ip.Is4In6():
		return ip.Unmap(), "as an IPv4-mapped IPv6 address", true
	}
	b := ip.As16()
	switch {
	case nat64.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), "through NAT64", true
	case siit.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), "as an IPv4-translated address", true
	case sixToFo.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), "through 6to4", true
	}
	return netip.Addr{}, "", false
}

// Policy says which addresses may be connected to. It is immutable; the
// zero value and nil refuse everything.
type Policy struct {
	public, loopback, private bool
	prefixes                  []portPrefix // explicit addresses and ranges
	names                     []hostPort   // explicit host names
	spec                      string       // as written, for messages
}

type portPrefix struct {
	prefix netip.Prefix
	port   uint16 // 0: every port
}

type hostPort struct {
	host string // lower case, no trailing dot
	port uint16 // 0: every port
}

// Levels as they are written in a policy.
const (
	LevelPublic   = "public"
	LevelLoopback = "loopback"
	LevelPrivate  = "private"
)

// PublicOnly allows public addresses only.
func PublicOnly() *Policy { return &Policy{public: true, spec: LevelPublic} }

// PublicAndLoopback allows public addresses and this host's loopback
// services (a local Ollama or llama.cpp server).
func PublicAndLoopback() *Policy {
	return &Policy{public: true, loopback: true, spec: LevelLoopback}
}

// PublicAndPrivate allows public, loopback and private addresses: everything
// but what is always refused.
func PublicAndPrivate() *Policy {
	return &Policy{public: true, loopback: true, private: true, spec: LevelPrivate}
}

// Only allows exactly the given entries (addresses, ranges, host:port) and
// nothing else, whatever their class: for an endpoint the operator
// configured, such as exe.dev's e-mail gateway at 169.254.169.254.
func Only(entries ...string) (*Policy, error) {
	p := &Policy{}
	for _, e := range entries {
		if err := p.addEntry(e); err != nil {
			return nil, err
		}
	}
	p.spec = "only " + strings.Join(entries, ", ")
	return p, nil
}

// With returns a copy of p that also allows the given entries.
func (p *Policy) With(entries ...string) (*Policy, error) {
	q := &Policy{}
	if p != nil {
		*q = *p
		q.prefixes = append([]portPrefix(nil), p.prefixes...)
		q.names = append([]hostPort(nil), p.names...)
	}
	for _, e := range entries {
		if err := q.addEntry(e); err != nil {
			return nil, err
		}
	}
	q.spec = strings.Join(append([]string{p.String()}, entries...), ",")
	return q, nil
}

// Parse reads a policy as the operator writes it (--model-hosts): a
// comma-separated list of at most one level and any number of entries.
//
//   - public: public addresses only;
//   - loopback: public addresses and loopback;
//   - private: public, loopback and private addresses;
//   - an entry allows more, whatever its class, even what is otherwise
//     never allowed: an address (10.0.0.5), a range (10.1.0.0/16), an
//     address with a port (10.0.0.5:11434, [fd00::5]:8080), a host name
//     (ollama.lan: every port; one without a dot needs a port, so that a
//     misspelt level is not taken for a host) or a host name with a port
//     (ollama.lan:11434, gpu-box:8000); a name is allowed whatever it
//     resolves to.
//
// Entries without a level add to public.
func Parse(spec string) (*Policy, error) {
	p := &Policy{}
	level := ""
	seen := false
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		seen = true
		switch strings.ToLower(item) {
		case LevelPublic, LevelLoopback, LevelPrivate:
			if level != "" && level != strings.ToLower(item) {
				return nil, fmt.Errorf("%q: give one of public, loopback or private, not both %s and %s", spec, level, item)
			}
			level = strings.ToLower(item)
			continue
		}
		if err := p.addEntry(item); err != nil {
			return nil, err
		}
	}
	if !seen {
		return nil, errors.New("empty policy: give public, loopback or private, and/or addresses to allow")
	}
	p.public = true
	switch level {
	case LevelPrivate:
		p.private = true
		p.loopback = true
	case LevelLoopback:
		p.loopback = true
	}
	var parts []string
	if level != "" {
		parts = append(parts, level)
	}
	for _, item := range strings.Split(spec, ",") {
		if item = strings.TrimSpace(item); item != "" && !strings.EqualFold(item, level) {
			parts = append(parts, item)
		}
	}
	p.spec = strings.Join(parts, ",")
	return p, nil
}

// addEntry adds one explicit address, range, name, or any of them with a port.
func (p *Policy) addEntry(e string) error {
	e = strings.TrimSpace(e)
	bad := func(why string) error {
		return fmt.Errorf("%q is not an address, range, host name or host:port to allow: %s", e, why)
	}
	if e == "" {
		return bad("empty")
	}
	if strings.Contains(e, "/") {
		pr, err := netip.ParsePrefix(e)
		if err != nil {
			return bad(err.Error())
		}
		p.prefixes = append(p.prefixes, portPrefix{prefix: normPrefix(pr.Masked())})
		return nil
	}
	if ip, err := netip.ParseAddr(e); err == nil {
		ip = ip.WithZone("").Unmap()
		p.prefixes = append(p.prefixes, portPrefix{prefix: netip.PrefixFrom(ip, ip.BitLen())})
		return nil
	}
	host, port := e, uint16(0)
	if h, ps, err := net.SplitHostPort(e); err == nil {
		n, err := strconv.ParseUint(ps, 10, 16)
		if err != nil || n == 0 {
			return bad("the port must be 1 to 65535")
		}
		host, port = h, uint16(n)
	} else if strings.Count(e, ":") == 1 {
		return bad(err.Error())
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.WithZone("").Unmap()
		p.prefixes = append(p.prefixes, portPrefix{netip.PrefixFrom(ip, ip.BitLen()), port})
		return nil
	}
	name := normName(host)
	if !validName(name) {
		return bad("not a host name")
	}
	if port == 0 && !strings.Contains(name, ".") {
		// So that a misspelt level ("privat") is not taken for a host.
		return bad("a host name without a dot needs a port (" + name + ":11434)")
	}
	p.names = append(p.names, hostPort{name, port})
	return nil
}

// normPrefix writes an IPv4-mapped range as the IPv4 range it holds.
func normPrefix(pr netip.Prefix) netip.Prefix {
	if a := pr.Addr(); a.Is4In6() && pr.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), pr.Bits()-96)
	}
	return pr
}

func normName(h string) string { return strings.TrimSuffix(strings.ToLower(h), ".") }

func validName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// String is the policy as written (canonical order: the level first).
func (p *Policy) String() string {
	if p == nil {
		return "nothing"
	}
	if p.spec == "" {
		return "nothing"
	}
	return p.spec
}

// AllowsLoopback reports whether loopback addresses are allowed as a class.
func (p *Policy) AllowsLoopback() bool { return p != nil && p.loopback }

// RefusedError is a connection the policy refused. It is returned from the
// dialer's Control function, before connect: nothing was sent.
type RefusedError struct {
	Addr   netip.AddrPort
	Host   string // the name that was dialled, when it was one
	Class  Class
	What   string // the kind of address, in words
	Policy string // the policy that refused it
}

func (e *RefusedError) Error() string {
	target := e.Addr.String()
	if e.Host != "" && e.Host != e.Addr.Addr().String() {
		target = e.Host + " (" + e.Addr.String() + ")"
	}
	if e.Class == Never {
		return fmt.Sprintf("outbound policy: connection to %s refused: %s addresses are never connected to", target, e.What)
	}
	return fmt.Sprintf("outbound policy: connection to %s refused: %s addresses are not allowed by this server's policy (%s)", target, e.What, e.Policy)
}

// Check decides whether a connection to addr may be made; host is the name
// that was asked for ("" if none), which a host-name entry may allow. It
// returns nil or a *RefusedError.
func (p *Policy) Check(host string, addr netip.AddrPort) error {
	ip := addr.Addr().WithZone("")
	class, what := Classify(ip)
	if p != nil {
		ip4 := ip.Unmap()
		for _, e := range p.prefixes {
			if e.prefix.Contains(ip4) && (e.port == 0 || e.port == addr.Port()) {
				return nil
			}
		}
		if host != "" {
			h := normName(host)
			for _, e := range p.names {
				if e.host == h && (e.port == 0 || e.port == addr.Port()) {
					return nil
				}
			}
		}
		switch class {
		case Public:
			if p.public {
				return nil
			}
		case Loopback:
			if p.loopback {
				return nil
			}
		case Private:
			if p.private {
				return nil
			}
		}
	}
	return &RefusedError{Addr: addr, Host: host, Class: class, What: what, Policy: p.String()}
}
