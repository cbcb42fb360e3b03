package network

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
)

// DefaultPool is the address pool used when Config.Pool is unset.
var DefaultPool = netip.MustParsePrefix("10.201.0.0/16")

// DefaultNetNSPrefix names session namespaces: execlaw-<short id>.
const DefaultNetNSPrefix = "execlaw-"

// fallbackDNS is what guests get when the host has no usable resolver.
var fallbackDNS = []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("8.8.8.8")}

// Config configures a Manager. The zero value is usable: the real host
// namespace, DefaultPool, DNS from /etc/resolv.conf, DefaultDenyForward.
type Config struct {
	// HostNSPath is the namespace that plays "the host": where sessions'
	// traffic is routed and masqueraded. Empty means the namespace of the
	// calling process (the real host). Tests pass a namespace they created,
	// so no test packet or rule touches the real host.
	HostNSPath string
	// Instance names every host resource this manager creates (session
	// namespaces, host links, the nftables table, its claim on the pool),
	// so several servers can share a host and each sweeps only its own:
	// six lowercase hex digits, InstanceID(dataDir) for a server. Empty:
	// derived from NetNSPrefix and HostNSPath.
	Instance string
	// Owner describes the instance to other servers and execlaw doctor
	// (the data directory). Informational.
	Owner string
	// Pool is the IPv4 range session addresses come from (default
	// 10.201.0.0/16). Each instance claims one /20 block of it (the whole
	// pool if it is a /20 or smaller) and hands out a /29 per session
	// from that block. It must not overlap routes or addresses already on
	// the host: blocks that do are skipped.
	Pool netip.Prefix
	// DNS lists the resolvers guests are told to use. Default: the host's
	// /etc/resolv.conf nameservers that a guest can actually reach (IPv4,
	// not loopback, not link-local: 169.254/16 is blocked as metadata
	// space, not one of the host's own addresses: guests may not talk to
	// the host), else systemd-resolved's upstream servers, else 1.1.1.1 and
	// 8.8.8.8. Guests may reach these on port 53 (UDP and TCP) even when
	// they lie in a denied range (a home router, a VPC resolver).
	DNS []netip.Addr
	// DenyForward lists destinations sessions may not reach on top of
	// DefaultDenyForward (private, CGNAT and other non-internet ranges),
	// AlwaysDenied, the host itself, other sessions and the pool.
	DenyForward []netip.Prefix
	// AllowForward lists ranges carved out of DefaultDenyForward and
	// DenyForward (a LAN package mirror, say). It cannot open AlwaysDenied,
	// the pool, other sessions or the host itself.
	AllowForward []netip.Prefix
	// NetNSPrefix names session namespaces (default "execlaw-"): each is
	// <NetNSPrefix><Instance>-<session>. Sweep removes this instance's
	// namespaces only; tests use a unique prefix so they cannot collide
	// with a real server on the same machine.
	NetNSPrefix string
	// Logger receives setup/teardown events and best-effort cleanup
	// failures; nil discards them.
	Logger *slog.Logger
}

// Validate checks cfg the way New does, without touching the host: the
// pool, the instance id, the namespace prefix, the allowed and denied ranges.
func (c Config) Validate() error {
	_, err := normalize(c)
	return err
}

// normalize fills in defaults and validates cfg.
func normalize(cfg Config) (Config, error) {
	if !cfg.Pool.IsValid() {
		cfg.Pool = DefaultPool
	}
	if _, err := newPool(cfg.Pool); err != nil {
		return cfg, err
	}
	if cfg.NetNSPrefix == "" {
		cfg.NetNSPrefix = DefaultNetNSPrefix
	}
	if err := validPrefixName(cfg.NetNSPrefix); err != nil {
		return cfg, err
	}
	if cfg.Instance == "" {
		sum := sha256.Sum256([]byte("execlaw-instance-default\x00" + cfg.NetNSPrefix + "\x00" + cfg.HostNSPath))
		cfg.Instance = hex.EncodeToString(sum[:])[:instanceLen]
	}
	if err := validInstance(cfg.Instance); err != nil {
		return cfg, err
	}
	// Validated here so that a bad range fails before anything is touched.
	if _, err := newGuestPolicy(cfg.Pool, cfg.AllowForward, cfg.DenyForward, nil); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// resolvConfDNS returns the nameservers in a resolv.conf that a guest can
// reach, in file order.
func resolvConfDNS(r io.Reader) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		// "fe80::1%eth0" style zones never apply to IPv4; ParseAddr rejects
		// garbage, which we skip rather than fail on.
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			continue
		}
		a = a.Unmap()
		if !a.Is4() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() {
			continue
		}
		out = append(out, a)
	}
	return out
}

// resolvConfPath and resolvedConfPath are variables so tests can
// substitute files. The second is systemd-resolved's list of upstream
// servers: where /etc/resolv.conf names only its 127.0.0.53 stub, the real
// resolvers (often the home router or the VPC's) are there.
var (
	resolvConfPath   = "/etc/resolv.conf"
	resolvedConfPath = "/run/systemd/resolve/resolv.conf"
)

func defaultDNS() []netip.Addr {
	for _, p := range []string{resolvConfPath, resolvedConfPath} {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		dns := resolvConfDNS(f)
		f.Close()
		if len(dns) > 0 {
			return dns
		}
	}
	return append([]netip.Addr(nil), fallbackDNS...)
}

// shortID turns a session id into the tail of a namespace name: the id
// itself when it is short and file-name safe (session ids are "s_" + 24 hex
// digits), otherwise a readable prefix plus a hash so distinct ids stay
// distinct.
func shortID(id string) string {
	var b strings.Builder
	for _, r := range id {
		if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			b.WriteRune(r)
		}
	}
	s := b.String()
	if s == id && len(s) > 0 && len(s) <= 32 {
		return s
	}
	sum := sha256.Sum256([]byte(id))
	h := hex.EncodeToString(sum[:4])
	if len(s) > 23 {
		s = s[:23]
	}
	if s == "" {
		return h
	}
	return s + "-" + h
}

// macFor derives the guest NIC's MAC from the session id: stable across VM
// restarts of the same session, unicast, locally administered (0x02 bit).
func macFor(id string) string {
	sum := sha256.Sum256([]byte("execlaw-mac\x00" + id))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&0xfc | 0x02
	return mac.String()
}

func validPrefixName(p string) error {
	if strings.ContainsAny(p, "/\x00") || p == "." || p == ".." {
		return fmt.Errorf("network: bad NetNSPrefix %q", p)
	}
	return nil
}
