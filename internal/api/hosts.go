package api

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Allowed hosts defend against DNS rebinding: a page on attacker.example
// whose name is made to resolve to this server's address talks to it from
// the attacker's origin, and passes the origin check, because its Origin
// and Host are both attacker.example. A browser always sends the name it
// resolved as Host, so refusing every Host the server was not told it goes
// by stops it, whatever the name resolves to.

// LoopbackHosts are always allowed: names that only ever mean this machine
// (RFC 6761: localhost and its subdomains; browsers never ask DNS for them).
var LoopbackHosts = []string{"localhost", "*.localhost", "127.0.0.1", "::1"}

// maxHostLen bounds a name in a pattern or a Host header (DNS: 253).
const maxHostLen = 253

// HostPolicy says which Host headers the server answers to; build one with
// NewHostPolicy. A nil policy allows only LoopbackHosts.
type HostPolicy struct {
	any      bool
	names    map[string]bool // lower-case names and canonical IP literals
	suffixes []string        // ".example.com" for "*.example.com"
	patterns []string
}

// NewHostPolicy builds a policy from patterns: host names, IP literals,
// "*.example.com" (every name under example.com, not example.com itself) or
// "*" (any host). Ports are ignored, case does not matter, and a trailing dot
// is dropped. LoopbackHosts are always included. With auth none only
// loopback names are accepted: anything else is an error.
func NewHostPolicy(mode string, patterns []string) (*HostPolicy, error) {
	p := &HostPolicy{names: map[string]bool{}}
	for _, raw := range append(slices.Clone(LoopbackHosts), patterns...) {
		pat, err := normalizePattern(raw)
		if err != nil {
			return nil, err
		}
		if pat == "" || slices.Contains(p.patterns, pat) {
			continue
		}
		if mode == AuthNone && !isLoopbackPattern(pat) {
			return nil, fmt.Errorf("allowed host %q: with --auth none only loopback names (localhost, *.localhost, 127.0.0.1, ::1) may be allowed: any other name could be pointed at this machine by someone else", raw)
		}
		p.patterns = append(p.patterns, pat)
		switch {
		case pat == "*":
			p.any = true
		case strings.HasPrefix(pat, "*."):
			p.suffixes = append(p.suffixes, pat[1:])
		default:
			p.names[pat] = true
		}
	}
	return p, nil
}

// ParseHostList splits a comma-separated --allowed-hosts value and checks
// each entry; empty entries are skipped.
func ParseHostList(list string) ([]string, error) {
	var out []string
	for _, raw := range strings.Split(list, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		if _, err := normalizePattern(raw); err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	return out, nil
}

// normalizePattern lower-cases a pattern, drops a port, brackets and a
// trailing dot, writes IP literals canonically and checks the rest is a
// host name.
func normalizePattern(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return "", nil
	}
	if s == "*" {
		return s, nil
	}
	if len(s) > maxHostLen+8 {
		return "", fmt.Errorf("allowed host %.40q...: too long", s)
	}
	wild := strings.HasPrefix(s, "*.")
	if wild {
		s = s[2:]
	}
	host, ok := hostOnly(s)
	if !ok || host == "" || (wild && net.ParseIP(host) != nil) {
		return "", fmt.Errorf("allowed host %q: want a host name, an IP address or *.domain", raw)
	}
	if net.ParseIP(host) == nil && !validHostName(host) {
		return "", fmt.Errorf("allowed host %q: not a host name (letters, digits, '-', '_' and dots)", raw)
	}
	if wild {
		return "*." + host, nil
	}
	return host, nil
}

func validHostName(h string) bool {
	if len(h) > maxHostLen {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
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

// hostOnly reduces a Host header (or pattern) to the host it names:
// lower-case, without port, brackets or trailing dot, an IP address in its
// canonical form (IPv4-mapped IPv6 as IPv4, no zone). ok is false when it is
// not a well-formed host[:port].
func hostOnly(hostport string) (string, bool) {
	h := hostport
	switch {
	case strings.HasPrefix(h, "["):
		end := strings.IndexByte(h, ']')
		if end < 0 || !validPort(h[end+1:]) {
			return "", false
		}
		a, err := netip.ParseAddr(h[1:end])
		if err != nil || !a.Is6() {
			return "", false
		}
		return a.WithZone("").Unmap().String(), true
	case strings.Count(h, ":") > 1: // a bare IPv6 address
		a, err := netip.ParseAddr(h)
		if err != nil {
			return "", false
		}
		return a.WithZone("").Unmap().String(), true
	case strings.Contains(h, ":"):
		i := strings.IndexByte(h, ':')
		if !validPort(h[i:]) {
			return "", false
		}
		h = h[:i]
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if a, err := netip.ParseAddr(h); err == nil {
		return a.WithZone("").Unmap().String(), true
	}
	return h, len(h) <= maxHostLen
}

// validPort is "" or ":" followed by at most five digits.
func validPort(s string) bool {
	if s == "" {
		return true
	}
	if s[0] != ':' || len(s) > 6 {
		return false
	}
	for _, c := range s[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func isLoopbackPattern(pat string) bool {
	if pat == "localhost" || pat == "*.localhost" || strings.HasSuffix(pat, ".localhost") {
		return true
	}
	a, err := netip.ParseAddr(pat)
	return err == nil && a.IsLoopback()
}

// Allows reports whether a request's Host (r.Host: with a port or not)
// is one the server answers to.
func (p *HostPolicy) Allows(hostport string) bool {
	if p == nil {
		p = defaultHostPolicy
	}
	host, ok := hostOnly(hostport)
	if !ok || host == "" {
		return false
	}
	if p.any || p.names[host] {
		return true
	}
	for _, suf := range p.suffixes {
		if strings.HasSuffix(host, suf) {
			return true
		}
	}
	return false
}

// LoopbackOnly reports whether the policy allows nothing but loopback names.
func (p *HostPolicy) LoopbackOnly() bool {
	if p == nil {
		return true
	}
	for _, pat := range p.patterns {
		if !isLoopbackPattern(pat) {
			return false
		}
	}
	return true
}

// String lists the patterns, for the log.
func (p *HostPolicy) String() string {
	if p == nil {
		p = defaultHostPolicy
	}
	return strings.Join(p.patterns, ",")
}

var defaultHostPolicy = func() *HostPolicy {
	p, err := NewHostPolicy(AuthNone, nil)
	if err != nil {
		panic(err)
	}
	return p
}()

// HostDefaults is what the default allowed hosts are derived from.
type HostDefaults struct {
	Mode string
	// Listens are the addresses the server listens on (host:port): the API's
	// and the metrics'.
	Listens []string
	// ExeDev: the server runs on exe.dev, whose proxy forwards
	// https://<vm>.exe.xyz/ to it.
	ExeDev bool
	// Hostname is the machine's name (os.Hostname).
	Hostname string
	// Addrs are the machine's interface addresses.
	Addrs []netip.Addr
}

// DefaultAllowedHosts derives the hosts a server answers to without
// --allowed-hosts: the loopback names always; a listen address's host when
// it is a specific name or address; for a wildcard listen (0.0.0.0, ::, or
// no host) in token or exedev mode, the machine's name (and its first
// label) and interface addresses too; and on exe.dev, <hostname>.exe.xyz.
// With auth none only loopback names.
func DefaultAllowedHosts(d HostDefaults) []string {
	out := slices.Clone(LoopbackHosts)
	add := func(h string) {
		if n, err := normalizePattern(h); err == nil && n != "" && n != "*" && !slices.Contains(out, n) {
			if d.Mode == AuthNone && !isLoopbackPattern(n) {
				return
			}
			out = append(out, n)
		}
	}
	wildcard := false
	for _, l := range d.Listens {
		host, _, err := net.SplitHostPort(l)
		if err != nil {
			continue
		}
		if a, err := netip.ParseAddr(host); host == "" || (err == nil && a.IsUnspecified()) {
			wildcard = true
			continue
		}
		add(host)
	}
	if d.Mode == AuthNone {
		return out
	}
	name := strings.TrimSuffix(strings.ToLower(d.Hostname), ".")
	if wildcard {
		add(name)
		if short, _, ok := strings.Cut(name, "."); ok {
			add(short) // box.example.com is often reached as box
		}
		for _, a := range d.Addrs {
			if a.IsValid() && !a.IsLinkLocalUnicast() {
				add(a.WithZone("").Unmap().String())
			}
		}
	}
	if d.ExeDev && name != "" {
		if !strings.HasSuffix(name, ".exe.xyz") {
			name += ".exe.xyz"
		}
		add(name)
	}
	return out
}

// hostCheck refuses requests whose Host the server does not answer to with
// 421 Misdirected Request, before anything else looks at them.
func (s *Server) hostCheck(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.hosts.Allows(r.Host) {
			next.ServeHTTP(w, r)
			return
		}
		shown := r.Host
		if len(shown) > 100 {
			shown = shown[:100] + "..."
		}
		var msg string
		switch {
		case shown == "":
			msg = "the request names no host (Host header): this server only answers requests for the names it is configured with"
		case s.auth.Mode == AuthNone:
			msg = fmt.Sprintf("host %q is not allowed: with --auth none this server only answers to loopback names (localhost, 127.0.0.1, [::1]); open it by one of those", shown)
		default:
			h, _ := hostOnly(shown)
			if h == "" {
				h = shown
			}
			msg = fmt.Sprintf("host %q is not allowed (a guard against DNS rebinding): to serve it under this name, add it to --allowed-hosts / EXECLAW_ALLOWED_HOSTS, e.g. --allowed-hosts %s", shown, h)
		}
		if s.misdirectLog.allow(time.Now()) {
			s.log.Warn("refused a request for a host that is not allowed (421)", "host", shown, "peer", r.RemoteAddr, "allowed", s.hosts.String())
		}
		writeJSON(w, http.StatusMisdirectedRequest, map[string]string{"error": msg})
	})
}

// logThrottle lets a repeated warning through at most once a minute.
type logThrottle struct{ last atomic.Int64 }

func (t *logThrottle) allow(now time.Time) bool {
	last := t.last.Load()
	if last != 0 && now.UnixNano()-last < int64(time.Minute) {
		return false
	}
	return t.last.CompareAndSwap(last, now.UnixNano())
}
