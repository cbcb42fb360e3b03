package egress

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// TestClassify is the policy table: every range the policy names, the
// addresses next to its edges, and IPv4 addresses in their IPv6 disguises.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want Class
	}{
		// IPv4.
		{"0.0.0.0", Never},
		{"0.1.2.3", Never},
		{"127.0.0.1", Loopback},
		{"127.255.255.254", Loopback},
		{"10.0.0.1", Private},
		{"10.255.255.255", Private},
		{"172.15.255.255", Public},
		{"172.16.0.1", Private},
		{"172.31.255.255", Private},
		{"172.32.0.1", Public},
		{"192.168.0.1", Private},
		{"192.169.0.1", Public},
		{"100.63.255.255", Public},
		{"100.64.0.1", Private},
		{"100.127.255.255", Private},
		{"100.128.0.1", Public},
		{"100.100.100.200", Never}, // Alibaba Cloud's metadata, inside CGNAT
		{"169.254.169.254", Never},
		{"169.254.0.1", Never},
		{"169.254.170.2", Never}, // AWS ECS task metadata
		{"168.63.129.16", Never},
		{"198.18.0.1", Private},
		{"192.0.0.170", Never},
		{"192.0.2.1", Never},
		{"224.0.0.1", Never},
		{"239.255.255.250", Never},
		{"240.0.0.1", Never},
		{"255.255.255.255", Never},
		{"8.8.8.8", Public},
		{"1.1.1.1", Public},
		{"160.79.104.10", Public},
		// IPv6.
		{"::", Never},
		{"::1", Loopback},
		{"fe80::1", Never},
		{"fe80::1%eth0", Never},
		{"febf:ffff::1", Never},
		{"fd00:ec2::254", Never},
		{"fd00:ec2::253", Private},
		{"fc00::1", Private},
		{"fd12:3456:789a::1", Private},
		{"fec0::1", Private},
		{"ff02::1", Never},
		{"ff05::1:3", Never},
		{"100::1", Never},
		{"2001:db8::1", Never},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", Never}, // Teredo
		{"2606:4700:4700::1111", Public},
		{"2001:4860:4860::8888", Public},
		// IPv4-mapped.
		{"::ffff:169.254.169.254", Never},
		{"::ffff:127.0.0.1", Loopback},
		{"::ffff:10.0.0.1", Private},
		{"::ffff:0.0.0.0", Never},
		{"::ffff:8.8.8.8", Public},
		// IPv4-translated (SIIT).
		{"::ffff:0:a9fe:a9fe", Never},
		{"::ffff:0:a00:1", Private},
		// NAT64, well-known prefix: the IPv4 address decides.
		{"64:ff9b::a9fe:a9fe", Never},
		{"64:ff9b::7f00:1", Loopback},
		{"64:ff9b::a00:1", Private},
		{"64:ff9b::808:808", Public},
		// NAT64, local-use prefix.
		{"64:ff9b:1::a9fe:a9fe", Private},
		// 6to4.
		{"2002:a9fe:a9fe::1", Never},
		{"2002:7f00:1::1", Loopback},
		{"2002:c0a8:101::1", Private},
		{"2002:808:808::1", Public},
		// Deprecated IPv4-compatible.
		{"::a9fe:a9fe", Never},
		{"::7f00:1", Never},
	} {
		got, what := Classify(netip.MustParseAddr(tc.addr))
		if got != tc.want {
			t.Errorf("Classify(%s) = %s (%s), want %s", tc.addr, got, what, tc.want)
		}
		if what == "" {
			t.Errorf("Classify(%s): no description", tc.addr)
		}
	}
	if c, what := Classify(netip.MustParseAddr("::ffff:169.254.169.254")); c != Never || !strings.Contains(what, "169.254.169.254") {
		t.Errorf("a mapped address should name the IPv4 address it carries: %s", what)
	}
}

// TestLevels: which classes each level allows.
func TestLevels(t *testing.T) {
	addrs := map[Class]string{Public: "8.8.8.8", Loopback: "127.0.0.1", Private: "10.0.0.1", Never: "169.254.169.254"}
	for _, tc := range []struct {
		p     *Policy
		allow []Class
	}{
		{PublicOnly(), []Class{Public}},
		{PublicAndLoopback(), []Class{Public, Loopback}},
		{PublicAndPrivate(), []Class{Public, Loopback, Private}},
		{nil, nil},
		{&Policy{}, nil},
	} {
		for class, addr := range addrs {
			want := false
			for _, c := range tc.allow {
				want = want || c == class
			}
			err := tc.p.Check("", netip.AddrPortFrom(netip.MustParseAddr(addr), 80))
			if (err == nil) != want {
				t.Errorf("policy %s, %s (%s): err = %v, want allowed %v", tc.p, addr, class, err, want)
			}
			var re *RefusedError
			if err != nil && (!errors.As(err, &re) || re.Class != class) {
				t.Errorf("policy %s, %s: error %T %v", tc.p, addr, err, err)
			}
		}
	}
	// Loopback and private through their IPv6 forms follow the same levels.
	for _, addr := range []string{"::1", "::ffff:127.0.0.1", "64:ff9b::7f00:1"} {
		ap := netip.AddrPortFrom(netip.MustParseAddr(addr), 80)
		if err := PublicOnly().Check("", ap); err == nil {
			t.Errorf("public allowed %s", addr)
		}
		if err := PublicAndLoopback().Check("", ap); err != nil {
			t.Errorf("loopback refused %s: %v", addr, err)
		}
	}
}

func TestParse(t *testing.T) {
	allowed := func(p *Policy, host, addr string) bool {
		return p.Check(host, netip.MustParseAddrPort(addr)) == nil
	}
	for _, tc := range []struct {
		spec, canonical string
		allow, refuse   [][2]string // {host, ip:port}
	}{
		{"public", "public", [][2]string{{"", "8.8.8.8:443"}}, [][2]string{{"", "127.0.0.1:80"}, {"", "10.0.0.1:80"}}},
		{" Loopback ", "loopback", [][2]string{{"", "127.0.0.1:11434"}, {"", "[::1]:80"}}, [][2]string{{"", "10.0.0.1:80"}}},
		{"private", "private", [][2]string{{"", "10.0.0.1:80"}, {"", "[fd00::1]:80"}, {"", "127.0.0.1:80"}},
			[][2]string{{"", "169.254.169.254:80"}, {"", "[fe80::1]:80"}, {"", "[fd00:ec2::254]:80"}}},
		// Entries without a level add to public.
		{"10.0.0.5:11434", "10.0.0.5:11434", [][2]string{{"", "10.0.0.5:11434"}, {"", "8.8.8.8:443"}},
			[][2]string{{"", "10.0.0.5:80"}, {"", "10.0.0.6:11434"}, {"", "127.0.0.1:11434"}}},
		{"loopback, 10.1.0.0/16", "loopback,10.1.0.0/16", [][2]string{{"", "10.1.2.3:9"}, {"", "127.0.0.1:80"}},
			[][2]string{{"", "10.2.0.1:80"}}},
		{"public,[fd00::5]:8080", "public,[fd00::5]:8080", [][2]string{{"", "[fd00::5]:8080"}}, [][2]string{{"", "[fd00::5]:80"}}},
		{"ollama.lan:11434", "ollama.lan:11434", [][2]string{{"ollama.lan", "10.0.0.9:11434"}, {"OLLAMA.LAN.", "192.168.1.2:11434"}},
			[][2]string{{"ollama.lan", "10.0.0.9:80"}, {"other.lan", "10.0.0.9:11434"}, {"", "10.0.0.9:11434"}}},
		{"gpu.lan", "gpu.lan", [][2]string{{"gpu.lan", "10.0.0.9:1"}}, [][2]string{{"gpu.lan2", "10.0.0.9:1"}}},
		{"gpu-box:8000", "gpu-box:8000", [][2]string{{"gpu-box", "10.0.0.9:8000"}}, [][2]string{{"gpu-box", "10.0.0.9:1"}}},
		// An explicit entry is the operator's word, even for a never range.
		{"public,169.254.169.254:80", "public,169.254.169.254:80", [][2]string{{"", "169.254.169.254:80"}}, [][2]string{{"", "169.254.169.254:8080"}}},
		// A mapped address in an entry means its IPv4 address.
		{"::ffff:10.0.0.7", "::ffff:10.0.0.7", [][2]string{{"", "10.0.0.7:80"}}, nil},
	} {
		p, err := Parse(tc.spec)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.spec, err)
			continue
		}
		if p.String() != tc.canonical {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.spec, p, tc.canonical)
		}
		for _, a := range tc.allow {
			if !allowed(p, a[0], a[1]) {
				t.Errorf("%q refused %s %s", tc.spec, a[0], a[1])
			}
		}
		for _, a := range tc.refuse {
			if allowed(p, a[0], a[1]) {
				t.Errorf("%q allowed %s %s", tc.spec, a[0], a[1])
			}
		}
	}
	for _, bad := range []string{"", " , ", "public,loopback", "10.0.0.0/33", "host:0", "host:99999", "host:x",
		"bad_name!", "-x.lan", "http://10.0.0.1", "1.2.3.4:5:6", "privat", "localhost"} {
		if p, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %s, want an error", bad, p)
		}
	}
}

func TestOnly(t *testing.T) {
	p, err := Only("169.254.169.254:80")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Check("", netip.MustParseAddrPort("169.254.169.254:80")); err != nil {
		t.Errorf("the configured address is refused: %v", err)
	}
	for _, other := range []string{"169.254.169.254:443", "8.8.8.8:80", "127.0.0.1:80", "169.254.169.253:80"} {
		if err := p.Check("", netip.MustParseAddrPort(other)); err == nil {
			t.Errorf("%s allowed by a policy of one address", other)
		}
	}
	if _, err := Only("not a host"); err == nil {
		t.Error("Only accepted a bad entry")
	}
	q, err := PublicOnly().With("exe.test:8443")
	if err != nil {
		t.Fatal(err)
	}
	if q.Check("exe.test", netip.MustParseAddrPort("127.0.0.1:8443")) != nil || q.Check("", netip.MustParseAddrPort("127.0.0.1:8443")) == nil {
		t.Errorf("With: %s", q)
	}
	if PublicOnly().Check("exe.test", netip.MustParseAddrPort("127.0.0.1:8443")) == nil {
		t.Error("With changed the policy it was called on")
	}
}

func TestRefusedErrorWording(t *testing.T) {
	err := PublicOnly().Check("localhost", netip.MustParseAddrPort("127.0.0.1:11434"))
	if err == nil || !strings.Contains(err.Error(), "localhost (127.0.0.1:11434)") || !strings.Contains(err.Error(), "loopback") ||
		!strings.Contains(err.Error(), "(public)") {
		t.Errorf("error %v", err)
	}
	err = PublicAndPrivate().Check("", netip.MustParseAddrPort("169.254.169.254:80"))
	if err == nil || !strings.Contains(err.Error(), "never") || !strings.Contains(err.Error(), "metadata") {
		t.Errorf("error %v", err)
	}
}
