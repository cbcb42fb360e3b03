package firecracker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/image"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/vm"
)

// fakeEnv is one test's fake Firecracker installation and guest image.
type fakeEnv struct {
	t      *testing.T
	dir    string
	cfg    fakeConfig
	bin    string // "firecracker", the test binary under that name
	jailer string
	image  image.Boot
}

func newFake(t *testing.T, cfg fakeConfig) *fakeEnv {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &fakeEnv{t: t, dir: dir, bin: filepath.Join(dir, "firecracker"), jailer: filepath.Join(dir, "jailer")}
	for _, l := range []string{f.bin, f.jailer} {
		if err := os.Symlink(self, l); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "image")
	if err := os.Mkdir(img, 0o755); err != nil {
		t.Fatal(err)
	}
	f.image = image.Boot{
		Kernel:    filepath.Join(img, "bzImage"),
		KernelELF: filepath.Join(img, "vmlinux"),
		Initramfs: filepath.Join(img, "initramfs.cpio.gz"),
		Rootfs:    filepath.Join(img, "rootfs.ext4"),
	}
	for _, p := range []string{f.image.Kernel, f.image.KernelELF, f.image.Initramfs, f.image.Rootfs} {
		if err := os.WriteFile(p, []byte("image file "+filepath.Base(p)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Record = filepath.Join(dir, "requests.jsonl")
	cfg.PidFile = filepath.Join(dir, "pid")
	cfg.JailerRecord = filepath.Join(dir, "jailer-args.json")
	cfg.Workspace = filepath.Join(dir, "workspace")
	cfg.InitRecord = filepath.Join(dir, "init.jsonl")
	if err := os.Mkdir(cfg.Workspace, 0o755); err != nil {
		t.Fatal(err)
	}
	f.setConfig(cfg)
	return f
}

// setConfig writes the fake's configuration, which the fakes started from
// then on read.
func (f *fakeEnv) setConfig(cfg fakeConfig) {
	f.t.Helper()
	f.cfg = cfg
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(f.dir, "fake.json"), b, 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// testTimeouts keep failures quick; the fake answers in milliseconds.
var testTimeouts = timeouts{
	apiReady:   10 * time.Second,
	poll:       5 * time.Millisecond,
	probe:      2 * time.Second,
	shutdown:   3 * time.Second,
	ctrlAltDel: 3 * time.Second,
	kill:       5 * time.Second,
	teardown:   5 * time.Second,
}

func (f *fakeEnv) driver(mod func(*Config)) *Driver {
	f.t.Helper()
	cfg := Config{Binary: f.bin, Image: f.image, BootTimeout: 20 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	d.t = testTimeouts
	return d
}

func (f *fakeEnv) requests() []recordedRequest {
	f.t.Helper()
	fh, err := os.Open(f.cfg.Record)
	if err != nil {
		f.t.Fatal(err)
	}
	defer fh.Close()
	var out []recordedRequest
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		var r recordedRequest
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			f.t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// pid is the fake VMM's pid, as it wrote it.
func (f *fakeEnv) pid() int {
	f.t.Helper()
	b, err := os.ReadFile(f.cfg.PidFile)
	if err != nil {
		f.t.Fatalf("the fake firecracker never ran: %v", err)
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		f.t.Fatal(err)
	}
	return pid
}

// assertGone checks that pid no longer exists (the driver reaped it).
func assertGone(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("firecracker pid %d still exists (kill 0: %v)", pid, err)
	}
}

func newSpec(t *testing.T, network string) (sandbox.Spec, *[]string) {
	dir := filepath.Join(t.TempDir(), "session")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	phases := new([]string)
	return sandbox.Spec{
		SessionID: "s-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")),
		Dir:       dir, VCPUs: 2, MemoryMiB: 256, Network: network,
		Progress: func(p string) { mu.Lock(); *phases = append(*phases, p); mu.Unlock() },
	}, phases
}

// dirEntries lists what is left in a directory.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// fakeNet is a NetworkProvider that counts calls; Start is a plain Start.
type fakeNet struct {
	mu                      sync.Mutex
	setups, teardowns, runs int
	setupErr                error
}

type fakeAtt struct{ n *fakeNet }

func (n *fakeNet) Setup(ctx context.Context, sessionID string) (NetAttachment, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.setupErr != nil {
		return nil, n.setupErr
	}
	n.setups++
	return fakeAtt{n}, nil
}

func (n *fakeNet) Teardown(ctx context.Context, a NetAttachment) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.teardowns++
	return nil
}

func (n *fakeNet) counts() (setups, teardowns, runs int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.setups, n.teardowns, n.runs
}

func (a fakeAtt) TapName() string       { return "fc-tap0" }
func (a fakeAtt) MAC() string           { return "02:fc:00:00:00:01" }
func (a fakeAtt) GuestIP() netip.Prefix { return netip.MustParsePrefix("10.200.0.2/30") }
func (a fakeAtt) Gateway() netip.Addr   { return netip.MustParseAddr("10.200.0.1") }
func (a fakeAtt) DNS() []netip.Addr     { return []netip.Addr{netip.MustParseAddr("1.1.1.1")} }
func (a fakeAtt) Start(cmd *exec.Cmd) error {
	a.n.mu.Lock()
	a.n.runs++
	a.n.mu.Unlock()
	return cmd.Start()
}

func waitDone(t *testing.T, sb *Sandbox) {
	t.Helper()
	select {
	case <-sb.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("Done was not closed")
	}
}

// startSandbox starts a sandbox for spec and fails the test if it does not.
func startSandbox(t *testing.T, d *Driver, spec sandbox.Spec) *Sandbox {
	t.Helper()
	s, err := d.Start(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	return s.(*Sandbox)
}

// startStopped starts a sandbox for spec and stops it again, failing the
// test if either does not succeed: the session directory then holds what a
// stopped session leaves.
func startStopped(t *testing.T, d *Driver, spec sandbox.Spec) *Sandbox {
	t.Helper()
	sb := startSandbox(t, d, spec)
	if err := sb.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	return sb
}

func TestStartExecStop(t *testing.T) {
	f := newFake(t, fakeConfig{BootConnects: 3})
	d := f.driver(nil)
	spec, phases := newSpec(t, "none")
	ctx := t.Context()

	sb := startSandbox(t, d, spec)
	pid := f.pid()
	if sb.pid != pid {
		t.Errorf("sandbox pid %d, fake wrote %d", sb.pid, pid)
	}
	if want := []string{"vmm", "configure", "kernel", "guest-api"}; !slices.Equal(*phases, want) {
		t.Errorf("phases %v, want %v", *phases, want)
	}
	if sb.Workspace() != "/workspace" {
		t.Errorf("workspace %q", sb.Workspace())
	}
	info, err := sb.Instance(ctx)
	if err != nil || info.State != "Running" {
		t.Errorf("instance %+v, %v", info, err)
	}

	// A command, through the guest client, over hybrid vsock.
	var out strings.Builder
	res, err := sb.Guest().Exec(ctx, guest.ExecRequest{Argv: []string{"sh", "-c", "echo hello from the guest; exit 3"}}, func(_ string, b []byte) { out.Write(b) })
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 3 || out.String() != "hello from the guest\n" {
		t.Errorf("exec: code %d output %q", res.ExitCode, out.String())
	}
	if err := sb.Guest().Write(ctx, guest.WriteRequest{Path: "note.txt", Data: []byte("hi")}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(f.cfg.Workspace, "note.txt")); err != nil || string(b) != "hi" {
		t.Errorf("file written through the guest: %q, %v", b, err)
	}

	for _, name := range []string{apiSockName, vsockSockName, diskName, logName} {
		if _, err := os.Stat(filepath.Join(spec.Dir, name)); err != nil {
			t.Errorf("while running: %v", err)
		}
	}
	if fi, err := os.Stat(filepath.Join(spec.Dir, diskName)); err == nil {
		if used, _ := vm.DiskUsage(filepath.Join(spec.Dir, diskName)); used >= fi.Size()/10 {
			t.Errorf("the writable disk is not sparse: %d of %d bytes used", used, fi.Size())
		}
	}

	// Stop from two goroutines at once; both succeed.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { errs[i] = sb.Stop(ctx) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Errorf("stop: %v", err)
		}
	}
	if err := sb.Stop(ctx); err != nil {
		t.Errorf("third stop: %v", err)
	}
	waitDone(t, sb)
	if err := sb.ExitError(); err != nil {
		t.Errorf("ExitError after Stop: %v", err)
	}
	assertGone(t, pid)
	// The guest's own shutdown ended it: no Ctrl+Alt+Del was needed.
	for _, r := range f.requests() {
		if r.Path == "/actions" && strings.Contains(string(r.Body), "SendCtrlAltDel") {
			t.Error("Stop sent SendCtrlAltDel although the guest shut down")
		}
	}
	// Sockets gone; the disk and log stay for the session manager.
	if left := dirEntries(t, spec.Dir); !slices.Equal(left, []string{logName, diskName}) {
		t.Errorf("left after Stop: %v", left)
	}
}

func TestRequestsMatchAPISpec(t *testing.T) {
	doc := spec(t)
	// The guest ignores Shutdown, so Stop also sends SendCtrlAltDel.
	f := newFake(t, fakeConfig{IgnoreShutdown: true})
	n := &fakeNet{}
	d := f.driver(func(c *Config) { c.Network = n })
	d.t.shutdown = 300 * time.Millisecond
	spec, _ := newSpec(t, "full")

	startStopped(t, d, spec)
	reqs := f.requests()
	seen := map[string]bool{}
	for _, r := range reqs {
		key := r.Method + " " + r.Path
		if err := doc.validateRequest(r.Method, r.Path, r.Body); err != nil {
			t.Errorf("request does not match the API description: %v\nbody: %s", err, r.Body)
		}
		var body map[string]any
		_ = json.Unmarshal(r.Body, &body)
		if a, ok := body["action_type"].(string); ok {
			key += " " + a
		}
		seen[key] = true
	}
	for _, want := range []string{
		"GET /", "PUT /machine-config", "PUT /boot-source", "PUT /drives/rootfs", "PUT /drives/rw",
		"PUT /network-interfaces/eth0", "PUT /vsock", "PUT /entropy",
		"PUT /actions InstanceStart", "PUT /actions SendCtrlAltDel",
	} {
		if !seen[want] {
			t.Errorf("no %s request was sent", want)
		}
	}

	// What the bodies say, beyond being well-formed.
	bodies := map[string]json.RawMessage{}
	for _, r := range reqs {
		bodies[r.Path] = r.Body
	}
	var mc MachineConfig
	_ = json.Unmarshal(bodies["/machine-config"], &mc)
	if mc != (MachineConfig{VCPUCount: 2, MemSizeMiB: 256, SMT: false}) || !strings.Contains(string(bodies["/machine-config"]), `"smt":false`) {
		t.Errorf("machine-config %s", bodies["/machine-config"])
	}
	var bs BootSource
	_ = json.Unmarshal(bodies["/boot-source"], &bs)
	if bs.KernelImagePath != f.image.KernelELF || bs.InitrdPath != f.image.Initramfs {
		t.Errorf("boot source %+v", bs)
	}
	if !strings.HasPrefix(bs.BootArgs, "console=ttyS0 reboot=k panic=1 pci=off quiet ") {
		t.Errorf("boot args %q", bs.BootArgs)
	}
	bc, err := guest.ParseBootConfig(bs.BootArgs)
	if err != nil {
		t.Fatalf("the guest cannot read the boot args %q: %v", bs.BootArgs, err)
	}
	if bc.Channel != "vsock:1024" || bc.IP.String() != "10.200.0.2/30" || bc.Gateway.String() != "10.200.0.1" ||
		len(bc.DNS) != 1 || bc.DNS[0].String() != "1.1.1.1" {
		t.Errorf("boot config %+v", bc)
	}
	var root, rw Drive
	_ = json.Unmarshal(bodies["/drives/rootfs"], &root)
	_ = json.Unmarshal(bodies["/drives/rw"], &rw)
	if root != (Drive{DriveID: "rootfs", PathOnHost: f.image.Rootfs, IsRootDevice: false, IsReadOnly: true}) {
		t.Errorf("rootfs drive %+v", root)
	}
	if rw != (Drive{DriveID: "rw", PathOnHost: filepath.Join(spec.Dir, diskName), IsRootDevice: false, IsReadOnly: false}) {
		t.Errorf("rw drive %+v", rw)
	}
	var ni NetworkInterface
	_ = json.Unmarshal(bodies["/network-interfaces/eth0"], &ni)
	if ni != (NetworkInterface{IfaceID: "eth0", HostDevName: "fc-tap0", GuestMAC: "02:fc:00:00:00:01"}) {
		t.Errorf("network interface %+v", ni)
	}
	var vs Vsock
	_ = json.Unmarshal(bodies["/vsock"], &vs)
	if vs.GuestCID < 3 || vs.UDSPath != filepath.Join(spec.Dir, vsockSockName) {
		t.Errorf("vsock %+v", vs)
	}
	if setups, teardowns, runs := n.counts(); setups != 1 || teardowns != 1 || runs != 1 {
		t.Errorf("network: %d setups, %d teardowns, %d starts in the namespace; want 1 each", setups, teardowns, runs)
	}
}

func TestFakeAnswersMatchAPISpec(t *testing.T) {
	// Keeps the fake honest: its GET / answer is a valid InstanceInfo, and
	// its faults are valid Errors.
	doc := spec(t)
	b, _ := json.Marshal(InstanceInfo{AppName: "Firecracker", ID: "fake", State: "Running", VMMVersion: "1.16.1"})
	if err := doc.validateDefinition("InstanceInfo", b); err != nil {
		t.Error(err)
	}
	if err := doc.validateDefinition("Error", []byte(`{"fault_message":"x"}`)); err != nil {
		t.Error(err)
	}
	b, _ = json.Marshal(InstanceInfo{AppName: "Firecracker", ID: "fake", State: "Paused", VMMVersion: "1.16.1"})
	if err := doc.validateDefinition("InstanceInfo", b); err != nil {
		t.Error(err)
	}
	b, _ = json.Marshal(firecrackerVersion{FirecrackerVersion: "1.16.1"})
	if err := doc.validateDefinition("FirecrackerVersion", b); err != nil {
		t.Error(err)
	}
	if err := doc.validateRequest("GET", "/version", nil); err != nil {
		t.Error(err)
	}
}

func TestCrash(t *testing.T) {
	f := newFake(t, fakeConfig{})
	n := &fakeNet{}
	d := f.driver(func(c *Config) { c.Network = n })
	spec, _ := newSpec(t, "full")
	sb := startSandbox(t, d, spec)
	if sb.ExitError() != nil {
		t.Error("ExitError before exit")
	}
	if err := syscall.Kill(f.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, sb)
	err := sb.ExitError()
	if err == nil {
		t.Fatal("no ExitError after a crash")
	}
	for _, want := range []string{"exited on its own", "signal: killed", "fake guest booting"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ExitError %q lacks %q", err, want)
		}
	}
	// Cleanup ran before Done: sockets gone, network torn down once.
	if left := dirEntries(t, spec.Dir); !slices.Equal(left, []string{logName, diskName}) {
		t.Errorf("left after the crash: %v", left)
	}
	if _, teardowns, _ := n.counts(); teardowns != 1 {
		t.Errorf("%d teardowns after the crash", teardowns)
	}
	if err := sb.Stop(t.Context()); err != nil {
		t.Errorf("Stop after a crash: %v", err)
	}
	if _, teardowns, _ := n.counts(); teardowns != 1 {
		t.Errorf("%d teardowns after crash and Stop", teardowns)
	}
}

// startFails runs a Start that must fail and checks nothing is left.
func startFails(t *testing.T, f *fakeEnv, d *Driver, ctx context.Context, spec sandbox.Spec, wants ...string) error {
	t.Helper()
	start := time.Now()
	s, err := d.Start(ctx, spec)
	if err == nil {
		s.Stop(context.Background())
		t.Fatal("Start succeeded")
	}
	t.Logf("Start failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	if _, err := os.Stat(f.cfg.PidFile); err == nil {
		assertGone(t, f.pid())
	}
	if left := dirEntries(t, spec.Dir); len(left) != 0 {
		t.Errorf("left after a failed Start: %v", left)
	}
	return err
}

func TestStartAPIFault(t *testing.T) {
	f := newFake(t, fakeConfig{FaultPath: "/drives/rw", Fault: "Unable to create the block device: Permission denied"})
	n := &fakeNet{}
	d := f.driver(func(c *Config) { c.Network = n })
	spec, _ := newSpec(t, "full")
	err := startFails(t, f, d, t.Context(), spec,
		"PUT /drives/rw", "400", "Unable to create the block device: Permission denied")
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != 400 {
		t.Errorf("error is not an *APIError with status 400: %#v", err)
	}
	if setups, teardowns, _ := n.counts(); setups != 1 || teardowns != 1 {
		t.Errorf("network: %d setups, %d teardowns", setups, teardowns)
	}
}

func TestStartBinaryExits(t *testing.T) {
	f := newFake(t, fakeConfig{ExitAtStart: true})
	startFails(t, f, f.driver(nil), t.Context(), must(newSpec(t, "none")),
		"exited before its API answered", "exit status 1", "KVM is not available on this host")
}

func TestStartBootTimeout(t *testing.T) {
	f := newFake(t, fakeConfig{NoGuest: true})
	d := f.driver(func(c *Config) { c.BootTimeout = 300 * time.Millisecond })
	startFails(t, f, d, t.Context(), must(newSpec(t, "none")),
		"did not answer within 300ms", "nothing in the guest listens")
}

func TestStartCancelled(t *testing.T) {
	f := newFake(t, fakeConfig{NoGuest: true})
	n := &fakeNet{}
	d := f.driver(func(c *Config) { c.Network = n })
	spec, _ := newSpec(t, "full")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	spec.Progress = func(p string) {
		if p == "kernel" {
			cancel()
		}
	}
	err := startFails(t, f, d, ctx, spec)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error does not wrap context.Canceled: %v", err)
	}
	if setups, teardowns, _ := n.counts(); setups != 1 || teardowns != 1 {
		t.Errorf("network: %d setups, %d teardowns", setups, teardowns)
	}
}

func TestStartNetworkSetupFails(t *testing.T) {
	f := newFake(t, fakeConfig{})
	n := &fakeNet{setupErr: errors.New("no more addresses")}
	d := f.driver(func(c *Config) { c.Network = n })
	startFails(t, f, d, t.Context(), must(newSpec(t, "full")), "network setup: no more addresses")
	if _, teardowns, _ := n.counts(); teardowns != 0 {
		t.Errorf("%d teardowns without a setup", teardowns)
	}
}

func TestStopEscalatesToKill(t *testing.T) {
	f := newFake(t, fakeConfig{IgnoreShutdown: true, IgnoreCtrlAltDel: true})
	d := f.driver(nil)
	d.t.shutdown, d.t.ctrlAltDel = 200*time.Millisecond, 200*time.Millisecond
	spec, _ := newSpec(t, "none")
	s, err := d.Start(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Logf("Stop took %v", time.Since(start).Round(time.Millisecond))
	assertGone(t, f.pid())
	if s.ExitError() != nil {
		t.Errorf("ExitError after Stop: %v", s.ExitError())
	}
	if left := dirEntries(t, spec.Dir); !slices.Equal(left, []string{logName, diskName}) {
		t.Errorf("left after Stop: %v", left)
	}
}

func TestStopContextBoundsTheWait(t *testing.T) {
	f := newFake(t, fakeConfig{IgnoreShutdown: true, IgnoreCtrlAltDel: true})
	d := f.driver(nil)
	d.t.shutdown, d.t.ctrlAltDel = 2*time.Second, 200*time.Millisecond
	s, err := d.Start(t.Context(), must(newSpec(t, "none")))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := s.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop with a short context: %v", err)
	}
	// The shutdown carries on; a second Stop waits for the same one.
	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	assertGone(t, f.pid())
}

func TestLongSessionDir(t *testing.T) {
	f := newFake(t, fakeConfig{})
	d := f.driver(nil)
	spec, _ := newSpec(t, "none")
	spec.Dir = filepath.Join(spec.Dir, strings.Repeat("d", 120))
	if err := os.Mkdir(spec.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := d.Start(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := s.Guest().Exec(t.Context(), guest.ExecRequest{Argv: []string{"true"}}, nil); err != nil || res.ExitCode != 0 {
		t.Errorf("exec: %+v, %v", res, err)
	}
	for _, r := range f.requests() {
		if r.Path == "/vsock" && !strings.Contains(string(r.Body), `"uds_path":"v.sock"`) {
			t.Errorf("a long directory should give Firecracker a relative socket path: %s", r.Body)
		}
	}
	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if left := dirEntries(t, spec.Dir); !slices.Equal(left, []string{logName, diskName}) {
		t.Errorf("left after Stop: %v", left)
	}
}

func TestJailer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the jailer needs root")
	}
	f := newFake(t, fakeConfig{})
	const uid, gid = 4242, 4343
	d := f.driver(func(c *Config) {
		c.JailerBinary, c.JailerUID, c.JailerGID = f.jailer, uid, gid
		c.JailerArgs = []string{"--cgroup-version", "2"}
	})
	spec, _ := newSpec(t, "none")
	sb := startSandbox(t, d, spec)
	id := vmID(spec.SessionID)
	base := filepath.Join(spec.Dir, "jail")
	root := filepath.Join(base, "firecracker", id, "root")

	var args []string
	b, _ := os.ReadFile(f.cfg.JailerRecord)
	_ = json.Unmarshal(b, &args)
	want := []string{"--id", id, "--exec-file", f.bin, "--uid", "4242", "--gid", "4343",
		"--chroot-base-dir", base, "--cgroup-version", "2", "--", "--api-sock", "/fc.sock"}
	if !slices.Equal(args, want) {
		t.Errorf("jailer args\n%q\nwant\n%q", args, want)
	}
	// The base rootfs is the same inode (a hard link), not a copy.
	same := func(a, b string) bool {
		fa, err1 := os.Stat(a)
		fb, err2 := os.Stat(b)
		return err1 == nil && err2 == nil && os.SameFile(fa, fb)
	}
	if !same(f.image.Rootfs, filepath.Join(root, "rootfs.ext4")) {
		t.Error("the jail's rootfs is not a hard link of the base image")
	}
	if !same(filepath.Join(spec.Dir, diskName), filepath.Join(root, "rw.ext4")) {
		t.Error("the jail's rw disk is not the session's disk")
	}
	if fi, err := os.Stat(filepath.Join(spec.Dir, diskName)); err == nil {
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("rw disk owned by %d:%d, want %d:%d", st.Uid, st.Gid, uid, gid)
		}
	}
	if fi, _ := os.Stat(f.image.Rootfs); fi.Sys().(*syscall.Stat_t).Uid == uid {
		t.Error("the shared rootfs was chowned to the jail's user")
	}
	paths := map[string]string{}
	for _, r := range f.requests() {
		paths[r.Path] = string(r.Body)
	}
	for p, want := range map[string]string{
		"/boot-source":   `"kernel_image_path":"/vmlinux","initrd_path":"/initrd"`,
		"/drives/rootfs": `"path_on_host":"/rootfs.ext4"`,
		"/drives/rw":     `"path_on_host":"/rw.ext4"`,
		"/vsock":         `"uds_path":"/v.sock"`,
	} {
		if !strings.Contains(paths[p], want) {
			t.Errorf("%s: %s lacks %s", p, paths[p], want)
		}
	}
	if res, err := sb.Guest().Exec(t.Context(), guest.ExecRequest{Argv: []string{"true"}}, nil); err != nil || res.ExitCode != 0 {
		t.Errorf("exec: %+v, %v", res, err)
	}
	if err := sb.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if left := dirEntries(t, spec.Dir); !slices.Equal(left, []string{logName, diskName}) {
		t.Errorf("left after Stop: %v", left)
	}
	if _, err := os.Stat(f.image.Rootfs); err != nil {
		t.Errorf("removing the jail harmed the base image: %v", err)
	}
}

func TestJailerRefusesWritableSharedImage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the jailer needs root")
	}
	f := newFake(t, fakeConfig{})
	if err := os.Chmod(f.image.Rootfs, 0o666); err != nil {
		t.Fatal(err)
	}
	d := f.driver(func(c *Config) { c.JailerBinary, c.JailerUID, c.JailerGID = f.jailer, 4242, 4343 })
	startFails(t, f, d, t.Context(), must(newSpec(t, "none")), "writable by the jail's uid 4242")
}

func TestNewRejects(t *testing.T) {
	f := newFake(t, fakeConfig{})
	vmm := filepath.Join(f.dir, "vmm")
	if err := os.Symlink(f.bin, vmm); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]Config{
		"no binary":       {Image: f.image},
		"missing binary":  {Binary: filepath.Join(f.dir, "nope"), Image: f.image},
		"no vmlinux":      {Binary: f.bin, Image: image.Boot{Kernel: f.image.Kernel, Initramfs: f.image.Initramfs, Rootfs: f.image.Rootfs}},
		"jailer as root":  {Binary: f.bin, JailerBinary: f.jailer, Image: f.image},
		"jailer bad name": {Binary: vmm, JailerBinary: f.jailer, JailerUID: 1, JailerGID: 1, Image: f.image},
		"not executable":  {Binary: f.image.KernelELF, Image: f.image},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted %+v", name, c)
		}
	}
	d := f.driver(nil)
	if d.Name() != "firecracker" || !d.Isolated() {
		t.Errorf("name %q isolated %v", d.Name(), d.Isolated())
	}
	for _, sp := range []sandbox.Spec{{}, {Dir: t.TempDir(), Network: "bridge"}, {Dir: t.TempDir(), VCPUs: 33}} {
		if _, err := d.Start(t.Context(), sp); err == nil {
			t.Errorf("Start accepted %+v", sp)
		}
	}
}

func TestVMID(t *testing.T) {
	for in, want := range map[string]string{
		"abc-123":  "abc-123",
		"0f8e7c6a": "0f8e7c6a",
	} {
		if got := vmID(in); got != want {
			t.Errorf("vmID(%q) = %q, want %q", in, got, want)
		}
	}
	seen := map[string]string{}
	for _, in := range []string{"", "-x", "a_b", "a.b", "a/b", strings.Repeat("x", 65), strings.Repeat("x", 66), "a b"} {
		got := vmID(in)
		if len(got) == 0 || len(got) > 64 || got[0] == '-' || strings.Trim(got, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
			t.Errorf("vmID(%q) = %q is not a valid jailer id", in, got)
		}
		if prev, ok := seen[got]; ok {
			t.Errorf("vmID(%q) = vmID(%q) = %q", in, prev, got)
		}
		seen[got] = in
	}
}

func must[T, U any](v T, _ U) T { return v }
