package network

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// AlwaysDenied are destinations guests never reach, whatever
// Config.AllowForward says: "this network", loopback, link-local (cloud
// metadata: 169.254.169.254 hands out credentials), multicast, and the
// reserved 240/4 with the limited broadcast address. The host's own
// addresses, other sessions (of any instance) and the whole pool are denied
// the same way, by other rules.
var AlwaysDenied = mustPrefixes("0.0.0.0/8", "127.0.0.0/8", metadataNet.String(), "224.0.0.0/4", "240.0.0.0/4")

// DefaultDenyForward are the destinations guests may not reach unless
// Config.AllowForward carves a range out: the networks the host itself
// usually sits in (RFC 1918 private ranges, the LAN, a VPC), carrier-grade
// NAT (100.64/10, also Tailscale's range), IETF protocol assignments
// (192.0.0.0/24) and the benchmarking range 198.18/15 (used by local
// proxies for fake-IP DNS). Guests reach the internet, not the host's
// neighbours.
var DefaultDenyForward = mustPrefixes("10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15")

// ParsePrefixes parses a comma-separated list of IPv4 CIDR ranges (a bare
// address means a /32), as --guest-allow and --guest-deny take them. Empty
// input gives none.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var p netip.Prefix
		var err error
		if strings.Contains(f, "/") {
			p, err = netip.ParsePrefix(f)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(f); err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%q is not an IPv4 range (CIDR): %v", f, err)
		}
		if !p.Addr().Is4() {
			return nil, fmt.Errorf("%q: only IPv4 ranges (guests have IPv4 only)", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// guestPolicy is what a guest may reach through the host namespace, in the
// order the forward chain checks it.
type guestPolicy struct {
	always []netip.Prefix // AlwaysDenied plus the whole pool
	dns    []netip.Addr   // port 53 (UDP, TCP) allowed, even when denied below
	allow  []netip.Prefix // carved out of deny
	deny   []netip.Prefix // DefaultDenyForward plus Config.DenyForward
}

func newGuestPolicy(pool netip.Prefix, allow, deny []netip.Prefix, dns []netip.Addr) (guestPolicy, error) {
	p := guestPolicy{
		always: append(slices.Clone(AlwaysDenied), pool),
		deny:   slices.Clone(DefaultDenyForward),
	}
	for _, d := range deny {
		if !d.IsValid() || !d.Addr().Is4() {
			return p, fmt.Errorf("network: DenyForward %v: want IPv4 prefixes", d)
		}
		if !slices.Contains(p.deny, d.Masked()) {
			p.deny = append(p.deny, d.Masked())
		}
	}
	for _, a := range allow {
		if !a.IsValid() || !a.Addr().Is4() {
			return p, fmt.Errorf("network: AllowForward %v: want IPv4 prefixes", a)
		}
		a = a.Masked()
		for _, al := range p.always {
			if al.Bits() <= a.Bits() && al.Contains(a.Addr()) {
				return p, fmt.Errorf("network: AllowForward %v lies in %v, which guests can never reach (link-local/metadata, loopback, multicast, reserved, or the session pool)", a, al)
			}
		}
		if !slices.Contains(p.allow, a) {
			p.allow = append(p.allow, a)
		}
	}
	for _, d := range dns {
		if d.Is4() && !slices.Contains(p.dns, d) {
			p.dns = append(p.dns, d)
		}
	}
	return p, nil
}

// alwaysDenied reports whether a lies in a range no exception opens.
func (p guestPolicy) alwaysDenied(a netip.Addr) bool {
	for _, al := range p.always {
		if al.Contains(a) {
			return true
		}
	}
	return false
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// String is the policy in one line, for the log and execlaw doctor.
func (p guestPolicy) String() string {
	var b strings.Builder
	b.WriteString("guests reach the internet; denied: this host, other sessions, ")
	b.WriteString(joinPrefixes(p.always))
	b.WriteString(" (always), ")
	b.WriteString(joinPrefixes(p.deny))
	b.WriteString("; allowed: ")
	if len(p.allow) == 0 {
		b.WriteString("none")
	} else {
		b.WriteString(joinPrefixes(p.allow))
	}
	b.WriteString("; DNS: ")
	d := make([]string, len(p.dns))
	for i, a := range p.dns {
		d[i] = a.String()
	}
	b.WriteString(strings.Join(d, ","))
	b.WriteString(" port 53")
	return b.String()
}
