package firecracker

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/sandbox"
)

// requestsOf is what the fake with pid was asked, each checked against the
// API description.
func (f *fakeEnv) requestsOf(pid int) []recordedRequest {
	f.t.Helper()
	doc := spec(f.t)
	var out []recordedRequest
	for _, r := range f.requests() {
		if r.PID != pid {
			continue
		}
		if err := doc.validateRequest(r.Method, r.Path, r.Body); err != nil {
			f.t.Errorf("request does not match the API description: %v\nbody: %s", err, r.Body)
		}
		out = append(out, r)
	}
	return out
}

// names lists requests as "METHOD /path" (with the state or action).
func names(reqs []recordedRequest) []string {
	var out []string
	for _, r := range reqs {
		key := r.Method + " " + r.Path
		var body map[string]any
		_ = json.Unmarshal(r.Body, &body)
		if a, ok := body["action_type"].(string); ok {
			key += " " + a
		}
		if st, ok := body["state"].(string); ok {
			key += " " + st
		}
		out = append(out, key)
	}
	return out
}

func bodyOf(t *testing.T, reqs []recordedRequest, method, path string, v any) {
	t.Helper()
	for _, r := range reqs {
		if r.Method == method && r.Path == path {
			dec := json.NewDecoder(bytes.NewReader(r.Body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(v); err != nil {
				t.Fatalf("%s %s: %v: %s", method, path, err, r.Body)
			}
			return
		}
	}
	t.Fatalf("no %s %s request", method, path)
}

func (f *fakeEnv) inits() []guest.InitRequest {
	f.t.Helper()
	fh, err := os.Open(f.cfg.InitRecord)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	defer fh.Close()
	var out []guest.InitRequest
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		var r guest.InitRequest
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			f.t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func sameFile(t *testing.T, a os.FileInfo, path string) bool {
	t.Helper()
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}

// jailedVariants runs body directly and, as root, under the (fake) jailer.
func jailedVariants(t *testing.T, body func(t *testing.T, jailed bool)) {
	t.Run("direct", func(t *testing.T) { body(t, false) })
	t.Run("jailed", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("the jailer needs root")
		}
		body(t, true)
	})
}

func jailerConfig(f *fakeEnv, jailed bool) func(*Config) {
	return func(c *Config) {
		if jailed {
			c.JailerBinary, c.JailerUID, c.JailerGID = f.jailer, 4242, 4343
		}
	}
}

// fcPath is the name Firecracker gets for a file of the session directory.
func fcPath(dir, name string, jailed bool) string {
	if jailed {
		return "/" + name
	}
	return filepath.Join(dir, name)
}

func TestPauseRestore(t *testing.T) {
	jailedVariants(t, func(t *testing.T, jailed bool) {
		f := newFake(t, fakeConfig{})
		n := &fakeNet{}
		d := f.driver(func(c *Config) {
			c.Network = n
			jailerConfig(f, jailed)(c)
		})
		spec, _ := newSpec(t, "full")
		ctx := t.Context()
		sb := startSandbox(t, d, spec)
		pid := f.pid()
		if err := sb.Guest().Write(ctx, guest.WriteRequest{Path: "before.txt", Data: []byte("saved")}); err != nil {
			t.Fatal(err)
		}
		disk := filepath.Join(spec.Dir, diskName)
		diskInfo, err := os.Stat(disk)
		if err != nil {
			t.Fatal(err)
		}

		snap, err := sb.Pause(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The VMM is gone and reaped, Done is closed, and no crash is told.
		select {
		case <-sb.Done():
		default:
			t.Error("Done is not closed after Pause")
		}
		assertGone(t, pid)
		if err := sb.ExitError(); err != nil {
			t.Errorf("ExitError after Pause: %v", err)
		}
		if setups, teardowns, _ := n.counts(); setups != 1 || teardowns != 1 {
			t.Errorf("network after Pause: %d setups, %d teardowns", setups, teardowns)
		}
		// The disk stays, the snapshot is there, the rest (sockets, jail) is gone.
		want := sorted([]string{diskName, logName, vmstateName, memName, sandbox.SnapshotFile})
		if left := dirEntries(t, spec.Dir); !slices.Equal(left, want) {
			t.Errorf("left after Pause: %v, want %v", left, want)
		}
		if !sameFile(t, diskInfo, disk) {
			t.Error("the writable disk is not the one the VM ran on")
		}
		if snap.Driver != "firecracker" || !slices.Equal(snap.Files, []string{vmstateName, memName}) || snap.Bytes <= 0 || snap.CreatedAt.IsZero() {
			t.Errorf("snapshot %+v", snap)
		}
		jail := "none"
		if jailed {
			jail = "uid 4242 gid 4343"
		}
		for k, v := range map[string]string{
			"firecracker": "1.16.1", "vcpus": "2", "memoryMiB": "256", "network": "nic", "jailer": jail,
			"memBytes": strconv.Itoa(64 << 10), "diskBytes": strconv.FormatInt(diskInfo.Size(), 10),
			"rootfs": fileIdentity(f.image.Rootfs), "kernel": fileIdentity(f.image.KernelELF),
		} {
			if snap.Compat[k] != v || v == "" {
				t.Errorf("compat %s = %q, want %q", k, snap.Compat[k], v)
			}
		}
		rec, ok, err := sandbox.ReadSnapshot(spec.Dir)
		if err != nil || !ok || rec.Driver != snap.Driver || rec.Bytes != snap.Bytes || len(rec.Compat) != len(snap.Compat) {
			t.Errorf("recorded snapshot %+v, %v, %v; Pause gave %+v", rec, ok, err, snap)
		}
		reqs := f.requestsOf(pid)
		got := names(reqs)
		iPause, iCreate := slices.Index(got, "PATCH /vm Paused"), slices.Index(got, "PUT /snapshot/create")
		if iPause < 0 || iCreate < iPause || !slices.Contains(got, "GET /version") {
			t.Errorf("pause requests: %v", got)
		}
		for _, no := range []string{"PATCH /vm Resumed", "PUT /actions SendCtrlAltDel"} {
			if slices.Contains(got, no) {
				t.Errorf("Pause sent %s", no)
			}
		}
		var create SnapshotCreateParams
		bodyOf(t, reqs, "PUT", "/snapshot/create", &create)
		if create != (SnapshotCreateParams{SnapshotType: SnapshotFull, SnapshotPath: fcPath(spec.Dir, vmstateName, jailed), MemFilePath: fcPath(spec.Dir, memName, jailed)}) {
			t.Errorf("snapshot/create %+v", create)
		}
		// A Stop after the pause has nothing to do.
		if err := sb.Stop(ctx); err != nil {
			t.Errorf("Stop after Pause: %v", err)
		}
		if _, teardowns, _ := n.counts(); teardowns != 1 {
			t.Errorf("%d teardowns after Pause and Stop", teardowns)
		}

		// Restore: the guest runs on, and the snapshot is gone.
		var phases []string
		rspec := spec
		rspec.Progress = func(p string) { phases = append(phases, p) }
		r, err := d.Restore(ctx, rspec, snap)
		if err != nil {
			t.Fatal(err)
		}
		rb := r.(*Sandbox)
		rpid := f.pid()
		if rpid == pid || rb.pid != rpid {
			t.Fatalf("restored pid %d (sandbox %d), paused one %d", rpid, rb.pid, pid)
		}
		if want := []string{"vmm", "restore", "guest-api"}; !slices.Equal(phases, want) {
			t.Errorf("phases %v, want %v", phases, want)
		}
		if info, err := rb.Instance(ctx); err != nil || info.State != "Running" {
			t.Errorf("restored instance %+v, %v", info, err)
		}
		var out strings.Builder
		res, err := rb.Guest().Exec(ctx, guest.ExecRequest{Argv: []string{"cat", "before.txt"}}, func(_ string, b []byte) { out.Write(b) })
		if err != nil || res.ExitCode != 0 || out.String() != "saved" {
			t.Errorf("exec in the restored guest: %+v %q %v", res, out.String(), err)
		}
		wantLeft := sorted([]string{apiSockName, diskName, logName, vsockSockName})
		if jailed {
			wantLeft = sorted([]string{jailDirName, diskName, logName})
			root := filepath.Join(spec.Dir, jailDirName, "firecracker", vmID(spec.SessionID), "root")
			for _, name := range []string{vmstateName, memName} {
				if _, err := os.Lstat(filepath.Join(root, name)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s is still in the jail after the restore (%v)", name, err)
				}
			}
		}
		if left := dirEntries(t, spec.Dir); !slices.Equal(left, wantLeft) {
			t.Errorf("left after Restore: %v, want %v", left, wantLeft)
		}
		if !sameFile(t, diskInfo, disk) {
			t.Error("the restored VM's disk is not the one saved")
		}
		rreqs := f.requestsOf(rpid)
		for _, r := range names(rreqs) {
			if r != "GET /" && r != "GET /version" && r != "PUT /snapshot/load" {
				t.Errorf("the restoring VMM was sent %s", r)
			}
		}
		var load SnapshotLoadParams
		bodyOf(t, rreqs, "PUT", "/snapshot/load", &load)
		vsockPath := filepath.Join(spec.Dir, vsockSockName)
		if jailed {
			vsockPath = "/" + vsockSockName
		}
		if load.SnapshotPath != fcPath(spec.Dir, vmstateName, jailed) ||
			load.MemBackend == nil || *load.MemBackend != (MemoryBackend{BackendType: "File", BackendPath: fcPath(spec.Dir, memName, jailed)}) ||
			!load.ResumeVM || load.VsockOverride == nil || load.VsockOverride.UDSPath != vsockPath ||
			!slices.Equal(load.NetworkOverrides, []NetworkOverride{{IfaceID: "eth0", HostDevName: "fc-tap0"}}) {
			t.Errorf("snapshot/load %+v", load)
		}
		inits := f.inits()
		if len(inits) != 1 {
			t.Fatalf("%d guest inits, want 1", len(inits))
		}
		in := inits[0]
		if len(in.Entropy) != 64 || time.Since(in.Time) > time.Minute || in.Network == nil ||
			in.Network.IP.String() != "10.200.0.2/30" || in.Network.Gateway.String() != "10.200.0.1" {
			t.Errorf("guest init %+v", in)
		}
		if setups, teardowns, runs := n.counts(); setups != 2 || teardowns != 1 || runs != 2 {
			t.Errorf("network after Restore: %d setups, %d teardowns, %d starts", setups, teardowns, runs)
		}

		// Again: the restored VM pauses, and restores, like the first.
		snap2, err := rb.Pause(ctx)
		if err != nil {
			t.Fatal(err)
		}
		assertGone(t, rpid)
		r2, err := d.Restore(ctx, spec, snap2)
		if err != nil {
			t.Fatal(err)
		}
		if res, err := r2.Guest().Exec(ctx, guest.ExecRequest{Argv: []string{"true"}}, nil); err != nil || res.ExitCode != 0 {
			t.Errorf("exec after the second restore: %+v, %v", res, err)
		}
		if err := r2.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		assertGone(t, f.pid())
		if left := dirEntries(t, spec.Dir); !slices.Equal(left, sorted([]string{diskName, logName})) {
			t.Errorf("left after Stop: %v", left)
		}
		if setups, teardowns, _ := n.counts(); setups != 3 || teardowns != 3 {
			t.Errorf("network at the end: %d setups, %d teardowns", setups, teardowns)
		}
	})
}

// A pause that fails before its snapshot is whole leaves the VM running, as
// if it had not been asked, and no file behind.
func TestPauseFailsRunsOn(t *testing.T) {
	for _, c := range []struct {
		name      string
		cfg       fakeConfig
		want      string
		sent, not []string
	}{
		{
			name: "create fails half-way",
			cfg:  fakeConfig{FaultPath: "/snapshot/create", CreatePartial: true, Fault: "Cannot create snapshot: No space left on device (os error 28)"},
			want: "No space left on device",
			sent: []string{"PATCH /vm Paused", "PUT /snapshot/create", "PATCH /vm Resumed"},
		},
		{
			name: "pause refused",
			cfg:  fakeConfig{FaultPath: "/vm", FaultBody: "Paused", Fault: "Failed to pause the vCPUs."},
			want: "Failed to pause the vCPUs.",
			sent: []string{"PATCH /vm Paused"},
			not:  []string{"PUT /snapshot/create", "PATCH /vm Resumed"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			jailedVariants(t, func(t *testing.T, jailed bool) {
				f := newFake(t, c.cfg)
				d := f.driver(jailerConfig(f, jailed))
				spec, _ := newSpec(t, "none")
				ctx := t.Context()
				sb := startSandbox(t, d, spec)
				defer sb.Stop(ctx)
				before := dirEntries(t, spec.Dir)
				snap, err := sb.Pause(ctx)
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("Pause: %+v, %v; want an error with %q", snap, err, c.want)
				}
				got := names(f.requestsOf(f.pid()))
				i := -1
				for _, w := range c.sent {
					j := slices.Index(got, w)
					if j <= i {
						t.Errorf("requests %v lack %s (in that order)", got, c.sent)
					}
					i = j
				}
				for _, w := range c.not {
					if slices.Contains(got, w) {
						t.Errorf("requests %v hold %s", got, w)
					}
				}
				if info, err := sb.Instance(ctx); err != nil || info.State != "Running" {
					t.Errorf("after the failed pause: %+v, %v", info, err)
				}
				// The guest answers (over new vsock connections: the fake reset
				// the old ones as it wrote the snapshot).
				var out strings.Builder
				res, err := sb.Guest().Exec(ctx, guest.ExecRequest{Argv: []string{"echo", "still here"}}, func(_ string, b []byte) { out.Write(b) })
				if err != nil || res.ExitCode != 0 || out.String() != "still here\n" {
					t.Errorf("exec after the failed pause: %+v %q %v", res, out.String(), err)
				}
				select {
				case <-sb.Done():
					t.Fatal("Done closed after a failed pause")
				default:
				}
				if left := dirEntries(t, spec.Dir); !slices.Equal(left, before) {
					t.Errorf("after the failed pause the directory holds %v, before it %v", left, before)
				}
				if jailed {
					root := filepath.Join(spec.Dir, jailDirName, "firecracker", vmID(spec.SessionID), "root")
					for _, name := range []string{vmstateName, memName} {
						if _, err := os.Lstat(filepath.Join(root, name)); !errors.Is(err, os.ErrNotExist) {
							t.Errorf("%s left in the jail (%v)", name, err)
						}
					}
				}
				if err := sb.Stop(ctx); err != nil {
					t.Fatal(err)
				}
				if err := sb.ExitError(); err != nil {
					t.Errorf("ExitError: %v", err)
				}
			})
		})
	}
}

func TestPauseNotRunning(t *testing.T) {
	f := newFake(t, fakeConfig{})
	d := f.driver(nil)
	spec, _ := newSpec(t, "none")
	sb := startStopped(t, d, spec)
	if _, err := sb.Pause(t.Context()); err == nil {
		t.Error("a stopped sandbox paused")
	}
	if _, ok, _ := sandbox.ReadSnapshot(spec.Dir); ok {
		t.Error("a snapshot of a stopped sandbox was recorded")
	}
}

// pausedSandbox starts a sandbox and pauses it.
func pausedSandbox(t *testing.T, f *fakeEnv, d *Driver, spec sandbox.Spec) (sandbox.Snapshot, int) {
	t.Helper()
	snap, err := startSandbox(t, d, spec).Pause(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return snap, f.pid()
}

// A snapshot that cannot be restored gives ErrIncompatible and leaves no
// process, nor the network; the disk stays, and the session boots afresh on it.
func TestRestoreRefused(t *testing.T) {
	for _, c := range []struct {
		name     string
		change   func(t *testing.T, f *fakeEnv, spec *sandbox.Spec, snap *sandbox.Snapshot)
		want     []string
		vmm      bool // a VMM had to be started to find out
		spendErr bool
	}{
		{
			name:   "other size",
			change: func(t *testing.T, f *fakeEnv, spec *sandbox.Spec, snap *sandbox.Snapshot) { spec.VCPUs = 3 },
			want:   []string{`vcpus was "2" and is "3" now`},
		},
		{
			name:   "other driver",
			change: func(t *testing.T, f *fakeEnv, spec *sandbox.Spec, snap *sandbox.Snapshot) { snap.Driver = "qemu-kvm" },
			want:   []string{"made by qemu-kvm"},
		},
		{
			name: "no network now",
			change: func(t *testing.T, f *fakeEnv, spec *sandbox.Spec, snap *sandbox.Snapshot) {
				spec.Network = "none"
			},
			want: []string{`network was "nic" and is "none" now`},
		},
		{
			name: "memory file missing",
			change: func(t *testing.T, f *fakeEnv, spec *sandbox.Spec, snap *sandbox.Snapshot) {
				if err := os.Remove(filepath.Join(spec.Dir, memName)); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{`memBytes was "65536" and is "" now`},
		},
		{
			name: "memory file cut short",
			change: func(t *testing.T, f *fakeEnv, spec *sandbox.Spec, snap *sandbox.Snapshot) {
				if err := os.Truncate(filepath.Join(spec.Dir, memName), 4096); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{`memBytes was "65536" and is "4096" now`},
		},
		{
			name: "image replaced",
			change: func(t *testing.T, f *fakeEnv, spec *sandbox.Spec, snap *sandbox.Snapshot) {
				if err := os.WriteFile(f.image.Rootfs, []byte("a newer rootfs image"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"rootfs was"},
		},
		{
			name: "firecracker upgraded",
			change: func(t *testing.T, f *fakeEnv, spec *sandbox.Spec, snap *sandbox.Snapshot) {
				cfg := f.cfg
				cfg.Version = "1.17.0"
				f.setConfig(cfg)
			},
			want: []string{`firecracker was "1.16.1" and is "1.17.0" now`},
			vmm:  true,
		},
		{
			name: "memory file damaged",
			change: func(t *testing.T, f *fakeEnv, spec *sandbox.Spec, snap *sandbox.Snapshot) {
				// Same size, other bytes: only the VMM can tell.
				if err := os.WriteFile(filepath.Join(spec.Dir, memName), make([]byte, 64<<10), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"PUT /snapshot/load: 400", "the memory file does not hold the saved guest's memory", "fake guest"},
			vmm:  true,
		},
		{
			name: "state file damaged",
			change: func(t *testing.T, f *fakeEnv, spec *sandbox.Spec, snap *sandbox.Snapshot) {
				p := filepath.Join(spec.Dir, vmstateName)
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, bytes.Repeat([]byte("x"), len(b)), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"PUT /snapshot/load: 400", "Crc64 validation failed"},
			vmm:  true,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFake(t, fakeConfig{})
			n := &fakeNet{}
			d := f.driver(func(c *Config) { c.Network = n })
			spec, _ := newSpec(t, "full")
			snap, pausedPID := pausedSandbox(t, f, d, spec)
			disk := filepath.Join(spec.Dir, diskName)
			diskInfo, _ := os.Stat(disk)
			c.change(t, f, &spec, &snap)

			r, err := d.Restore(t.Context(), spec, snap)
			if err == nil {
				r.Stop(t.Context())
				t.Fatal("Restore succeeded")
			}
			t.Logf("Restore: %v", err)
			if !errors.Is(err, sandbox.ErrIncompatible) {
				t.Errorf("the error is not ErrIncompatible: %v", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if pid := f.pid(); pid != pausedPID {
				if !c.vmm {
					t.Errorf("a VMM (%d) was started although the snapshot could be refused without one", pid)
				}
				assertGone(t, pid)
			} else if c.vmm {
				t.Error("no VMM was started")
			}
			if setups, teardowns, _ := n.counts(); setups != teardowns {
				t.Errorf("network: %d setups, %d teardowns", setups, teardowns)
			}
			if !sameFile(t, diskInfo, disk) {
				t.Error("the disk is gone")
			}
			for _, p := range []string{apiSockName, vsockSockName, jailDirName} {
				if _, err := os.Lstat(filepath.Join(spec.Dir, p)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left behind (%v)", p, err)
				}
			}
			// What the session manager does then: boot afresh on the disk,
			// which also drops the snapshot.
			spec.VCPUs, spec.Network, spec.Resume = 2, "full", true
			s, err := d.Start(t.Context(), spec)
			if err != nil {
				t.Fatal(err)
			}
			if !sameFile(t, diskInfo, disk) {
				t.Error("booting afresh did not reuse the disk")
			}
			if _, ok, _ := sandbox.ReadSnapshot(spec.Dir); ok {
				t.Error("the snapshot is still there after a boot afresh on its disk")
			}
			if err := s.Stop(t.Context()); err != nil {
				t.Fatal(err)
			}
			if left := dirEntries(t, spec.Dir); !slices.Equal(left, sorted([]string{diskName, logName})) {
				t.Errorf("left at the end: %v", left)
			}
		})
	}
}

// Once Firecracker has loaded the snapshot, the VM has run on its disk:
// whatever fails next, the snapshot is removed.
func TestRestoreGuestDoesNotAnswer(t *testing.T) {
	f := newFake(t, fakeConfig{})
	d := f.driver(func(c *Config) { c.BootTimeout = 300 * time.Millisecond })
	spec, _ := newSpec(t, "none")
	snap, _ := pausedSandbox(t, f, d, spec)
	cfg := f.cfg
	cfg.NoGuest = true
	f.setConfig(cfg)
	_, err := d.Restore(t.Context(), spec, snap)
	if err == nil || !errors.Is(err, sandbox.ErrIncompatible) || !strings.Contains(err.Error(), "did not answer within 300ms") ||
		!strings.Contains(err.Error(), "the snapshot was removed") {
		t.Fatalf("Restore: %v", err)
	}
	assertGone(t, f.pid())
	if left := dirEntries(t, spec.Dir); !slices.Equal(left, sorted([]string{diskName, logName})) {
		t.Errorf("left after the failed restore: %v", left)
	}
}

// Start with Resume boots afresh on the disk already there, after a pause
// or after a server that was killed left its sockets.
func TestStartResume(t *testing.T) {
	jailedVariants(t, func(t *testing.T, jailed bool) {
		f := newFake(t, fakeConfig{})
		d := f.driver(jailerConfig(f, jailed))
		spec, _ := newSpec(t, "none")
		ctx := t.Context()
		startStopped(t, d, spec)
		disk := filepath.Join(spec.Dir, diskName)
		marker := []byte("written by the guest before the restart")
		fh, err := os.OpenFile(disk, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fh.WriteAt(marker, 3<<20); err != nil {
			t.Fatal(err)
		}
		fh.Close()
		diskInfo, _ := os.Stat(disk)

		// What a killed server leaves: an API socket nobody serves, and a
		// snapshot of the disk (whose description says so).
		ln, err := net.Listen("unix", filepath.Join(spec.Dir, apiSockName))
		if err != nil {
			t.Fatal(err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close()
		for _, name := range []string{vmstateName, memName} {
			if err := os.WriteFile(filepath.Join(spec.Dir, name), []byte("old"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := sandbox.WriteSnapshot(spec.Dir, sandbox.Snapshot{Driver: "firecracker", Files: []string{vmstateName, memName}}); err != nil {
			t.Fatal(err)
		}

		spec.Resume = true
		s, err := d.Start(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if !sameFile(t, diskInfo, disk) {
			t.Error("Resume made a new disk")
		}
		b := make([]byte, len(marker))
		if fh, err := os.Open(disk); err == nil {
			fh.ReadAt(b, 3<<20)
			fh.Close()
		}
		if !bytes.Equal(b, marker) {
			t.Errorf("the disk's contents did not survive: %q", b)
		}
		for _, name := range []string{vmstateName, memName, sandbox.SnapshotFile} {
			if _, err := os.Stat(filepath.Join(spec.Dir, name)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the old snapshot's %s is still there (%v)", name, err)
			}
		}
		got := names(f.requestsOf(f.pid()))
		if !slices.Contains(got, "PUT /actions InstanceStart") || slices.Contains(got, "PUT /snapshot/load") {
			t.Errorf("a boot afresh sent %v", got)
		}
		if res, err := s.Guest().Exec(ctx, guest.ExecRequest{Argv: []string{"true"}}, nil); err != nil || res.ExitCode != 0 {
			t.Errorf("exec: %+v, %v", res, err)
		}
		if logb, _ := os.ReadFile(filepath.Join(spec.Dir, logName)); bytes.Count(logb, []byte("fake firecracker")) != 2 ||
			!bytes.Contains(logb, []byte("[execlaw: firecracker started again")) {
			t.Errorf("the log does not hold both runs:\n%s", logb)
		}

		// A VMM that still answers on the directory's socket (a server
		// killed while its jailed VM ran on): never a second VM on the disk.
		live, err := net.Listen("unix", filepath.Join(spec.Dir, "elsewhere.sock"))
		if err != nil {
			t.Fatal(err)
		}
		defer live.Close()
		if err := s.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(spec.Dir, "elsewhere.sock"), filepath.Join(spec.Dir, apiSockName)); err != nil {
			t.Fatal(err)
		}
		s, err = d.Start(ctx, spec)
		if err == nil {
			s.Stop(ctx)
			t.Fatal("Resume started a second VM beside a live one")
		}
		if !strings.Contains(err.Error(), "still runs") {
			t.Errorf("error %v", err)
		}
		if !sameFile(t, diskInfo, disk) {
			t.Error("the refused start harmed the disk")
		}
	})
}

// A boot afresh that fails keeps the disk and the log: they are the
// session's, not the failed start's.
func TestStartResumeFailsKeepsDisk(t *testing.T) {
	f := newFake(t, fakeConfig{})
	d := f.driver(nil)
	spec, _ := newSpec(t, "none")
	startStopped(t, d, spec)
	diskInfo, _ := os.Stat(filepath.Join(spec.Dir, diskName))
	cfg := f.cfg
	cfg.FaultPath, cfg.Fault = "/drives/rw", "Unable to open the block device"
	f.setConfig(cfg)
	spec.Resume = true
	if s, err := d.Start(t.Context(), spec); err == nil {
		s.Stop(t.Context())
		t.Fatal("Start succeeded")
	}
	assertGone(t, f.pid())
	if !sameFile(t, diskInfo, filepath.Join(spec.Dir, diskName)) {
		t.Error("a failed boot afresh removed the disk")
	}
	if left := dirEntries(t, spec.Dir); !slices.Equal(left, sorted([]string{diskName, logName})) {
		t.Errorf("left: %v", left)
	}
}

func TestTrimLog(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	small := []byte("a short log\n")
	if err := os.WriteFile(p, small, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := trimLog(p); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, small) {
		t.Errorf("a short log was changed: %q", b)
	}
	big := append(bytes.Repeat([]byte("old line\n"), maxLogBytes/9), []byte("the end\n")...)
	if err := os.WriteFile(p, big, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := trimLog(p); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if len(b) > keptLogBytes+100 || !bytes.HasSuffix(b, []byte("old line\nthe end\n")) || !bytes.HasPrefix(b, []byte("[execlaw: ")) {
		t.Errorf("trimmed log: %d bytes, %q...%q", len(b), b[:min(len(b), 60)], b[max(0, len(b)-30):])
	}
	if err := trimLog(filepath.Join(t.TempDir(), "none")); err != nil {
		t.Errorf("no log: %v", err)
	}
}
