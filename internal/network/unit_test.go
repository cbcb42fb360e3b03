package network

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestPoolAllocReuse(t *testing.T) {
	p, err := newPool(netip.MustParsePrefix("10.201.0.0/27")) // 4 blocks
	if err != nil {
		t.Fatal(err)
	}
	for want := range 4 {
		got, err := p.alloc()
		if err != nil || got != want {
			t.Fatalf("alloc = %d, %v; want %d", got, err, want)
		}
	}
	if _, err := p.alloc(); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("alloc on full pool: %v", err)
	}
	p.free(2)
	p.free(2) // double free is harmless
	p.free(99)
	if got, _ := p.alloc(); got != 2 {
		t.Fatalf("freed block not reused: got %d", got)
	}
	a := p.addrs(3)
	want := slotAddrs{
		HostVeth: netip.MustParsePrefix("10.201.0.25/30"),
		NSVeth:   netip.MustParsePrefix("10.201.0.26/30"),
		Gateway:  netip.MustParsePrefix("10.201.0.29/30"),
		Guest:    netip.MustParsePrefix("10.201.0.30/30"),
		GuestNet: netip.MustParsePrefix("10.201.0.28/30"),
	}
	if a != want {
		t.Fatalf("addrs(3) = %+v, want %+v", a, want)
	}
}

func TestPoolValidation(t *testing.T) {
	for _, s := range []string{"10.201.0.0/30", "10.201.0.1/16", "fd00::/64"} {
		if _, err := newPool(netip.MustParsePrefix(s)); err == nil {
			t.Errorf("newPool(%s) accepted", s)
		}
	}
	p, err := newPool(DefaultPool)
	if err != nil || len(p.used) != 8192 {
		t.Fatalf("default pool: %v, %d blocks", err, len(p.used))
	}
	if last := p.addrs(8191); last.Guest != netip.MustParsePrefix("10.201.255.254/30") {
		t.Fatalf("last block guest = %v", last.Guest)
	}
}

func TestResolvConfDNS(t *testing.T) {
	conf := `# comment
nameserver 127.0.0.53
nameserver 10.0.0.2
nameserver ::1
nameserver 2001:4860:4860::8888
nameserver 169.254.169.254
nameserver garbage
search example.com
nameserver 192.0.2.1 trailing
`
	got := resolvConfDNS(strings.NewReader(conf))
	want := []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("192.0.2.1")}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %v, want %v", got, want)
	}
	if d := resolvConfDNS(strings.NewReader("nameserver 127.0.0.1\n")); len(d) != 0 {
		t.Fatalf("loopback only: got %v", d)
	}
}

func TestShortIDAndMAC(t *testing.T) {
	id := "s_0123456789abcdef01234567"
	if got := shortID(id); got != id {
		t.Fatalf("shortID(%q) = %q", id, got)
	}
	long := strings.Repeat("a", 40)
	a, b := shortID(long), shortID(long+"b")
	if a == b || len(a) > 32 || !strings.HasPrefix(a, "aaaa") {
		t.Fatalf("long ids: %q %q", a, b)
	}
	if s := shortID("../x/y"); strings.ContainsAny(s, "/.") || s == shortID("xy") {
		t.Fatalf("unsafe id sanitized to %q", s)
	}
	if shortID("///") == "" {
		t.Fatal("empty short id")
	}

	m1, m2 := macFor(id), macFor(id+"x")
	if m1 != macFor(id) || m1 == m2 {
		t.Fatalf("mac not stable/distinct: %s %s", m1, m2)
	}
	hw, err := net.ParseMAC(m1)
	if err != nil || hw[0]&0x02 == 0 || hw[0]&0x01 != 0 {
		t.Fatalf("mac %s: want unicast, locally administered (%v)", m1, err)
	}
}
