package firecracker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/execlaw/execlaw/internal/guest"
)

// The test binary doubles as a fake Firecracker and a fake jailer: the tests
// symlink it as "firecracker" and "jailer", and TestMain dispatches on the
// name it was run by. No environment is needed (the driver gives Firecracker
// an empty one): the fake reads fake.json next to the name it was run by.
//
// The fake Firecracker serves the API on --api-sock, records every request,
// answers like Firecracker does (204, or 400 with a fault_message), and on
// InstanceStart opens the vsock uds_path and implements the hybrid vsock
// handshake in front of a real guest.Server, so the driver's Health and Exec
// calls go through the same CONNECT/OK path as with a real VM.
//
// Snapshots behave as docs/snapshotting/snapshot-support.md says: PATCH /vm
// pauses and resumes a booted VM (a paused guest answers no vsock CONNECT
// until resumed); PUT /snapshot/create needs a paused VM, resets the vsock
// connections and writes the two files (the fake's own state as JSON, and
// random "memory" whose hash the state records); PUT /snapshot/load is taken
// only by a VMM that nothing was configured on, checks the state file, the
// memory against its hash, the drives, the network overrides and the vsock
// socket, answers a 400 and ends itself when anything is wrong, and
// otherwise runs the guest (resume_vm) or keeps it paused. A loaded VMM holds
// its memory file open, as Firecracker's mapping does, and refuses to create
// a snapshot over it (Firecracker would truncate its own guest's memory).

func TestMain(m *testing.M) {
	switch filepath.Base(os.Args[0]) {
	case "firecracker":
		os.Exit(fakeFirecracker(os.Args[1:]))
	case "jailer":
		os.Exit(fakeJailer(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeConfig steers the fake (fake.json beside the fake binaries).
type fakeConfig struct {
	Record       string `json:"record"`       // JSON lines of recorded API requests
	PidFile      string `json:"pidFile"`      // the fake writes its pid here
	JailerRecord string `json:"jailerRecord"` // the fake jailer writes its argv here
	Workspace    string `json:"workspace"`    // the stand-in guest's workspace

	InitRecord string `json:"initRecord"` // JSON lines of the guest Init requests
	Version    string `json:"version"`    // the VMM's version; "" is 1.16.1

	FaultPath        string `json:"faultPath"` // PUTs and PATCHes to this path get a 400 with Fault
	FaultBody        string `json:"faultBody"` // ... when their body contains this
	Fault            string `json:"fault"`
	CreatePartial    bool   `json:"createPartial"`    // a faulted snapshot/create writes part of its files first
	ExitAtStart      bool   `json:"exitAtStart"`      // exit 1 at once, with a message on stderr
	NoGuest          bool   `json:"noGuest"`          // nothing ever listens on the guest's port
	BootConnects     int    `json:"bootConnects"`     // refuse this many CONNECTs first (a booting guest)
	IgnoreShutdown   bool   `json:"ignoreShutdown"`   // the guest answers Shutdown but keeps running
	IgnoreCtrlAltDel bool   `json:"ignoreCtrlAltDel"` // SendCtrlAltDel does nothing
}

type recordedRequest struct {
	PID    int             `json:"pid"` // of the fake that answered
	Method string          `json:"method"`
	Path   string          `json:"path"`
	Body   json.RawMessage `json:"body,omitempty"`
}

func readFakeConfig() (fakeConfig, error) {
	var c fakeConfig
	b, err := os.ReadFile(filepath.Join(filepath.Dir(os.Args[0]), "fake.json"))
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	return c, err
}

const fakeJailRootEnv = "FAKE_JAIL_ROOT"

func fakeJailer(args []string) int {
	cfg, err := readFakeConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake jailer:", err)
		return 2
	}
	if cfg.JailerRecord != "" {
		b, _ := json.Marshal(args)
		_ = os.WriteFile(cfg.JailerRecord, b, 0o600)
	}
	fs := flag.NewFlagSet("jailer", flag.ContinueOnError)
	id := fs.String("id", "", "")
	execFile := fs.String("exec-file", "", "")
	uid := fs.Int("uid", -1, "")
	gid := fs.Int("gid", -1, "")
	base := fs.String("chroot-base-dir", "/srv/jailer", "")
	cgVersion := fs.String("cgroup-version", "1", "")
	parent := fs.String("parent-cgroup", "", "")
	var cgroups []string
	fs.Func("cgroup", "", func(v string) error { cgroups = append(cgroups, v); return nil })
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *id == "" || *uid < 0 || *gid < 0 || !strings.Contains(filepath.Base(*execFile), "firecracker") {
		fmt.Fprintln(os.Stderr, "fake jailer: bad arguments", args)
		return 2
	}
	if len(cgroups) > 0 {
		if *parent == "" {
			*parent = filepath.Base(*execFile)
		}
		if err := fakeJailerCgroups(*cgVersion, *parent, *id, cgroups); err != nil {
			fmt.Fprintln(os.Stderr, "fake jailer:", err)
			return 1
		}
	}
	// Like the jailer: the root is <base>/<exec file name>/<id>/root, owned
	// by the jail's user. Unlike it, no chroot and no privilege drop: the
	// fake Firecracker resolves its absolute paths under the root itself.
	root := filepath.Join(*base, filepath.Base(*execFile), *id, "root")
	if err := os.MkdirAll(root, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, "fake jailer:", err)
		return 1
	}
	if err := os.Chown(root, *uid, *gid); err != nil {
		fmt.Fprintln(os.Stderr, "fake jailer:", err)
		return 1
	}
	if err := os.Chdir(root); err != nil {
		fmt.Fprintln(os.Stderr, "fake jailer:", err)
		return 1
	}
	argv := append([]string{*execFile, "--id=" + *id}, fs.Args()...)
	err = syscall.Exec(*execFile, argv, []string{fakeJailRootEnv + "=" + root})
	fmt.Fprintln(os.Stderr, "fake jailer: exec:", err)
	return 1
}

// fakeJailerCgroups does what the jailer's docs (docs/jailer.md, "Jailer
// Operation") say it does with --cgroup: for each controller's mount (from
// /proc/mounts) it creates <mount>/<parent>/<id>, writes each value to its
// file, and then moves itself in.
func fakeJailerCgroups(version, parent, id string, settings []string) error {
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return err
	}
	mountOf := func(ctrl string) string {
		for _, line := range strings.Split(string(mounts), "\n") {
			f := strings.Fields(line)
			if len(f) < 4 {
				continue
			}
			if version == "2" && f[2] == "cgroup2" || version == "1" && f[2] == "cgroup" && slices.Contains(strings.Split(f[3], ","), ctrl) {
				return f[1]
			}
		}
		return ""
	}
	var dirs []string
	for _, s := range settings {
		file, value, ok := strings.Cut(s, "=")
		ctrl, _, _ := strings.Cut(file, ".")
		mnt := mountOf(ctrl)
		if !ok || mnt == "" {
			return fmt.Errorf("--cgroup %s: no hierarchy for %s", s, ctrl)
		}
		dir := filepath.Join(mnt, parent, id)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
			return err
		}
		if !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	// The jailer writes its pid to cgroup v1's "tasks", which moves one
	// thread: the whole jailer, which has no other. The fake is a Go
	// program with several threads, any of which may run the exec (whose
	// cgroup the exec'd process keeps), so it moves them all, through
	// cgroup.procs in either version.
	for _, dir := range dirs {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			return err
		}
	}
	return nil
}

type fakeVMM struct {
	cfg  fakeConfig
	root string // the jail root, or "" (paths are then the host's)

	recMu sync.Mutex

	mu         sync.Mutex
	resumed    *sync.Cond // signalled when the VM resumes
	started    bool       // booted or loaded
	paused     bool
	configured bool // any pre-boot resource was set
	machine    *MachineConfig
	boot       *BootSource
	drives     map[string]Drive
	ifaces     map[string]NetworkInterface
	vsock      *Vsock
	refused    int
	conns      []net.Conn // the guest's vsock connections
	mem        *os.File   // the memory file a loaded snapshot runs on
}

func (v *fakeVMM) version() string {
	if v.cfg.Version != "" {
		return v.cfg.Version
	}
	return "1.16.1"
}

func fakeFirecracker(args []string) int {
	cfg, err := readFakeConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake firecracker:", err)
		return 2
	}
	fs := flag.NewFlagSet("firecracker", flag.ContinueOnError)
	apiSock := fs.String("api-sock", "/run/firecracker.socket", "")
	id := fs.String("id", "anonymous-instance", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if cfg.PidFile != "" {
		_ = os.WriteFile(cfg.PidFile, []byte(strconv.Itoa(os.Getpid())), 0o600)
	}
	fmt.Printf("fake firecracker %s starting\n", *id)
	// SIGUSR1 makes the VMM take a GiB of memory, as a VMM gone wrong would.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		<-usr1
		b := make([]byte, 1<<30)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		fmt.Println("took a GiB")
	}()
	if cfg.ExitAtStart {
		fmt.Fprintln(os.Stderr, "fake firecracker: KVM is not available on this host")
		return 1
	}
	v := &fakeVMM{cfg: cfg, root: os.Getenv(fakeJailRootEnv), drives: map[string]Drive{}, ifaces: map[string]NetworkInterface{}}
	v.resumed = sync.NewCond(&v.mu)
	ln, err := net.Listen("unix", v.sockPath(*apiSock))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake firecracker:", err)
		return 1
	}
	srv := &http.Server{Handler: http.HandlerFunc(v.serveAPI)}
	err = srv.Serve(ln)
	fmt.Fprintln(os.Stderr, "fake firecracker:", err)
	return 1
}

// hostPath maps a path Firecracker was given to the host's view.
func (v *fakeVMM) hostPath(p string) string {
	if v.root != "" && filepath.IsAbs(p) {
		return filepath.Join(v.root, p)
	}
	return p
}

// sockPath is where to bind a socket Firecracker was given: relative to
// the jail root, which is the working directory, as the real jail's paths
// are short whatever the root's host path.
func (v *fakeVMM) sockPath(p string) string {
	if v.root != "" && filepath.IsAbs(p) {
		return "." + p
	}
	return p
}

func (v *fakeVMM) record(r recordedRequest) {
	v.recMu.Lock()
	defer v.recMu.Unlock()
	if v.cfg.Record == "" {
		return
	}
	f, err := os.OpenFile(v.cfg.Record, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	b, _ := json.Marshal(r)
	f.Write(append(b, '\n'))
	f.Close()
}

func fault(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"fault_message": msg})
}

func answer(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (v *fakeVMM) serveAPI(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	rec := recordedRequest{PID: os.Getpid(), Method: r.Method, Path: r.URL.Path}
	if len(body) > 0 {
		rec.Body = body
	}
	v.record(rec)

	if r.Method == http.MethodGet {
		switch r.URL.Path {
		case "/":
			v.mu.Lock()
			state := "Not started"
			if v.paused {
				state = "Paused"
			} else if v.started {
				state = "Running"
			}
			v.mu.Unlock()
			answer(w, InstanceInfo{AppName: "Firecracker", ID: "fake", State: state, VMMVersion: v.version()})
		case "/version":
			answer(w, firecrackerVersion{FirecrackerVersion: v.version()})
		default:
			fault(w, "Invalid request method and/or path")
		}
		return
	}
	if v.cfg.FaultPath == r.URL.Path && strings.Contains(string(body), v.cfg.FaultBody) {
		if r.URL.Path == "/snapshot/create" && v.cfg.CreatePartial {
			var p SnapshotCreateParams
			if json.Unmarshal(body, &p) == nil {
				_ = v.createSnapshot(p, true)
			}
		}
		fault(w, v.cfg.Fault)
		return
	}
	var err error
	switch {
	case r.Method == http.MethodPatch && r.URL.Path == "/vm":
		var b vmStateBody
		if err = json.Unmarshal(body, &b); err == nil {
			err = v.patchVM(b.State)
		}
	case r.Method == http.MethodPut && r.URL.Path == "/snapshot/create":
		var p SnapshotCreateParams
		if err = json.Unmarshal(body, &p); err == nil {
			err = v.createSnapshot(p, false)
		}
	case r.Method == http.MethodPut && r.URL.Path == "/snapshot/load":
		if err := v.loadSnapshot(body); err != nil {
			// "A specific error is reported and then the current
			// Firecracker process is ended."
			b, _ := json.Marshal(map[string]string{"fault_message": "Load snapshot error: Failed to restore from snapshot: " + err.Error()})
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
			w.WriteHeader(http.StatusBadRequest)
			w.Write(b)
			_ = http.NewResponseController(w).Flush()
			os.Exit(1)
		}
	case r.Method == http.MethodPut && r.URL.Path == "/actions":
		v.action(w, body)
		return
	case r.Method == http.MethodPut:
		err = v.configure(r.URL.Path, body)
	default:
		err = errors.New("Invalid request method and/or path")
	}
	if err != nil {
		fault(w, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (v *fakeVMM) action(w http.ResponseWriter, body []byte) {
	var a instanceActionInfo
	if err := json.Unmarshal(body, &a); err != nil {
		fault(w, err.Error())
		return
	}
	switch a.ActionType {
	case ActionInstanceStart:
		if err := v.instanceStart(); err != nil {
			fault(w, err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case ActionSendCtrlAltDel:
		w.WriteHeader(http.StatusNoContent)
		if !v.cfg.IgnoreCtrlAltDel {
			// The guest reboots; with reboot=k Firecracker exits.
			_ = http.NewResponseController(w).Flush()
			os.Exit(0)
		}
	default:
		fault(w, "unsupported action")
	}
}

// configure takes a pre-boot resource.
func (v *fakeVMM) configure(path string, body []byte) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.started {
		return errors.New("The requested operation is not supported after starting the microVM.")
	}
	var err error
	switch {
	case path == "/machine-config":
		v.machine = new(MachineConfig)
		err = json.Unmarshal(body, v.machine)
	case path == "/boot-source":
		v.boot = new(BootSource)
		err = json.Unmarshal(body, v.boot)
	case strings.HasPrefix(path, "/drives/"):
		var d Drive
		err = json.Unmarshal(body, &d)
		v.drives[d.DriveID] = d
	case strings.HasPrefix(path, "/network-interfaces/"):
		var n NetworkInterface
		err = json.Unmarshal(body, &n)
		v.ifaces[n.IfaceID] = n
	case path == "/vsock":
		v.vsock = new(Vsock)
		err = json.Unmarshal(body, v.vsock)
	case path == "/entropy":
	default:
		return errors.New("Invalid request method and/or path")
	}
	v.configured = true
	return err
}

// instanceStart checks what a real VMM would open, then "boots": it listens
// on the vsock socket and serves a real guest behind the handshake.
func (v *fakeVMM) instanceStart() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.started {
		return errors.New("The requested operation is not supported after starting the microVM.")
	}
	if v.boot == nil {
		return errors.New("Cannot start microvm without kernel configuration.")
	}
	for _, p := range []string{v.boot.KernelImagePath, v.boot.InitrdPath} {
		f, err := os.Open(v.hostPath(p))
		if err != nil {
			return fmt.Errorf("boot source: %v", err)
		}
		f.Close()
	}
	if err := v.openDrives(); err != nil {
		return err
	}
	if err := v.runGuest(); err != nil {
		return err
	}
	v.started = true
	fmt.Println("fake guest booting")
	return nil
}

// openDrives checks that the drives' files open as configured.
func (v *fakeVMM) openDrives() error {
	for _, d := range v.drives {
		flag := os.O_RDWR
		if d.IsReadOnly {
			flag = os.O_RDONLY
		}
		f, err := os.OpenFile(v.hostPath(d.PathOnHost), flag, 0)
		if err != nil {
			return fmt.Errorf("drive %s: %v", d.DriveID, err)
		}
		f.Close()
	}
	return nil
}

// runGuest listens on the vsock socket and serves a guest behind it.
func (v *fakeVMM) runGuest() error {
	if v.vsock == nil {
		return errors.New("no vsock device (the fake needs one)")
	}
	ln, err := net.Listen("unix", v.sockPath(v.vsock.UDSPath))
	if err != nil {
		return fmt.Errorf("vsock: %v", err)
	}
	guestLn := newChanListener()
	go v.serveVsock(ln, guestLn)
	srv := guest.NewServer(guest.ServerConfig{
		Workspace: v.cfg.Workspace,
		OnShutdown: func() {
			if !v.cfg.IgnoreShutdown {
				os.Exit(0) // the guest init reboots; Firecracker exits
			}
		},
		Init: v.guestInit,
	})
	go srv.Serve(context.Background(), guestLn)
	return nil
}

// guestInit is the stand-in guest's init: it records what it was told.
func (v *fakeVMM) guestInit(_ context.Context, req guest.InitRequest) (guest.InitResult, error) {
	if v.cfg.InitRecord != "" {
		f, err := os.OpenFile(v.cfg.InitRecord, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return guest.InitResult{}, err
		}
		b, _ := json.Marshal(req)
		f.Write(append(b, '\n'))
		f.Close()
	}
	return guest.InitResult{ClockSet: true}, nil
}

func (v *fakeVMM) patchVM(state VMState) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.started {
		return errors.New("The requested operation is not supported before starting the microVM.")
	}
	switch state {
	case VMPaused:
		v.paused = true
	case VMResumed:
		v.paused = false
		v.resumed.Broadcast()
	default:
		return fmt.Errorf("unknown state %q", state)
	}
	return nil
}

// fakeVMState is what the fake saves in a snapshot's state file.
type fakeVMState struct {
	Magic     string                      `json:"magic"`
	Version   string                      `json:"version"`
	Machine   *MachineConfig              `json:"machine"`
	Boot      *BootSource                 `json:"boot"`
	Drives    map[string]Drive            `json:"drives"`
	Ifaces    map[string]NetworkInterface `json:"ifaces"`
	Vsock     *Vsock                      `json:"vsock"`
	MemBytes  int                         `json:"memBytes"`
	MemSHA256 string                      `json:"memSHA256"`
}

const fakeVMStateMagic = "fake firecracker microVM state"

// createSnapshot writes the state and memory files; partial writes only
// part of them (a disk that filled up).
func (v *fakeVMM) createSnapshot(p SnapshotCreateParams, partial bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.started {
		return errors.New("The requested operation is not supported before starting the microVM.")
	}
	if !v.paused {
		return errors.New("Create snapshot error: the microVM must be paused first")
	}
	if p.SnapshotType != "" && p.SnapshotType != SnapshotFull {
		return errors.New("the fake takes only full snapshots")
	}
	memPath, statePath := v.hostPath(p.MemFilePath), v.hostPath(p.SnapshotPath)
	if v.mem != nil {
		mine, _ := v.mem.Stat()
		if fi, err := os.Stat(memPath); err == nil && os.SameFile(fi, mine) {
			return errors.New("fake: the memory file is the one this guest's memory is mapped from; writing it would corrupt the guest")
		}
	}
	// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET: the guest drops its connections.
	for _, c := range v.conns {
		c.Close()
	}
	v.conns = nil

	mem := make([]byte, 64<<10)
	rand.Read(mem)
	sum := sha256.Sum256(mem)
	st := fakeVMState{Magic: fakeVMStateMagic, Version: v.version(), Machine: v.machine, Boot: v.boot,
		Drives: v.drives, Ifaces: v.ifaces, Vsock: v.vsock, MemBytes: len(mem), MemSHA256: hex.EncodeToString(sum[:])}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := os.WriteFile(statePath, b, 0o600); err != nil {
		return err
	}
	if partial {
		mem = mem[:len(mem)/2]
	}
	return os.WriteFile(memPath, mem, 0o600)
}

// loadSnapshot restores a snapshot into this fresh VMM.
func (v *fakeVMM) loadSnapshot(body []byte) error {
	var p struct {
		SnapshotLoadParams
		MemFilePath string `json:"mem_file_path"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.started || v.configured {
		return errors.New("Loading a microVM snapshot not allowed after configuring boot-specific resources.")
	}
	if p.MemBackend == nil || p.MemFilePath != "" {
		return errors.New("the fake wants mem_backend, and not the deprecated mem_file_path")
	}
	if p.MemBackend.BackendType != MemoryBackendFile {
		return fmt.Errorf("the fake has no %s memory backend", p.MemBackend.BackendType)
	}
	b, err := os.ReadFile(v.hostPath(p.SnapshotPath))
	if err != nil {
		return fmt.Errorf("Failed to get snapshot state from file: %v", err)
	}
	var st fakeVMState
	if err := json.Unmarshal(b, &st); err != nil || st.Magic != fakeVMStateMagic {
		return errors.New("Failed to get snapshot state from file: Crc64 validation failed")
	}
	if st.Version != v.version() {
		return fmt.Errorf("Invalid data format version of snapshot file: %s", st.Version)
	}
	f, err := os.Open(v.hostPath(p.MemBackend.BackendPath))
	if err != nil {
		return fmt.Errorf("Failed to load guest memory: %v", err)
	}
	mem, err := io.ReadAll(f)
	sum := sha256.Sum256(mem)
	if err != nil || len(mem) != st.MemBytes || hex.EncodeToString(sum[:]) != st.MemSHA256 {
		f.Close()
		return errors.New("Failed to load guest memory: the memory file does not hold the saved guest's memory")
	}
	v.machine, v.boot, v.drives, v.ifaces, v.vsock = st.Machine, st.Boot, st.Drives, st.Ifaces, st.Vsock
	if v.drives == nil {
		v.drives = map[string]Drive{}
	}
	if v.ifaces == nil {
		v.ifaces = map[string]NetworkInterface{}
	}
	for _, o := range p.NetworkOverrides {
		n, ok := v.ifaces[o.IfaceID]
		if !ok {
			f.Close()
			return fmt.Errorf("Invalid network override: no network interface %s", o.IfaceID)
		}
		n.HostDevName = o.HostDevName
		v.ifaces[o.IfaceID] = n
	}
	if p.VsockOverride != nil && v.vsock != nil {
		v.vsock.UDSPath = p.VsockOverride.UDSPath
	}
	if err := v.openDrives(); err != nil {
		f.Close()
		return fmt.Errorf("Failed to build microVM from snapshot: %v", err)
	}
	if err := v.runGuest(); err != nil {
		f.Close()
		return fmt.Errorf("Failed to build microVM from snapshot: %v", err)
	}
	v.mem = f // the guest's memory is mapped from it from now on
	v.started, v.paused = true, !p.ResumeVM
	fmt.Println("fake guest restored")
	return nil
}

// serveVsock is Firecracker's side of hybrid vsock for host-initiated
// connections: read "CONNECT <port>\n"; if the guest listens there, answer
// "OK <host port>\n" and splice; otherwise close.
func (v *fakeVMM) serveVsock(ln net.Listener, guestLn *chanListener) {
	hostPort := 1 << 30
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			var line []byte
			var b [1]byte
			for len(line) < 64 {
				if _, err := c.Read(b[:]); err != nil {
					c.Close()
					return
				}
				if b[0] == '\n' {
					break
				}
				line = append(line, b[0])
			}
			port, ok := strings.CutPrefix(string(line), "CONNECT ")
			v.mu.Lock()
			for v.paused { // a paused guest accepts nothing
				v.resumed.Wait()
			}
			refuse := v.refused < v.cfg.BootConnects
			if refuse {
				v.refused++
			}
			hostPort++
			myPort := hostPort
			accept := ok && port == strconv.Itoa(guest.DefaultVsockPort) && !v.cfg.NoGuest && !refuse
			if accept {
				v.conns = append(v.conns, c)
			}
			v.mu.Unlock()
			if !accept {
				c.Close()
				return
			}
			fmt.Fprintf(c, "OK %d\n", myPort)
			guestLn.push(c)
		}()
	}
}

// chanListener hands already-accepted connections to a server.
type chanListener struct {
	ch        chan net.Conn
	closeOnce sync.Once
	closed    chan struct{}
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closed:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.UnixAddr{Name: "vsock", Net: "unix"} }
