package image

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The fragment in the repository is well formed: options only, none twice,
// and what the guests rely on is there.
func TestGuestKernelConfig(t *testing.T) {
	opts, err := parseKconfig(GuestKernelConfig)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		// No modules: the initramfs holds none.
		"CONFIG_MODULES": "n",
		// QEMU microvm boots the ELF through PVH; Firecracker wants these.
		"CONFIG_PVH": "y", "CONFIG_KVM_GUEST": "y", "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES": "y",
		"CONFIG_SERIAL_8250_CONSOLE": "y", "CONFIG_SERIO_I8042": "y", "CONFIG_KEYBOARD_ATKBD": "y",
		"CONFIG_VIRTIO_BLK": "y", "CONFIG_VIRTIO_NET": "y", "CONFIG_VIRTIO_VSOCKETS": "y",
		"CONFIG_HW_RANDOM_VIRTIO": "y", "CONFIG_BLK_DEV_INITRD": "y", "CONFIG_RD_GZIP": "y",
		// The guest init and the tests.
		"CONFIG_VIRTIO_CONSOLE": "y", "CONFIG_EXT4_FS": "y", "CONFIG_OVERLAY_FS": "y",
		"CONFIG_DEVTMPFS": "y", "CONFIG_DEVTMPFS_MOUNT": "n", "CONFIG_CGROUPS": "y", "CONFIG_MEMCG": "y",
		"CONFIG_UNIX": "y", "CONFIG_INET": "y",
	} {
		if got := opts[name]; got != want {
			t.Errorf("%s=%q, want %q", name, got, want)
		}
	}
	if n := len(opts); n < 50 {
		t.Errorf("only %d options", n)
	}
}

func TestParseKconfig(t *testing.T) {
	got, err := parseKconfig("# a comment\n\nCONFIG_A=y\n  CONFIG_B=\"x y\"\n# CONFIG_C is not set\nCONFIG_D=0x10\n")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"CONFIG_A": "y", "CONFIG_B": `"x y"`, "CONFIG_C": "n", "CONFIG_D": "0x10"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s=%q, want %q", k, got[k], v)
		}
	}
	for _, bad := range []string{
		"CONFIG_A=y\nCONFIG_A=n\n",            // set twice: kconfig only warns
		"CONFIG_A=y\n# CONFIG_A is not set\n", // the same
		"A=y\n",                               // not an option
		"CONFIG_A y\n",
	} {
		if _, err := parseKconfig(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// An option kconfig dropped (its dependencies missing) or changed is
// reported; one asked off may be absent.
func TestVerifyKernelConfig(t *testing.T) {
	fragment := "CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=\"-x\"\n# CONFIG_D is not set\n# CONFIG_E is not set\nCONFIG_F=y\nCONFIG_G=4\n"
	final := "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"-y\"\n# CONFIG_D is not set\nCONFIG_F=m\nCONFIG_G=4\nCONFIG_H=y\n"
	bad, err := verifyKernelConfig(fragment, final)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`CONFIG_B: asked y, got n`,
		`CONFIG_C: asked "-x", got "-y"`,
		`CONFIG_F: asked y, got m`,
	}
	if len(bad) != len(want) {
		t.Fatalf("got %q, want %q", bad, want)
	}
	for i := range want {
		if bad[i] != want[i] {
			t.Errorf("got %q, want %q", bad[i], want[i])
		}
	}
	bad, _ = verifyKernelConfig("CONFIG_NOT_THERE=y\n", "CONFIG_A=y\n")
	if len(bad) != 1 || !strings.Contains(bad[0], "CONFIG_NOT_THERE: asked y, but it is not in the configuration") {
		t.Errorf("got %q", bad)
	}
	if bad, _ := verifyKernelConfig(fragment, fragment); len(bad) != 0 {
		t.Errorf("the fragment itself: %q", bad)
	}
	if _, err := verifyKernelConfig("CONFIG_A=y\nCONFIG_A=y\n", final); err == nil {
		t.Error("a fragment setting an option twice passed")
	}
}

// The recipe changes with each input and only with them.
func TestBuiltKernelRecipe(t *testing.T) {
	base := builtKernelRecipe("6.1.192-3", "CONFIG_A=y\n", "gcc (Debian 12.2.0-14) 12.2.0; GNU ld 2.40")
	if base != builtKernelRecipe("6.1.192-3", "CONFIG_A=y\n", "gcc (Debian 12.2.0-14) 12.2.0; GNU ld 2.40") {
		t.Fatal("the same inputs made two recipes")
	}
	if !strings.HasPrefix(base, "build:linux-source-6.1=6.1.192-3:") {
		t.Errorf("recipe %q does not name the source", base)
	}
	seen := map[string]string{base: "base"}
	for name, r := range map[string]string{
		"source":    builtKernelRecipe("6.1.192-4", "CONFIG_A=y\n", "gcc (Debian 12.2.0-14) 12.2.0; GNU ld 2.40"),
		"config":    builtKernelRecipe("6.1.192-3", "CONFIG_A=y\nCONFIG_B=y\n", "gcc (Debian 12.2.0-14) 12.2.0; GNU ld 2.40"),
		"compiler":  builtKernelRecipe("6.1.192-3", "CONFIG_A=y\n", "gcc (Debian 12.2.0-15) 12.2.0; GNU ld 2.40"),
		"linker":    builtKernelRecipe("6.1.192-3", "CONFIG_A=y\n", "gcc (Debian 12.2.0-14) 12.2.0; GNU ld 2.41"),
		"ambiguous": builtKernelRecipe("6.1.192-3\nconfig=x", "CONFIG_A=y\n", "gcc (Debian 12.2.0-14) 12.2.0; GNU ld 2.40"),
	} {
		if prev, dup := seen[r]; dup {
			t.Errorf("changing the %s gives the recipe of %s", name, prev)
		}
		seen[r] = name
	}
}

func TestKernelBuildEnv(t *testing.T) {
	env := kernelBuildEnv([]string{"PATH=/usr/bin", "ARCH=arm64", "CROSS_COMPILE=aarch64-", "KBUILD_OUTPUT=/x",
		"MAKEFLAGS=-j99", "HOME=/root", "CC=clang", "LOCALVERSION=-x"})
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if slices.Contains([]string{"ARCH", "CROSS_COMPILE", "KBUILD_OUTPUT", "MAKEFLAGS", "CC", "LOCALVERSION"}, name) {
			t.Errorf("%s reaches the build", kv)
		}
	}
	for _, want := range []string{"PATH=/usr/bin", "HOME=/root", "KBUILD_BUILD_USER=execlaw", "KBUILD_BUILD_HOST=execlaw"} {
		if !slices.Contains(env, want) {
			t.Errorf("%s missing from %q", want, env)
		}
	}
}

// The progress counts kbuild's CC lines, even split across writes, and
// reports at most once per interval.
func TestCompileProgress(t *testing.T) {
	now := time.Unix(1000, 0)
	var reports []string
	p := &compileProgress{start: now, last: now, every: 10 * time.Second, estimate: 10,
		report: func(s string) { reports = append(reports, s) }, now: func() time.Time { return now }}
	p.Write([]byte("  CC      kernel/fork.o\n  CC      kern"))
	p.Write([]byte("el/exit.o\n  AR      kernel/built-in.a\n  CC      arch/x86/kernel/x.s\n"))
	p.Write([]byte("  LD      vmlinux.o\n  CC      init/main.o\n"))
	if p.count() != 3 || len(reports) != 0 {
		t.Fatalf("count %d, reports %q", p.count(), reports)
	}
	now = now.Add(11 * time.Second)
	p.Write([]byte("  CC      mm/slub.o\n"))
	now = now.Add(time.Second)
	p.Write([]byte("  CC      mm/mmap.o\n"))
	if len(reports) != 1 || reports[0] != "compiling: 4 files (~40%), 11s" {
		t.Fatalf("reports %q", reports)
	}
	for range 20 {
		p.Write([]byte("  CC      lib/x.o\n"))
	}
	now = now.Add(time.Minute)
	p.Write([]byte("  CC      lib/last.o"))
	p.flush()
	if p.count() != 26 || reports[len(reports)-1] != "compiling: 25 files (~99%), 1m12s" {
		t.Fatalf("count %d, reports %q", p.count(), reports)
	}
}

// The fragment applied to the real kernel source: kconfig keeps every
// option of guest.config, and an option whose dependencies are missing is
// reported. It needs linux-source-6.1 installed (scripts/deps.sh --test)
// and takes a quarter of a minute (unpacking the source); no compile.
func TestGuestKernelConfigApplies(t *testing.T) {
	if testing.Short() {
		t.Skip("unpacks the kernel source (-short)")
	}
	src, err := findKernelSource(context.Background())
	if err != nil {
		t.Skip(err)
	}
	for _, tool := range []string{"make", "gcc", "bison", "flex"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	dir := t.TempDir()
	tree, obj := filepath.Join(dir, "src"), filepath.Join(dir, "obj")
	os.MkdirAll(tree, 0o755)
	os.MkdirAll(obj, 0o755)
	// Kconfig reads every Kconfig file the top one sources, and the kconfig
	// tools' sources; nothing else is needed to configure.
	out, err := exec.Command("tar", "-xJf", src.Tarball, "-C", tree, "--strip-components=1", "--wildcards",
		"*/Kconfig*", "*/scripts/*", "*/Makefile", "*/arch/x86/Makefile*", "*/arch/x86/configs/*",
		"*/kernel/configs/*").CombinedOutput()
	if err != nil {
		t.Fatalf("tar: %v: %s", err, lastLines(out, 5))
	}
	// Relative paths, as a relative data directory (setup.sh's ./data)
	// gives: make runs elsewhere (-C).
	cwd, _ := os.Getwd()
	relTo := func(p string) string {
		r, err := filepath.Rel(cwd, p)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	configure := func(fragment string) string {
		t.Helper()
		frag := filepath.Join(dir, "frag.config")
		os.WriteFile(frag, []byte(fragment), 0o644)
		os.Remove(filepath.Join(obj, ".config"))
		var log strings.Builder
		config, err := configureKernel(context.Background(), relTo(tree), relTo(obj), relTo(frag), &log)
		if err != nil {
			t.Fatalf("%v\n%s", err, lastLines([]byte(log.String()), 20))
		}
		return config
	}
	final := configure(GuestKernelConfig)
	if bad, err := verifyKernelConfig(GuestKernelConfig, final); err != nil || len(bad) > 0 {
		t.Fatalf("guest.config does not apply to %s %s: %v\n%s", KernelSourcePackage, src.Version, err, strings.Join(bad, "\n"))
	}
	// Bridge netfilter needs NETFILTER_ADVANCED, here switched off; USB
	// storage needs USB, which the fragment leaves off.
	broken := strings.Replace(GuestKernelConfig, "CONFIG_NETFILTER_ADVANCED=y\n", "", 1) + "CONFIG_USB_STORAGE=y\n"
	bad, err := verifyKernelConfig(broken, configure(broken))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"CONFIG_BRIDGE_NETFILTER: asked y", "CONFIG_USB_STORAGE: asked y"}
	if len(bad) != len(want) {
		t.Fatalf("reported %q, want %q", bad, want)
	}
	for i := range want {
		if !strings.HasPrefix(bad[i], want[i]) {
			t.Errorf("reported %q, want %q…", bad[i], want[i])
		}
	}
}

// A build's directory is swept once no build holds it: a killed kernel
// build leaves 1.5 GiB behind otherwise.
func TestSweepWorkDirs(t *testing.T) {
	store := t.TempDir()
	live, unlock, err := newWorkDir(store)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	dead, unlockDead, err := newWorkDir(store)
	if err != nil {
		t.Fatal(err)
	}
	unlockDead() // its build was killed
	young, unlockYoung, err := newWorkDir(store)
	if err != nil {
		t.Fatal(err)
	}
	unlockYoung()
	legacy := filepath.Join(store, ".build-legacy")       // no lock file, old
	legacyNew := filepath.Join(store, ".build-legacynew") // no lock file, recent
	other := filepath.Join(store, "blobs")
	for _, d := range []string{legacy, legacyNew, other} {
		os.MkdirAll(d, 0o755)
	}
	old := time.Now().Add(-2 * time.Hour)
	for _, p := range []string{filepath.Join(live, workLockName), filepath.Join(dead, workLockName), legacy} {
		os.Chtimes(p, old, old)
	}
	var out strings.Builder
	sweepWorkDirs(store, &out)
	for d, want := range map[string]bool{live: true, dead: false, young: true, legacy: false, legacyNew: true, other: true} {
		_, err := os.Stat(d)
		if got := err == nil; got != want {
			t.Errorf("%s: exists %v, want %v", filepath.Base(d), got, want)
		}
	}
	if strings.Count(out.String(), "removed") != 2 {
		t.Errorf("output %q", out.String())
	}
}

func TestBuildKernelOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    BuildOptions
		err  string
	}{
		{"unknown source", BuildOptions{KernelSource: "gentoo"}, `unknown kernel source "gentoo"`},
		{"source and file", BuildOptions{KernelSource: KernelDebian, KernelFile: "/boot/vmlinuz"}, "give one"},
		{"source and deb", BuildOptions{KernelSource: KernelBuilt, KernelDeb: "k.deb"}, "give one"},
		{"file and deb", BuildOptions{KernelFile: "/boot/vmlinuz", KernelDeb: "k.deb"}, "give one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.DataDir = t.TempDir()
			if _, err := Build(context.Background(), tc.o); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err %v, want one about %q", err, tc.err)
			}
		})
	}
}

// The image the VM tests built (testutil.VMImage), when this machine has
// one with the built kernel: its kernel is configured as guest.config says,
// its vmlinux boots through PVH and the Linux boot protocol, and its
// initramfs is uncompressed with /init and no modules. The suite does not
// need one; the VM tests boot it.
func TestBuiltKernelTestImage(t *testing.T) {
	dir := os.Getenv("EXECLAW_TEST_IMAGES") // as testutil.VMImage
	if dir == "" {
		dir = "/var/tmp/execlaw-test-images"
	}
	st, err := NewStore(dir)
	if err != nil {
		t.Skip(err)
	}
	m, err := st.Load("minimal")
	if err != nil || m.KernelSource != KernelBuilt {
		t.Skip("no test image with the built kernel on this machine")
	}
	for name, c := range m.Components() {
		if !st.present(c) {
			t.Skipf("the test image's %s is missing", name)
		}
	}
	if !strings.HasSuffix(m.Kernel.Version, "-execlaw") || m.Kernel.Recipe != m.Vmlinux.Recipe || m.KernelConfig.Recipe != m.Kernel.Recipe {
		t.Errorf("kernel %q, recipes %q %q %q", m.Kernel.Version, m.Kernel.Recipe, m.Vmlinux.Recipe, m.KernelConfig.Recipe)
	}
	if m.KernelPackage.SHA256 != "" || len(m.Initramfs.Items) != 0 {
		t.Errorf("a built kernel with a package (%v) or modules (%v)", m.KernelPackage, m.Initramfs.Items)
	}
	config, err := os.ReadFile(st.Path(m.KernelConfig.Blob))
	if err != nil {
		t.Fatal(err)
	}
	// Built from this guest.config, the image's configuration has all of it.
	if src, err := findKernelSource(context.Background()); err == nil {
		if tc, err := toolchainVersion(context.Background()); err == nil && m.Kernel.Recipe == builtKernelRecipe(src.Version, GuestKernelConfig, tc) {
			if bad, err := verifyKernelConfig(GuestKernelConfig, string(config)); err != nil || len(bad) > 0 {
				t.Errorf("the kernel's .config: %v %q", err, bad)
			}
		}
	}
	if !strings.Contains(string(config), "\n# CONFIG_MODULES is not set\n") {
		t.Error("the kernel's .config has modules")
	}

	vmlinux, err := os.ReadFile(st.Path(m.Vmlinux.Blob))
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Firecracker jumps to the ELF entry (startup_64) with the Linux boot
	// protocol; QEMU's microvm enters through the PVH note (Xen's
	// PHYS32_ENTRY, type 18).
	if f.Entry < 0x100000 || f.Entry >= 1<<32 {
		t.Errorf("entry %#x, want a physical address above 1 MiB", f.Entry)
	}
	pvh := false
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		notes, _ := io.ReadAll(p.Open())
		for len(notes) >= 12 {
			nameSz, descSz, typ := binary.LittleEndian.Uint32(notes), binary.LittleEndian.Uint32(notes[4:]), binary.LittleEndian.Uint32(notes[8:])
			name := notes[12:min(len(notes), 12+int(nameSz))]
			if bytes.HasPrefix(name, []byte("Xen\x00")) && typ == 18 {
				pvh = true
			}
			adv := 12 + int((nameSz+3)&^3) + int((descSz+3)&^3)
			if adv > len(notes) {
				break
			}
			notes = notes[adv:]
		}
	}
	if !pvh {
		t.Error("the vmlinux has no PVH entry note")
	}

	initrd, err := os.ReadFile(st.Path(m.Initramfs.Blob))
	if err != nil {
		t.Fatal(err)
	}
	entries, err := readNewc(initrd)
	if err != nil {
		t.Fatalf("the initramfs is not an uncompressed newc archive: %v", err)
	}
	got := strings.Join(names(entries), " ")
	if !strings.Contains(" "+got+" ", " init ") || strings.Contains(got, "lib/modules") {
		t.Errorf("initramfs holds %s; want /init and no modules", got)
	}
	t.Logf("%s: vmlinux %s, bzImage %s, initramfs %s (%s)", m.Kernel.Version, mib(m.Vmlinux.Size), mib(m.Kernel.Size), mib(m.Initramfs.Size), m.Kernel.Source)
}
