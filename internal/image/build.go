package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// BuildOptions say what to build.
type BuildOptions struct {
	DataDir     string
	Name        string    // the image's name; default: the profile's
	Profile     string    // "dev" (default) or "minimal"
	Distro      string    // "bookworm" (default) or "noble"
	Mirror      string    // overrides the distribution's mirror
	GuestBinary string    // the static execlaw-guest to put in the initramfs
	KernelFile  string    // a bzImage to use instead of Debian's kernel
	ModulesDir  string    // the modules of KernelFile, if it needs any
	KernelDeb   string    // a kernel .deb to use instead of downloading one
	Agents      AgentSpec // agent CLIs to install in the root filesystem
	Force       bool      // rebuild everything even when the inputs did not change
	Version     string    // execlaw's version, recorded in the manifest
	Out         io.Writer
}

// initramfsFormat changes when the initramfs layout changes.
const initramfsFormat = "1"

// Build builds (or brings up to date) an image and records its manifest.
// Parts whose inputs did not change since the last build are reused, so
// running it again is quick and changes nothing.
func Build(ctx context.Context, o BuildOptions) (Manifest, error) {
	if o.Profile == "" {
		o.Profile = "dev"
	}
	if o.Distro == "" {
		o.Distro = "bookworm"
	}
	if o.Name == "" {
		o.Name = o.Profile
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	prof, ok := Profiles[o.Profile]
	if !ok {
		return Manifest{}, fmt.Errorf("unknown profile %q (want dev or minimal)", o.Profile)
	}
	distro, ok := Distros[o.Distro]
	if !ok {
		return Manifest{}, fmt.Errorf("unknown distribution %q (want bookworm or noble)", o.Distro)
	}
	if o.Mirror != "" {
		distro.Mirror = o.Mirror
	}
	if !validName.MatchString(o.Name) {
		return Manifest{}, fmt.Errorf("image name %q is not valid", o.Name)
	}
	if err := o.Agents.validate(); err != nil {
		return Manifest{}, err
	}
	st, err := NewStore(o.DataDir)
	if err != nil {
		return Manifest{}, err
	}
	prev, err := st.Load(o.Name)
	if err != nil && !errors.Is(err, ErrNoImage) {
		return Manifest{}, err
	}
	if o.Force {
		prev = Manifest{}
	}
	work, err := os.MkdirTemp(st.Dir, ".build-")
	if err != nil {
		return Manifest{}, err
	}
	defer os.RemoveAll(work)

	b := &builder{o: o, st: st, prev: prev, work: work, started: time.Now()}
	m := Manifest{Name: o.Name, Profile: prof.Name, Distro: distro.Name, Arch: "amd64", ExecLawVersion: o.Version}
	kern, err := b.kernel(ctx, &m)
	if err != nil {
		return Manifest{}, fmt.Errorf("kernel: %w", err)
	}
	if err := b.initramfs(&m, kern); err != nil {
		return Manifest{}, fmt.Errorf("initramfs: %w", err)
	}
	if err := b.rootfs(ctx, &m, distro, prof); err != nil {
		return Manifest{}, fmt.Errorf("rootfs: %w", err)
	}
	m.BuiltAt = time.Now().UTC()
	if err := st.Save(m); err != nil {
		return Manifest{}, err
	}
	b.step(4, "manifest %s", filepath.Join(st.Dir, m.Name+".json"))
	b.summary(m)
	return m, nil
}

type builder struct {
	o       BuildOptions
	st      *Store
	prev    Manifest
	work    string
	started time.Time
}

func (b *builder) step(n int, format string, args ...any) {
	fmt.Fprintf(b.o.Out, "[%d/4] %s\n", n, fmt.Sprintf(format, args...))
}

// kernel provides the bzImage, the vmlinux and, when the initramfs must be
// rebuilt, the unpacked modules.
func (b *builder) kernel(ctx context.Context, m *Manifest) (unpackedKernel, error) {
	var (
		recipe, source, deb string
		dk                  debianKernel
	)
	switch {
	case b.o.KernelFile != "":
		sum, err := fileSHA256(b.o.KernelFile)
		if err != nil {
			return unpackedKernel{}, err
		}
		recipe, source = "file:"+sum, b.o.KernelFile
	case b.o.KernelDeb != "":
		sum, err := fileSHA256(b.o.KernelDeb)
		if err != nil {
			return unpackedKernel{}, err
		}
		recipe, source, deb = "deb:"+sum, b.o.KernelDeb, b.o.KernelDeb
	default:
		var err error
		if dk, err = resolveDebianKernel(ctx); err != nil {
			return unpackedKernel{}, err
		}
		recipe, source = dk.recipe(), "Debian "+dk.Package+" "+dk.Version
	}
	if b.prev.Kernel.Recipe == recipe && b.st.present(b.prev.Kernel) && b.st.present(b.prev.Vmlinux) &&
		(b.prev.KernelPackage.SHA256 == "" || b.st.present(b.prev.KernelPackage)) {
		m.Kernel, m.Vmlinux, m.KernelPackage = b.prev.Kernel, b.prev.Vmlinux, b.prev.KernelPackage
		b.step(1, "kernel %s: unchanged (%s)", m.Kernel.Version, source)
		return b.unpackCached(ctx, m)
	}

	var kern unpackedKernel
	switch {
	case b.o.KernelFile != "":
		b.step(1, "kernel: using %s", b.o.KernelFile)
		kern = unpackedKernel{BzImage: b.o.KernelFile, ModulesDir: b.o.ModulesDir}
	default:
		if deb == "" {
			b.step(1, "kernel: downloading %s %s", dk.Package, dk.Version)
			var err error
			if deb, err = downloadDebianKernel(ctx, dk, b.work); err != nil {
				return unpackedKernel{}, err
			}
		}
		pkg, err := b.st.PutBytesFromFile(deb)
		if err != nil {
			return unpackedKernel{}, err
		}
		m.KernelPackage = Component{Blob: pkg, Recipe: recipe, Source: source}
		b.step(1, "kernel: unpacking %s (%s)", filepath.Base(deb), mib(pkg.Size))
		if kern, err = unpackKernelDeb(ctx, b.st.Path(pkg), filepath.Join(b.work, "kernel")); err != nil {
			return unpackedKernel{}, err
		}
	}
	bz, err := os.ReadFile(kern.BzImage)
	if err != nil {
		return unpackedKernel{}, err
	}
	if kern.Version == "" {
		kern.Version = kernelRelease(bz)
	}
	vmlinux, err := ExtractVmlinux(bz)
	if err != nil {
		return unpackedKernel{}, err
	}
	kb, err := b.st.PutBytes(bz)
	if err != nil {
		return unpackedKernel{}, err
	}
	vb, err := b.st.PutBytes(vmlinux)
	if err != nil {
		return unpackedKernel{}, err
	}
	m.Kernel = Component{Blob: kb, Recipe: recipe, Version: kern.Version, Source: source}
	m.Vmlinux = Component{Blob: vb, Recipe: recipe, Version: kern.Version, Source: "extracted from the bzImage"}
	b.step(1, "kernel %s: bzImage %s, vmlinux %s", kern.Version, mib(kb.Size), mib(vb.Size))
	return kern, nil
}

// unpackCached makes the modules of an unchanged kernel available again, but
// only when the initramfs will need them.
func (b *builder) unpackCached(ctx context.Context, m *Manifest) (unpackedKernel, error) {
	kern := unpackedKernel{Version: m.Kernel.Version, BzImage: b.st.Path(m.Kernel.Blob), ModulesDir: b.o.ModulesDir}
	if m.KernelPackage.SHA256 == "" || b.initramfsReusable(m) {
		return kern, nil
	}
	return unpackKernelDeb(ctx, b.st.Path(m.KernelPackage.Blob), filepath.Join(b.work, "kernel"))
}

func (b *builder) initramfsRecipe(m *Manifest) (string, error) {
	sum, err := fileSHA256(b.o.GuestBinary)
	if err != nil {
		return "", fmt.Errorf("guest binary: %w", err)
	}
	mods := sha256.Sum256([]byte(strings.Join(GuestModules, ",")))
	return "initramfs:" + initramfsFormat + ":" + sum[:16] + ":" + m.Kernel.SHA256[:16] + ":" + hex.EncodeToString(mods[:4]), nil
}

func (b *builder) initramfsReusable(m *Manifest) bool {
	r, err := b.initramfsRecipe(m)
	return err == nil && b.prev.Initramfs.Recipe == r && b.st.present(b.prev.Initramfs)
}

func (b *builder) initramfs(m *Manifest, kern unpackedKernel) error {
	recipe, err := b.initramfsRecipe(m)
	if err != nil {
		return err
	}
	if b.initramfsReusable(m) {
		m.Initramfs = b.prev.Initramfs
		b.step(2, "initramfs: unchanged (%s, %d modules)", mib(m.Initramfs.Size), len(m.Initramfs.Items))
		return nil
	}
	data, mods, err := BuildInitramfs(b.o.GuestBinary, kern.ModulesDir)
	if err != nil {
		return err
	}
	blob, err := b.st.PutBytes(data)
	if err != nil {
		return err
	}
	m.Initramfs = Component{Blob: blob, Recipe: recipe, Source: b.o.GuestBinary, Items: mods}
	b.step(2, "initramfs: execlaw-guest as /init and %d modules, %s", len(mods), mib(blob.Size))
	return nil
}

func (b *builder) rootfs(ctx context.Context, m *Manifest, d Distro, p Profile) error {
	agents := b.o.Agents
	p.Packages = append(append([]string(nil), p.Packages...), agents.packages()...)
	recipe := rootfsRecipe(d, p, agents)
	if b.prev.Rootfs.Recipe == recipe && b.st.present(b.prev.Rootfs) {
		m.Rootfs, m.Agents = b.prev.Rootfs, b.prev.Agents
		b.step(3, "rootfs %s (%s): unchanged, %s", d.Name, p.Name, mib(m.Rootfs.Size))
		return nil
	}
	if os.Geteuid() != 0 {
		return errors.New("building a root filesystem needs root (debootstrap); run it with sudo")
	}
	if err := checkMirror(ctx, d); err != nil {
		return err
	}
	tree := filepath.Join(b.work, "root")
	log, err := os.Create(filepath.Join(b.work, "debootstrap.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	b.step(3, "rootfs: debootstrap %s (%s profile) from %s", d.Name, p.Name, d.Mirror)
	start := time.Now()
	// Whatever happens, nothing the build mounted may outlive it.
	defer unmountUnder(tree)
	err = debootstrap(ctx, d, p, tree, log, func(n int64) {
		fmt.Fprintf(b.o.Out, "      debootstrap: %s written, %s\n", mib(n), time.Since(start).Round(time.Second))
	})
	if err != nil {
		log.Sync()
		tail, _ := os.ReadFile(log.Name())
		return fmt.Errorf("%w\n%s", err, lastLines(tail, 10))
	}
	if err := unmountUnder(tree); err != nil {
		return err
	}
	pkgs, err := installedPackages(tree)
	if err != nil {
		return err
	}
	if err := configureRootfs(tree); err != nil {
		return err
	}
	if m.Agents, err = agents.install(ctx, tree, b.o.Out); err != nil {
		return err
	}
	img := filepath.Join(b.work, "rootfs.ext4")
	b.step(3, "rootfs: writing ext4 image (%s of files, %d packages)", mib(dirSize(tree)), len(pkgs))
	if err := mkfsFromDir(ctx, tree, img); err != nil {
		return err
	}
	blob, err := b.st.PutFile(img)
	if err != nil {
		return err
	}
	m.Rootfs = Component{Blob: blob, Recipe: recipe, Version: d.Name, Source: d.Mirror, Items: pkgs}
	b.step(3, "rootfs: %s, %s in %s", d.Name, mib(blob.Size), time.Since(start).Round(time.Second))
	return nil
}

func (b *builder) summary(m Manifest) {
	fmt.Fprintf(b.o.Out, "\nimage %q built in %s\n", m.Name, time.Since(b.started).Round(time.Second))
	fmt.Fprintf(b.o.Out, "  kernel     %-10s %s  %s\n", mib(m.Kernel.Size), short(m.Kernel.SHA256), m.Kernel.Version)
	fmt.Fprintf(b.o.Out, "  vmlinux    %-10s %s\n", mib(m.Vmlinux.Size), short(m.Vmlinux.SHA256))
	fmt.Fprintf(b.o.Out, "  initramfs  %-10s %s  %d modules\n", mib(m.Initramfs.Size), short(m.Initramfs.SHA256), len(m.Initramfs.Items))
	fmt.Fprintf(b.o.Out, "  rootfs     %-10s %s  %s %s, %d packages\n", mib(m.Rootfs.Size), short(m.Rootfs.SHA256), m.Distro, m.Profile, len(m.Rootfs.Items))
}

// PutBytesFromFile stores a copy of a file, leaving the original in place.
func (s *Store) PutBytesFromFile(path string) (Blob, error) {
	tmp, err := os.CreateTemp(filepath.Join(s.Dir, "blobs"), ".put-*")
	if err != nil {
		return Blob{}, err
	}
	tmp.Close()
	if err := copyFile(path, tmp.Name()); err != nil {
		os.Remove(tmp.Name())
		return Blob{}, err
	}
	return s.PutFile(tmp.Name())
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	return sum
}
