package api

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHostPolicyAllows(t *testing.T) {
	p, err := NewHostPolicy(AuthToken, []string{"ExeClaw.Example.COM.", "*.corp.example", "192.0.2.7", "[2001:db8::7]:8443", "box_1"})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		// Loopback names, always.
		"localhost": true, "localhost:8000": true, "LOCALHOST.:8000": true, "app.localhost:3000": true,
		"127.0.0.1": true, "127.0.0.1:8000": true, "[::1]:8000": true, "[::1]": true, "::1": true,
		"[0:0:0:0:0:0:0:1]:80": true, "[::ffff:127.0.0.1]:80": true,
		// Configured names: port, case and a trailing dot do not matter.
		"execlaw.example.com": true, "EXECLAW.example.com:443": true, "execlaw.example.com.:8000": true,
		"a.corp.example": true, "a.b.corp.example:1": true, "corp.example": false, "evilcorp.example": false,
		"192.0.2.7:80": true, "[::ffff:192.0.2.7]:80": true, "[2001:db8::7]": true, "[2001:DB8:0::7]:1": true,
		"box_1:80": true,
		// Everything else.
		"attacker.example": false, "attacker.example:8000": false, "execlaw.example.com.attacker.example": false,
		"127.0.0.2": false, "192.0.2.8": false, "": false, ":8000": false, "[::1": false, "[::1]x": false,
		"localhost:80:80": false, "localhost:abc": false, "[127.0.0.1]:80": false, "0x7f.0.0.1": false,
		"2130706433": false, "localhost.attacker.example": false,
	} {
		if got := p.Allows(host); got != want {
			t.Errorf("Allows(%q) = %v, want %v", host, got, want)
		}
	}
	var nilPolicy *HostPolicy
	if !nilPolicy.Allows("localhost:1") || nilPolicy.Allows("example.com") || !nilPolicy.LoopbackOnly() {
		t.Error("nil policy is not loopback-only")
	}
	any, _ := NewHostPolicy(AuthToken, []string{"*"})
	if !any.Allows("whatever.example:1") || any.Allows("") {
		t.Error("* must allow every non-empty host")
	}
}

func TestHostPatterns(t *testing.T) {
	for _, bad := range []string{"exa mple.com", "*.", "*.*.example.com", "*example.com", "ex*.com", "http://example.com",
		"example.com/path", "a..b", "*.192.0.2.1", "[::1", "user@example.com", strings.Repeat("a", 300), "example.com:port"} {
		if _, err := ParseHostList("localhost," + bad); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
	got, err := ParseHostList(" a.example , ,*.b.example,[::1]:80,")
	if err != nil || !slices.Equal(got, []string{"a.example", "*.b.example", "[::1]:80"}) {
		t.Fatalf("ParseHostList: %q %v", got, err)
	}
	// Auth none: loopback names only.
	for pat, ok := range map[string]bool{"localhost": true, "dev.localhost": true, "*.localhost": true, "127.0.0.5": true,
		"[::1]:8000": true, "example.com": false, "*": false, "192.0.2.1": false, "*.example.com": false, "localhost.example.com": false} {
		_, err := NewHostPolicy(AuthNone, []string{pat})
		if (err == nil) != ok {
			t.Errorf("auth none with %q: %v", pat, err)
		}
	}
}

func TestDefaultAllowedHosts(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.0.2.10"),
		netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("fe80::1")}
	base := []string{"localhost", "*.localhost", "127.0.0.1", "::1"}
	for _, c := range []struct {
		name string
		d    HostDefaults
		want []string
	}{
		{"loopback", HostDefaults{Mode: AuthToken, Listens: []string{"127.0.0.1:8000"}, Hostname: "box", Addrs: addrs}, base},
		{"none on loopback", HostDefaults{Mode: AuthNone, Listens: []string{"127.0.0.2:8000"}, Hostname: "box", ExeDev: true, Addrs: addrs},
			append(slices.Clone(base), "127.0.0.2")},
		{"specific address", HostDefaults{Mode: AuthToken, Listens: []string{"192.0.2.10:8000"}, Hostname: "box", Addrs: addrs},
			append(slices.Clone(base), "192.0.2.10")},
		{"specific name", HostDefaults{Mode: AuthToken, Listens: []string{"Box.Lan.:8000"}, Hostname: "box", Addrs: addrs},
			append(slices.Clone(base), "box.lan")},
		{"wildcard", HostDefaults{Mode: AuthToken, Listens: []string{"0.0.0.0:8000"}, Hostname: "Box.", Addrs: addrs},
			append(slices.Clone(base), "box", "192.0.2.10", "2001:db8::10")},
		{"wildcard, full name", HostDefaults{Mode: AuthToken, Listens: []string{"[::]:8000"}, Hostname: "box.lan.example"},
			append(slices.Clone(base), "box.lan.example", "box")},
		{"empty host", HostDefaults{Mode: AuthExeDev, Listens: []string{":8000"}, Hostname: "box", Addrs: addrs},
			append(slices.Clone(base), "box", "192.0.2.10", "2001:db8::10")},
		{"exe.dev", HostDefaults{Mode: AuthExeDev, Listens: []string{"127.0.0.1:8000"}, Hostname: "myvm.exe.xyz", ExeDev: true},
			append(slices.Clone(base), "myvm.exe.xyz")},
		{"exe.dev forced", HostDefaults{Mode: AuthToken, Listens: []string{"[::]:8000", "127.0.0.1:9100"}, Hostname: "myvm", ExeDev: true},
			append(slices.Clone(base), "myvm", "myvm.exe.xyz")},
	} {
		if got := DefaultAllowedHosts(c.d); !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestTrustedProxies(t *testing.T) {
	got, err := ParseTrustedProxies(" 10.0.0.0/8, 192.0.2.1 ,2001:db8::/32,,::ffff:198.51.100.0/120")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32", "198.51.100.0/24"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("parsed %v, want %v", got, want)
	}
	for _, bad := range []string{"0.0.0.0/0", "::/0", "10.0.0.0/33", "proxy.example", "10.0.0.1-10.0.0.9", "fe80::1%eth0"} {
		if _, err := ParseTrustedProxies(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	a := Auth{Mode: AuthExeDev, TrustedProxies: got}
	for peer, want := range map[string]bool{
		"127.0.0.1:5000": true, "[::1]:5000": true, "127.9.9.9:1": true, "[::ffff:127.0.0.1]:1": true,
		"10.1.2.3:443": true, "192.0.2.1:1": true, "[2001:db8:1::5]:1": true, "198.51.100.77:1": true, "[::ffff:10.0.0.1]:1": true,
		"192.0.2.2:1": false, "203.0.113.5:1234": false, "[2001:db9::1]:1": false, "": false, "garbage": false, "10.1.2.3": false,
	} {
		if got := a.trustsPeer(peer); got != want {
			t.Errorf("trustsPeer(%q) = %v, want %v", peer, got, want)
		}
	}
	if (Auth{Mode: AuthExeDev}).trustsPeer("192.0.2.1:1") {
		t.Error("no proxies configured, yet a remote peer is trusted")
	}
	for listen, ok := range map[string]bool{"127.0.0.1:8000": true, "[::1]:80": true, "localhost:8000": true, "0.0.0.0:8000": false, ":8000": false, "192.0.2.1:80": false} {
		if err := CheckExeDev(listen, nil); (err == nil) != ok {
			t.Errorf("CheckExeDev(%s) = %v", listen, err)
		}
		if err := CheckExeDev(listen, got); err != nil {
			t.Errorf("CheckExeDev(%s) with proxies: %v", listen, err)
		}
	}
}

func TestFailureLimiter(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := newFailureLimiter[netip.Addr](3, 10*time.Second, 4)
	l.now = func() time.Time { return now }
	a := clientKey("192.0.2.1:5000")
	for i := range 3 {
		if _, blocked := l.blocked(a); blocked {
			t.Fatalf("blocked after %d failures", i)
		}
		l.fail(a)
	}
	retry, blocked := l.blocked(a)
	if !blocked || retry != 10*time.Second {
		t.Fatalf("after 3 failures: blocked=%v retry=%v", blocked, retry)
	}
	if _, blocked := l.blocked(clientKey("192.0.2.2:5000")); blocked {
		t.Fatal("another client is blocked")
	}
	now = now.Add(4 * time.Second)
	if retry, _ := l.blocked(a); retry != 6*time.Second {
		t.Fatalf("retry after 4s: %v", retry)
	}
	now = now.Add(6 * time.Second)
	if _, blocked := l.blocked(a); blocked {
		t.Fatal("still blocked after the refill")
	}
	l.fail(a)
	if _, blocked := l.blocked(a); !blocked {
		t.Fatal("one refilled failure spent, yet not blocked")
	}

	// A flood of addresses with one failure each never grows the table past
	// its cap, and does not push out the blocked client.
	for i := range 1000 {
		l.fail(clientKey(fmt.Sprintf("198.51.%d.%d:1", i/256, i%256)))
		if n := l.size(); n > 4 {
			t.Fatalf("table grew to %d", n)
		}
	}
	if _, blocked := l.blocked(a); !blocked {
		t.Fatal("the flood freed the blocked client")
	}
	// Clients whose bucket refilled are dropped first.
	now = now.Add(time.Hour)
	l.fail(clientKey("203.0.113.1:1"))
	if n := l.size(); n != 1 {
		t.Fatalf("after an hour and one failure: %d clients tracked", n)
	}
}

func TestClientKey(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.1:80":                  "192.0.2.1",
		"[::ffff:192.0.2.1]:80":         "192.0.2.1",
		"[2001:db8:1:2:3:4:5:6]:80":     "2001:db8:1:2::",
		"[2001:db8:1:2:ffff::1%eth0]:1": "2001:db8:1:2::",
		"nonsense":                      "invalid IP",
	} {
		if got := clientKey(addr).String(); got != want {
			t.Errorf("clientKey(%q) = %s, want %s", addr, got, want)
		}
	}
}

func TestLoginValues(t *testing.T) {
	if tokenFingerprint("a-token") == tokenFingerprint("another-token") || strings.Contains(tokenFingerprint("a-token"), "a-token") {
		t.Error("fingerprints")
	}
	for v, ok := range map[string]bool{strings.Repeat("ab", 32): true, strings.Repeat("AB", 32): false, strings.Repeat("a", 63): false,
		strings.Repeat("g", 64): false, "": false} {
		if validLoginValue(v) != ok {
			t.Errorf("validLoginValue(%q) = %v", v, !ok)
		}
	}
}
