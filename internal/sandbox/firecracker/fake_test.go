package firecracker

import (
	"context"
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

	FaultPath        string `json:"faultPath"` // PUTs to this path get a 400 with Fault
	Fault            string `json:"fault"`
	ExitAtStart      bool   `json:"exitAtStart"`      // exit 1 at once, with a message on stderr
	NoGuest          bool   `json:"noGuest"`          // nothing ever listens on the guest's port
	BootConnects     int    `json:"bootConnects"`     // refuse this many CONNECTs first (a booting guest)
	IgnoreShutdown   bool   `json:"ignoreShutdown"`   // the guest answers Shutdown but keeps running
	IgnoreCtrlAltDel bool   `json:"ignoreCtrlAltDel"` // SendCtrlAltDel does nothing
}

type recordedRequest struct {
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
	procs := "tasks"
	if version == "2" {
		procs = "cgroup.procs"
	}
	for _, dir := range dirs {
		if err := os.WriteFile(filepath.Join(dir, procs), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			return err
		}
	}
	return nil
}

type fakeVMM struct {
	cfg  fakeConfig
	root string // the jail root, or "" (paths are then the host's)

	recMu sync.Mutex

	mu      sync.Mutex
	started bool
	boot    *BootSource
	drives  map[string]Drive
	vsock   *Vsock
	refused int
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
	v := &fakeVMM{cfg: cfg, root: os.Getenv(fakeJailRootEnv), drives: map[string]Drive{}}
	ln, err := net.Listen("unix", v.hostPath(*apiSock))
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

func (v *fakeVMM) serveAPI(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	rec := recordedRequest{Method: r.Method, Path: r.URL.Path}
	if len(body) > 0 {
		rec.Body = body
	}
	v.record(rec)

	if r.Method == http.MethodGet && r.URL.Path == "/" {
		v.mu.Lock()
		state := "Not started"
		if v.started {
			state = "Running"
		}
		v.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(InstanceInfo{AppName: "Firecracker", ID: "fake", State: state, VMMVersion: "1.16.1"})
		return
	}
	if r.Method != http.MethodPut {
		fault(w, "Invalid request method and/or path")
		return
	}
	if v.cfg.FaultPath == r.URL.Path {
		fault(w, v.cfg.Fault)
		return
	}
	if r.URL.Path == "/actions" {
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
		return
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	if v.started {
		fault(w, "The requested operation is not supported after starting the microVM.")
		return
	}
	var err error
	switch {
	case r.URL.Path == "/boot-source":
		v.boot = new(BootSource)
		err = json.Unmarshal(body, v.boot)
	case strings.HasPrefix(r.URL.Path, "/drives/"):
		var d Drive
		err = json.Unmarshal(body, &d)
		v.drives[d.DriveID] = d
	case r.URL.Path == "/vsock":
		v.vsock = new(Vsock)
		err = json.Unmarshal(body, v.vsock)
	case r.URL.Path == "/machine-config", r.URL.Path == "/entropy",
		strings.HasPrefix(r.URL.Path, "/network-interfaces/"):
	default:
		fault(w, "Invalid request method and/or path")
		return
	}
	if err != nil {
		fault(w, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
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
	if v.vsock == nil {
		return errors.New("no vsock device (the fake needs one)")
	}
	ln, err := net.Listen("unix", v.hostPath(v.vsock.UDSPath))
	if err != nil {
		return fmt.Errorf("vsock: %v", err)
	}
	v.started = true
	fmt.Println("fake guest booting")

	guestLn := newChanListener()
	go v.serveVsock(ln, guestLn)
	srv := guest.NewServer(guest.ServerConfig{
		Workspace: v.cfg.Workspace,
		OnShutdown: func() {
			if !v.cfg.IgnoreShutdown {
				os.Exit(0) // the guest init reboots; Firecracker exits
			}
		},
	})
	go srv.Serve(context.Background(), guestLn)
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
			refuse := v.refused < v.cfg.BootConnects
			if refuse {
				v.refused++
			}
			hostPort++
			myPort := hostPort
			v.mu.Unlock()
			if !ok || port != strconv.Itoa(guest.DefaultVsockPort) || v.cfg.NoGuest || refuse {
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
