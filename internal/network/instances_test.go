package network

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// instanceState is what one instance has in the test host namespace and
// /run/netns.
type instanceState struct {
	links  []string
	nss    []string
	routes int
	table  bool
	rules  int
}

func stateOf(t *testing.T, e *testEnv, m *Manager) instanceState {
	t.Helper()
	var s instanceState
	h := handleFor(t, e.hostNS)
	var err error
	s.links, err = hostLinks(h, m.linkPfx)
	must(t, err)
	s.nss, err = listNamedNS(m.nsPfx)
	must(t, err)
	rs, err := routesIn(h, m.Block())
	must(t, err)
	s.routes = len(rs)
	fd, err := openNS(e.hostNS)
	must(t, err)
	defer unix.Close(fd)
	s.table, err = tableExists(fd, m.TableName())
	must(t, err)
	if s.table {
		for _, ch := range []string{"input", "forward"} {
			s.rules += len(dropCounters(t, e.hostNS, m.TableName(), ch))
		}
	}
	return s
}

func (s instanceState) String() string {
	return fmt.Sprintf("links %v, namespaces %v, %d routes, table %v with %d drop rules", s.links, s.nss, s.routes, s.table, s.rules)
}

func sameState(a, b instanceState) bool {
	return slices.Equal(a.links, b.links) && slices.Equal(a.nss, b.nss) && a.routes == b.routes && a.table == b.table && a.rules == b.rules
}

// TestTwoInstances: two servers (instances) share one host namespace, one
// pool and one namespace prefix. Each claims its own block; a session of
// each, even with the same session id, gets its own names and addresses;
// the second's start (New, Sweep) leaves the first's session intact and
// working, and so do the sweeps of a restarted instance after a crash.
// Guests of different instances cannot reach each other.
func TestTwoInstances(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	inet := listen(t, e.inetDo, "0.0.0.0:0")
	cfgA, cfgB := e.cfg, e.cfg
	cfgA.Pool, cfgB.Pool = DefaultPool, DefaultPool
	cfgA.Instance = InstanceID(testPrefix + "data-a")
	cfgB.Instance = InstanceID(testPrefix + "data-b")
	cfgA.Owner, cfgB.Owner = "/srv/a", "/srv/b"
	if cfgA.Instance == cfgB.Instance {
		t.Fatal("instance ids collide")
	}
	newM := func(cfg Config) *Manager {
		t.Helper()
		m, err := New(cfg)
		must(t, err)
		t.Cleanup(func() { m.Close() })
		must(t, m.Sweep(ctx))
		return m
	}

	mA := newM(cfgA)
	a, err := mA.Setup(ctx, "s_same")
	must(t, err)
	ga := startGuest(t, a)
	mustReach(t, "guest A -> internet", ga.do, inetAddr, inet.port())
	beforeA := stateOf(t, e, mA)

	// The second server starts while A's session runs: New and its
	// startup Sweep.
	mB := newM(cfgB)
	if afterB := stateOf(t, e, mA); !sameState(beforeA, afterB) {
		t.Fatalf("starting instance B changed instance A's resources:\nbefore %v\nafter  %v", beforeA, afterB)
	}
	mustReach(t, "guest A -> internet after B started", ga.do, inetAddr, inet.port())

	b, err := mB.Setup(ctx, "s_same") // the same session id, on purpose
	must(t, err)
	gb := startGuest(t, b)
	mustReach(t, "guest B -> internet", gb.do, inetAddr, inet.port())
	if mA.Block().Overlaps(mB.Block()) || !DefaultPool.Contains(mA.Block().Addr()) || !DefaultPool.Contains(mB.Block().Addr()) ||
		a.GuestIP == b.GuestIP || a.NetNS == b.NetNS || a.HostLink == b.HostLink || mA.TableName() == mB.TableName() {
		t.Fatalf("instances share resources:\nA %v %+v\nB %v %+v", mA.Block(), a, mB.Block(), b)
	}
	for _, att := range []*Attachment{a, b} {
		if len(att.HostLink) > unix.IFNAMSIZ-1 {
			t.Fatalf("host link name %q is too long", att.HostLink)
		}
	}

	// Guests of different instances are isolated from each other.
	la, lb := listen(t, ga.do, "0.0.0.0:0"), listen(t, gb.do, "0.0.0.0:0")
	mustReach(t, "control: host -> guest A", mA.HostDo, a.GuestIP.Addr(), la.port())
	mustReach(t, "control: host -> guest B", mB.HostDo, b.GuestIP.Addr(), lb.port())
	mustNotReachAll(t, ga.do, target{"guest B", b.GuestIP.Addr(), lb.port()})
	mustNotReachAll(t, gb.do, target{"guest A", a.GuestIP.Addr(), la.port()})

	// A sweeps again (as after a restart): B's session is untouched.
	beforeB := stateOf(t, e, mB)
	must(t, mA.Sweep(ctx))
	if afterB := stateOf(t, e, mB); !sameState(beforeB, afterB) {
		t.Fatalf("instance A's Sweep changed instance B's resources:\nbefore %v\nafter  %v", beforeB, afterB)
	}
	mustReach(t, "guest B -> internet after A's Sweep", gb.do, inetAddr, inet.port())

	// A crashes and restarts: it gets its block back and sweeps its own
	// leftovers, and only those.
	blockA := mA.Block()
	crash(mA)
	mA2 := newM(cfgA)
	if mA2.Block() != blockA {
		t.Errorf("restarted instance got %v, had %v", mA2.Block(), blockA)
	}
	if s := stateOf(t, e, mA2); len(s.links) != 0 || len(s.nss) != 0 || s.routes != 0 {
		t.Fatalf("restarted instance A did not sweep its leftovers: %v", s)
	}
	if afterB := stateOf(t, e, mB); !sameState(beforeB, afterB) {
		t.Fatalf("restarted instance A changed instance B's resources:\nbefore %v\nafter  %v", beforeB, afterB)
	}
	mustReach(t, "guest B -> internet after A's restart", gb.do, inetAddr, inet.port())
	a2, err := mA2.Setup(ctx, "s_same")
	must(t, err)
	ga2 := startGuest(t, a2)
	mustReach(t, "restarted guest A -> internet", ga2.do, inetAddr, inet.port())

	// A third server whose instance is A's own is refused, naming it.
	if m, err := New(cfgA); err == nil {
		m.Close()
		t.Fatal("a second server of instance A started")
	} else if !strings.Contains(err.Error(), "/srv/a") {
		t.Errorf("refusal does not name the data directory: %v", err)
	}

	// doctor's view: each instance sees itself holding its block, the
	// other one beside it, and the policy.
	info, err := Describe(cfgB)
	must(t, err)
	if !info.Running || info.Block != mB.Block() || info.Holder == nil || info.Holder.PID != os.Getpid() || info.Holder.Owner != "/srv/b" ||
		len(info.Others) != 1 || info.Others[0].Instance != cfgA.Instance || info.Others[0].Block != blockA || info.Others[0].Owner != "/srv/a" {
		t.Fatalf("Describe(B) = %+v", info)
	}
	if !strings.Contains(info.String(), "holds "+mB.Block().String()) || !strings.Contains(info.Policy, "192.0.2.53") {
		t.Errorf("Describe(B): %s; policy %s", info, info.Policy)
	}

	must(t, mA2.Teardown(ctx, a2))
	must(t, mB.Teardown(ctx, b))
	must(t, mA2.Close())
	must(t, mB.Close())
	assertClean(t, e)
	for _, m := range []*Manager{mA2, mB} {
		if s := stateOf(t, e, m); s.table {
			t.Fatalf("table %s left after Close", m.TableName())
		}
	}
}

// TestPoolSharedToExhaustion: instances split a pool block by block; when
// none is left, the next is refused with a message naming the holders, and
// a block the host already uses is skipped.
func TestPoolSharedToExhaustion(t *testing.T) {
	e := newTestEnv(t)
	cfg := e.cfg
	cfg.Pool = netip.MustParsePrefix("10.201.0.0/19") // two /20 blocks
	var ms []*Manager
	for i := range 2 {
		c := cfg
		c.Instance = InstanceID(fmt.Sprintf("%sex%d", testPrefix, i))
		m, err := New(c)
		must(t, err)
		t.Cleanup(func() { m.Close() })
		ms = append(ms, m)
	}
	if ms[0].Block() == ms[1].Block() {
		t.Fatalf("two instances got %v", ms[0].Block())
	}
	c := cfg
	c.Instance = InstanceID(testPrefix + "ex-third")
	c.Owner = "/srv/third"
	if m, err := New(c); err == nil {
		m.Close()
		t.Fatal("a third instance got a block of a two-block pool")
	} else if !strings.Contains(err.Error(), "no free block") || !strings.Contains(err.Error(), ms[0].Instance()) || !strings.Contains(err.Error(), ms[1].Instance()) {
		t.Fatalf("refusal does not name the holders: %v", err)
	}
	info, err := Describe(c)
	must(t, err)
	if info.Running || info.Block.IsValid() || !strings.Contains(info.Problem, "no free block") {
		t.Fatalf("Describe of the third: %+v", info)
	}

	// The host itself uses the second block: a new instance skips it.
	must(t, ms[1].Close())
	h := handleFor(t, e.hostNS)
	up, err := h.LinkByName("uplink")
	must(t, err)
	must(t, h.AddrAdd(up, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(ms[1].Block().Addr().Next(), 24))}))
	if m, err := New(c); err == nil {
		m.Close()
		t.Fatal("an instance claimed a block the host's uplink is in")
	} else if !strings.Contains(err.Error(), "uplink") {
		t.Fatalf("refusal does not say why: %v", err)
	}
}

func TestInstanceNames(t *testing.T) {
	a, b := InstanceID("/var/lib/execlaw"), InstanceID("/var/lib/execlaw2")
	if a == b || a != InstanceID("/var/lib/execlaw/") || validInstance(a) != nil {
		t.Fatalf("InstanceID: %q %q", a, b)
	}
	dir := t.TempDir()
	must(t, os.Symlink(dir, dir+"-link"))
	t.Cleanup(func() { os.Remove(dir + "-link") })
	if InstanceID(dir) != InstanceID(dir+"-link") {
		t.Error("a symlinked data directory is another instance")
	}
	for _, bad := range []string{"", "abc", "ABCDEF", "3fa2c1x", "3fa2cg"} {
		if validInstance(bad) == nil {
			t.Errorf("instance %q accepted", bad)
		}
	}
	// The longest name fits IFNAMSIZ, and names are recognised exactly.
	long := hostLinkName("3fa2c1", 1<<(slotBits-claimBits)-1)
	if len(long) > unix.IFNAMSIZ-1 || !isSessionLink(long) {
		t.Fatalf("link name %q", long)
	}
	for _, n := range []string{"xlh0", "xl3fa2c1", "xl3fa2c1-", "xl3fa2c1-1a", "xl3fa2cg-1", "eth0", "xl3fa2c10-1"} {
		if isSessionLink(n) {
			t.Errorf("%q taken for a session link", n)
		}
	}
}

func TestBlocksOrder(t *testing.T) {
	bs := blocks(DefaultPool, "3fa2c1")
	if len(bs) != 16 {
		t.Fatalf("%d blocks", len(bs))
	}
	seen := map[netip.Prefix]bool{}
	for _, b := range bs {
		if b.Bits() != claimBits || !DefaultPool.Contains(b.Addr()) || seen[b] {
			t.Fatalf("bad block list %v", bs)
		}
		seen[b] = true
	}
	if fmt.Sprint(bs) != fmt.Sprint(blocks(DefaultPool, "3fa2c1")) {
		t.Fatal("block order not stable")
	}
	if s := blocks(netip.MustParsePrefix("10.201.0.0/24"), "3fa2c1"); len(s) != 1 || s[0] != netip.MustParsePrefix("10.201.0.0/24") {
		t.Fatalf("small pool: %v", s)
	}
	// A live claim of another size (another pool setting) still excludes
	// the blocks it overlaps.
	live := []ClaimInfo{{Instance: "aaaaaa", Block: netip.MustParsePrefix("10.201.0.0/17")}}
	got, err := pickBlock(DefaultPool, "3fa2c1", live, &hostUse{names: map[int]string{}, ours: hostLinkPrefix("3fa2c1")})
	must(t, err)
	if got.Overlaps(live[0].Block) {
		t.Fatalf("picked %v inside a live claim", got)
	}
}

// TestClaimDiesWithProcess: a server killed with SIGKILL (a real process,
// not a simulated crash) gives up its claim with its life, so the same
// instance starts again at once, gets the same block, and sweeps what the
// dead one left; nothing had to be cleaned up by hand.
func TestClaimDiesWithProcess(t *testing.T) {
	e := newTestEnv(t)
	cfg := e.cfg
	cfg.Pool = DefaultPool
	cmd := exec.Command(os.Args[0], "-test.run=^TestClaimHolderHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "EXECLAW_TEST_CLAIM_HOLDER="+strings.Join([]string{cfg.HostNSPath, cfg.NetNSPrefix, cfg.Instance}, ","))
	out, err := cmd.StdoutPipe()
	must(t, err)
	cmd.Stderr = os.Stderr
	must(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// The helper prints its block once it holds it and has a session.
	var block netip.Prefix
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if b, ok := strings.CutPrefix(sc.Text(), "holding "); ok {
			block = netip.MustParsePrefix(b)
			break
		}
	}
	if !block.IsValid() {
		t.Fatalf("helper exited without holding a block: %v", cmd.Wait())
	}
	info, err := Describe(cfg)
	must(t, err)
	if !info.Running || info.Holder == nil || info.Holder.PID != cmd.Process.Pid || info.Block != block {
		t.Fatalf("Describe while the helper runs: %+v", info)
	}
	if m, err := New(cfg); err == nil {
		m.Close()
		t.Fatal("the same instance started beside a live one")
	}

	must(t, cmd.Process.Kill())
	cmd.Wait()
	m, err := New(cfg)
	must(t, err)
	t.Cleanup(func() { m.Close() })
	if m.Block() != block {
		t.Errorf("after the crash the instance got %v, had %v", m.Block(), block)
	}
	if links, _, _, nss := leftovers(t, e); len(links) != 1 || len(nss) != 1 {
		t.Fatalf("the killed helper left %v, %v; want its session", links, nss)
	}
	must(t, m.Sweep(context.Background()))
	assertClean(t, e)
}

// TestClaimHolderHelper is TestClaimDiesWithProcess's child: it holds a
// claim and a session until it is killed.
func TestClaimHolderHelper(t *testing.T) {
	env := os.Getenv("EXECLAW_TEST_CLAIM_HOLDER")
	if env == "" {
		t.Skip("helper process of TestClaimDiesWithProcess")
	}
	f := strings.Split(env, ",")
	m, err := New(Config{HostNSPath: f[0], NetNSPrefix: f[1], Instance: f[2], DNS: []netip.Addr{netip.MustParseAddr("192.0.2.53")}})
	must(t, err)
	_, err = m.Setup(context.Background(), "s_helper")
	must(t, err)
	fmt.Printf("holding %v\n", m.Block())
	select {} // until SIGKILL
}
