package detect

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/image"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/testutil"
)

// host fakes what Choose looks for: a PATH holding (or not) qemu and
// firecracker, and a data directory holding (or not) a guest image.
type host struct {
	dataDir, bin string
	guestBin     string
}

func newHost(t *testing.T, withImage bool, tools ...string) host {
	t.Helper()
	h := host{dataDir: t.TempDir(), bin: t.TempDir(), guestBin: testutil.GuestBinary(t)}
	for _, tool := range tools {
		script := "#!/bin/sh\necho '" + tool + " version 1.0 (test stand-in)'\n"
		if err := os.WriteFile(filepath.Join(h.bin, tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", h.bin)
	if withImage {
		st, err := image.NewStore(h.dataDir)
		if err != nil {
			t.Fatal(err)
		}
		m := image.Manifest{Name: "dev", Profile: "dev", Distro: "bookworm"}
		for name, c := range map[string]*image.Component{"kernel": &m.Kernel, "vmlinux": &m.Vmlinux, "initramfs": &m.Initramfs, "rootfs": &m.Rootfs} {
			b, err := st.PutBytes([]byte("stand-in " + name))
			if err != nil {
				t.Fatal(err)
			}
			c.Blob = b
		}
		m.Kernel.Version = "6.1.0-test"
		if err := st.Save(m); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func (h host) choose(t *testing.T, requested string, fc func(string, image.Boot) (sandbox.Driver, error)) (sandbox.Driver, Report, error) {
	t.Helper()
	return Choose(context.Background(), Options{
		Requested: requested, DataDir: h.dataDir, ImageName: "dev", GuestBin: h.guestBin,
		Getenv: func(string) string { return "" }, Firecracker: fc, SkipProbe: true,
	})
}

func finding(r Report, check string) (Finding, bool) {
	for _, f := range r.Findings {
		if f.Check == check {
			return f, true
		}
	}
	return Finding{}, false
}

func TestAutoPrefersAVMWhenItCanRun(t *testing.T) {
	h := newHost(t, true, "qemu-system-x86_64")
	d, r, err := h.choose(t, "auto", nil)
	if err != nil {
		t.Fatal(err)
	}
	// No usable KVM on a test machine is expected; TCG is then the honest choice.
	if !d.Isolated() || !strings.HasPrefix(d.Name(), "qemu-") || r.Driver != d.Name() {
		t.Fatalf("chose %s (%+v)", d.Name(), r)
	}
	if d.Name() == "qemu-tcg" && !strings.Contains(r.Reason, "TCG") {
		t.Errorf("reason does not say TCG is used: %q", r.Reason)
	}
	if f, ok := finding(r, "qemu"); !ok || !f.OK || !strings.Contains(f.Detail, "test stand-in") {
		t.Errorf("qemu finding: %+v", f)
	}
	if f, ok := finding(r, "guest image"); !ok || !f.OK || !strings.Contains(f.Detail, "6.1.0-test") {
		t.Errorf("image finding: %+v", f)
	}
}

func TestAutoFallsBackToProcessAndSaysWhy(t *testing.T) {
	for name, h := range map[string]host{
		"no image": newHost(t, false, "qemu-system-x86_64"),
		"no qemu":  newHost(t, true),
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("PATH", h.bin)
			d, r, err := h.choose(t, "auto", nil)
			if err != nil {
				t.Fatal(err)
			}
			if d.Name() != "process" || d.Isolated() {
				t.Fatalf("chose %s", d.Name())
			}
			if !strings.Contains(r.Reason, "NOT isolate") {
				t.Errorf("reason does not warn: %q", r.Reason)
			}
		})
	}
}

func TestExplicitChoices(t *testing.T) {
	h := newHost(t, false)
	if _, _, err := h.choose(t, "qemu", nil); err == nil || !strings.Contains(err.Error(), "qemu") {
		t.Errorf("--sandbox qemu without qemu or image: %v", err)
	}
	if _, _, err := h.choose(t, "firecracker", nil); err == nil {
		t.Error("--sandbox firecracker without a firecracker driver succeeded")
	}
	if _, _, err := h.choose(t, "docker", nil); err == nil {
		t.Error("unknown sandbox accepted")
	}
	d, r, err := h.choose(t, "process", nil)
	if err != nil || d.Name() != "process" || !strings.Contains(r.Reason, "requested") {
		t.Fatalf("--sandbox process: %v %+v", err, r)
	}
}

// Firecracker needs KVM proven by a probe boot; its binary alone is not enough.
func TestFirecrackerNeedsWorkingKVM(t *testing.T) {
	h := newHost(t, true, "qemu-system-x86_64", "firecracker")
	called := false
	fc := func(string, image.Boot) (sandbox.Driver, error) { called = true; return nil, nil }
	d, r, err := h.choose(t, "auto", fc)
	if err != nil {
		t.Fatal(err)
	}
	if called || d.Name() == "firecracker" {
		t.Fatalf("firecracker chosen without a KVM probe: %+v", r)
	}
	if f, ok := finding(r, "firecracker"); !ok || !f.OK {
		t.Errorf("firecracker finding: %+v", f)
	}
	if _, _, err := h.choose(t, "firecracker", fc); err == nil || !strings.Contains(err.Error(), "KVM") {
		t.Errorf("--sandbox firecracker without KVM: %v", err)
	}
}
