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
	"runtime"
	"strings"
	"syscall"
	"time"
)

// BuildOptions say what to build.
type BuildOptions struct {
	DataDir     string
	Name        string // the image's name; default: the profile's
	Profile     string // "dev" (default) or "minimal"
	Distro      string // "bookworm" (default) or "noble"
	Mirror      string // overrides the distribution's mirror
	GuestBinary string // the static execlaw-guest to put in the initramfs
	// KernelSource is KernelBuilt or KernelDebian; empty means
	// DefaultKernelSource. KernelFile and KernelDeb override it.
	KernelSource string
	KernelFile   string // a bzImage to use instead of Debian's kernel
	ModulesDir   string // the modules of KernelFile, if it needs any
	KernelDeb    string // a kernel .deb to use instead of downloading one
	// KernelJobs is how many compiles a kernel build runs at once; 0 means
	// one per CPU.
	KernelJobs int
	Agents     AgentSpec // agent CLIs to install in the root filesystem
	Force      bool      // rebuild everything even when the inputs did not change
	Version    string    // execlaw's version, recorded in the manifest
	Out        io.Writer
}

// initramfsFormat changes when the initramfs layout changes.
const initramfsFormat = "2"

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
	switch o.KernelSource {
	case "":
		o.KernelSource = DefaultKernelSource
	case KernelBuilt, KernelDebian:
		if o.KernelFile != "" || o.KernelDeb != "" {
			return Manifest{}, fmt.Errorf("a kernel source (%s) and a kernel file both name the kernel; give one", o.KernelSource)
		}
	default:
		return Manifest{}, fmt.Errorf("unknown kernel source %q (want %s or %s)", o.KernelSource, KernelBuilt, KernelDebian)
	}
	if o.KernelFile != "" && o.KernelDeb != "" {
		return Manifest{}, errors.New("--kernel and --kernel-deb both name the kernel; give one")
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
	work, unlock, err := newWorkDir(st.Dir)
	if err != nil {
		return Manifest{}, err
	}
	defer func() {
		os.RemoveAll(work)
		unlock()
	}()
	sweepWorkDirs(st.Dir, o.Out)

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
		recipe, source, deb, kind string
		dk                        debianKernel
		ks                        kernelSource
	)
	switch {
	case b.o.KernelFile != "":
		sum, err := fileSHA256(b.o.KernelFile)
		if err != nil {
			return unpackedKernel{}, err
		}
		recipe, source, kind = "file:"+sum, b.o.KernelFile, "file"
	case b.o.KernelDeb != "":
		sum, err := fileSHA256(b.o.KernelDeb)
		if err != nil {
			return unpackedKernel{}, err
		}
		recipe, source, deb, kind = "deb:"+sum, b.o.KernelDeb, b.o.KernelDeb, "deb"
	case b.o.KernelSource == KernelBuilt:
		var err error
		if ks, err = findKernelSource(ctx); err != nil {
			return unpackedKernel{}, err
		}
		tc, err := toolchainVersion(ctx)
		if err != nil {
			return unpackedKernel{}, fmt.Errorf("%w (building the kernel needs gcc and binutils: apt-get install %s)", err, strings.Join(kernelBuildPackages, " "))
		}
		gcc, _, _ := strings.Cut(tc, "; ")
		recipe, kind = builtKernelRecipe(ks.Version, GuestKernelConfig, tc), KernelBuilt
		source = fmt.Sprintf("built from %s %s with guest.config %s, %s", KernelSourcePackage, ks.Version, configSHA256(GuestKernelConfig), gcc)
	default:
		var err error
		if dk, err = resolveDebianKernel(ctx); err != nil {
			return unpackedKernel{}, err
		}
		recipe, source, kind = dk.recipe(), "Debian "+dk.Package+" "+dk.Version, KernelDebian
	}
	m.KernelSource = kind
	if c, ok := b.reuseKernel(recipe); ok {
		m.Kernel, m.Vmlinux, m.KernelPackage, m.KernelConfig = c.Kernel, c.Vmlinux, c.KernelPackage, c.KernelConfig
		b.step(1, "kernel %s: unchanged (%s)", m.Kernel.Version, m.Kernel.Source)
		return b.unpackCached(ctx, m)
	}
	if kind == KernelBuilt {
		return b.buildKernel(ctx, m, ks, recipe, source)
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
	if err := b.storeKernel(m, &kern, recipe, source); err != nil {
		return unpackedKernel{}, err
	}
	b.step(1, "kernel %s: bzImage %s, vmlinux %s", kern.Version, mib(m.Kernel.Size), mib(m.Vmlinux.Size))
	return kern, nil
}

// storeKernel puts a kernel's bzImage and the vmlinux extracted from it in
// the store.
func (b *builder) storeKernel(m *Manifest, kern *unpackedKernel, recipe, source string) error {
	bz, err := os.ReadFile(kern.BzImage)
	if err != nil {
		return err
	}
	if kern.Version == "" {
		kern.Version = kernelRelease(bz)
	}
	vmlinux, err := ExtractVmlinux(bz)
	if err != nil {
		return err
	}
	kb, err := b.st.PutBytes(bz)
	if err != nil {
		return err
	}
	vb, err := b.st.PutBytes(vmlinux)
	if err != nil {
		return err
	}
	m.Kernel = Component{Blob: kb, Recipe: recipe, Version: kern.Version, Source: source}
	m.Vmlinux = Component{Blob: vb, Recipe: recipe, Version: kern.Version, Source: "extracted from the bzImage"}
	return nil
}

// buildKernel compiles the guest kernel (unless an image in the store has
// the same recipe: see reuseKernel) and stores it with its configuration.
func (b *builder) buildKernel(ctx context.Context, m *Manifest, ks kernelSource, recipe, source string) (unpackedKernel, error) {
	if err := checkKernelBuildTools(); err != nil {
		return unpackedKernel{}, err
	}
	jobs := b.o.KernelJobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	opts, _ := parseKconfig(GuestKernelConfig)
	b.step(1, "kernel: building from %s %s (guest.config: %d options, no modules; %d jobs, about %d minutes on 2 cores)",
		KernelSourcePackage, ks.Version, len(opts), jobs, 10)
	dir := filepath.Join(b.work, "kernel-build")
	defer os.RemoveAll(dir) // 1.5 GiB of source and objects
	built, err := buildKernel(ctx, ks, GuestKernelConfig, dir, jobs, func(s string) {
		fmt.Fprintf(b.o.Out, "      kernel: %s\n", s)
	})
	if err != nil {
		// Keep the log where the user can read it after the build dir is gone.
		logPath := filepath.Join(b.st.Dir, "kernel-build.log")
		if copyFile(filepath.Join(dir, "build.log"), logPath) == nil {
			err = fmt.Errorf("%w\n(the whole log: %s)", err, logPath)
		}
		return unpackedKernel{}, err
	}
	kern := unpackedKernel{BzImage: built.BzImage}
	if err := b.storeKernel(m, &kern, recipe, source); err != nil {
		return unpackedKernel{}, err
	}
	cb, err := b.st.PutBytes([]byte(built.Config))
	if err != nil {
		return unpackedKernel{}, err
	}
	m.KernelConfig = Component{Blob: cb, Recipe: recipe, Version: kern.Version, Source: "the .config the kernel was built with"}
	b.step(1, "kernel %s: built in %s (%d files compiled), bzImage %s, vmlinux %s", kern.Version,
		built.Took.Round(time.Second), built.Objects, mib(m.Kernel.Size), mib(m.Vmlinux.Size))
	return kern, nil
}

// reuseKernel finds a kernel made from recipe whose files are all in the
// store: this image's previous one, or another image's (so the test images,
// or a dev and a minimal image, compile the kernel once between them).
func (b *builder) reuseKernel(recipe string) (Manifest, bool) {
	return b.reuse(func(m Manifest) bool {
		return m.Kernel.Recipe == recipe && b.st.present(m.Kernel) && b.st.present(m.Vmlinux) &&
			(m.KernelPackage.SHA256 == "" || b.st.present(m.KernelPackage)) &&
			(m.KernelConfig.SHA256 == "" || b.st.present(m.KernelConfig))
	})
}

// reuse returns the manifest whose parts can serve this build, as usable
// says: this image's previous one first, then (unless the build is forced)
// any other image in the store, as parts are named by their recipes.
func (b *builder) reuse(usable func(Manifest) bool) (Manifest, bool) {
	if usable(b.prev) {
		return b.prev, true
	}
	if b.o.Force {
		return Manifest{}, false
	}
	others, err := b.st.List()
	if err != nil {
		return Manifest{}, false
	}
	for _, m := range others {
		if m.Name != b.o.Name && usable(m) {
			return m, true
		}
	}
	return Manifest{}, false
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
	comp := "gz"
	if !compressInitramfs(m) {
		comp = "raw"
	}
	return "initramfs:" + initramfsFormat + ":" + sum[:16] + ":" + m.Kernel.SHA256[:16] + ":" + hex.EncodeToString(mods[:4]) + ":" + comp, nil
}

// compressInitramfs says whether the image's initramfs is gzip-compressed:
// not for the kernel execlaw builds (boots faster under TCG without the
// inflating, see BuildInitramfs), as before for the others.
func compressInitramfs(m *Manifest) bool { return m.KernelSource != KernelBuilt }

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
	data, mods, err := BuildInitramfs(b.o.GuestBinary, kern.ModulesDir, compressInitramfs(m))
	if err != nil {
		return err
	}
	blob, err := b.st.PutBytes(data)
	if err != nil {
		return err
	}
	m.Initramfs = Component{Blob: blob, Recipe: recipe, Source: b.o.GuestBinary, Items: mods}
	how := "uncompressed"
	if compressInitramfs(m) {
		how = "gzip"
	}
	b.step(2, "initramfs: execlaw-guest as /init and %d modules, %s (%s)", len(mods), mib(blob.Size), how)
	return nil
}

func (b *builder) rootfs(ctx context.Context, m *Manifest, d Distro, p Profile) error {
	agents := b.o.Agents
	p.Packages = append(append([]string(nil), p.Packages...), agents.packages()...)
	recipe := rootfsRecipe(d, p, agents)
	if from, ok := b.reuse(func(m Manifest) bool { return m.Rootfs.Recipe == recipe && b.st.present(m.Rootfs) }); ok {
		m.Rootfs, m.Agents = from.Rootfs, from.Agents
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
	fmt.Fprintf(b.o.Out, "  kernel     %-10s %s  %s (%s)\n", mib(m.Kernel.Size), short(m.Kernel.SHA256), m.Kernel.Version, m.KernelSource)
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

// A build works in a directory of its own under the store, .build-*, which
// it removes when done; a kernel build puts 1.5 GiB there. A build that was
// killed cannot, so every build sweeps away those no live build holds: each
// holds an flock on its directory's .lock for as long as it runs.
const workLockName = ".lock"

// newWorkDir makes a build's directory and locks it.
func newWorkDir(storeDir string) (dir string, unlock func(), err error) {
	dir, err = os.MkdirTemp(storeDir, ".build-")
	if err != nil {
		return "", nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, workLockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err == nil {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("locking the build directory: %w", err)
	}
	return dir, func() { f.Close() }, nil
}

// staleUnlockedAge is how old a build directory without a lock file (made
// by an execlaw from before the lock) must be to be swept.
const staleUnlockedAge = time.Hour

// sweepWorkDirs removes the build directories of builds that are gone.
func sweepWorkDirs(storeDir string, out io.Writer) {
	dirs, _ := filepath.Glob(filepath.Join(storeDir, ".build-*"))
	for _, d := range dirs {
		if workDirStale(d) {
			if err := os.RemoveAll(d); err == nil {
				fmt.Fprintf(out, "removed %s, left by a build that did not finish\n", d)
			}
		}
	}
}

func workDirStale(dir string) bool {
	f, err := os.Open(filepath.Join(dir, workLockName))
	if err != nil {
		fi, err := os.Stat(dir)
		return err == nil && fi.IsDir() && time.Since(fi.ModTime()) > staleUnlockedAge
	}
	defer f.Close()
	// A build locks its file just after making it.
	if fi, err := f.Stat(); err != nil || time.Since(fi.ModTime()) < time.Minute {
		return false
	}
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return false // a build holds it
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return true
}
