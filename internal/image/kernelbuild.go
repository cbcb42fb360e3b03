package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Where the guest kernel comes from (BuildOptions.KernelSource).
const (
	// KernelBuilt is a kernel compiled here from Debian's kernel source
	// package with GuestKernelConfig: everything the guests use built in, no
	// modules. The default.
	KernelBuilt = "built"
	// KernelDebian is Debian's linux-image-amd64 package, with the modules
	// the guest init loads from the initramfs.
	KernelDebian = "debian"
)

// DefaultKernelSource is what an image build uses unless told otherwise.
const DefaultKernelSource = KernelBuilt

// KernelSourcePackage is Debian's package holding the kernel's source
// (patched as Debian's own kernels are) as a tarball under /usr/src.
const KernelSourcePackage = "linux-source-6.1"

// GuestKernelConfig is the configuration fragment of the built kernel,
// applied over `make allnoconfig`.
//
//go:embed kernel/guest.config
var GuestKernelConfig string

// kernelBuildFormat changes when the way the kernel is built changes, so
// kernels built the old way are rebuilt.
const kernelBuildFormat = "1"

// kernelBuildTimeout bounds the compile (about ten minutes on two cores).
const kernelBuildTimeout = 90 * time.Minute

// kernelObjectsEstimate is about how many files the build compiles with
// guest.config (counted from its "CC" lines); it only turns progress into a
// percentage, so it need not be exact.
const kernelObjectsEstimate = 1450

// kernelSource is the installed source package.
type kernelSource struct {
	Version string // the package version, e.g. 6.1.192-3
	Tarball string // /usr/src/linux-source-6.1.tar.xz
}

// findKernelSource checks that the source package is installed and returns it.
func findKernelSource(ctx context.Context) (kernelSource, error) {
	out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Status}\t${Version}", KernelSourcePackage).Output()
	status, version, _ := strings.Cut(string(out), "\t")
	if err != nil || !strings.HasSuffix(status, " installed") || version == "" {
		return kernelSource{}, fmt.Errorf("%s is not installed; install it and the kernel's build tools with `apt-get install %s` (scripts/deps.sh does), or use Debian's kernel with --kernel-source debian",
			KernelSourcePackage, strings.Join(kernelBuildPackages, " "))
	}
	tarball := filepath.Join("/usr/src", KernelSourcePackage+".tar.xz")
	if _, err := os.Stat(tarball); err != nil {
		return kernelSource{}, fmt.Errorf("%s %s is installed but %s is missing: %w", KernelSourcePackage, version, tarball, err)
	}
	return kernelSource{Version: version, Tarball: tarball}, nil
}

// kernelBuildPackages are the Debian packages the build needs: the source,
// the compiler, and the tools kbuild and objtool run.
var kernelBuildPackages = []string{KernelSourcePackage, "build-essential", "bc", "bison", "flex", "libelf-dev", "xz-utils"}

// kernelBuildTools are the commands the build runs, and the package of each.
var kernelBuildTools = [][2]string{
	{"gcc", "gcc"}, {"ld", "binutils"}, {"make", "make"}, {"bc", "bc"}, {"bison", "bison"},
	{"flex", "flex"}, {"tar", "tar"}, {"xz", "xz-utils"},
}

// checkKernelBuildTools reports every missing tool at once, with the
// packages that provide them.
func checkKernelBuildTools() error {
	var missing []string
	for _, t := range kernelBuildTools {
		if _, err := exec.LookPath(t[0]); err != nil {
			missing = append(missing, t[1])
		}
	}
	// objtool, which the x86-64 build always runs, links with libelf.
	if _, err := os.Stat("/usr/include/libelf.h"); err != nil {
		missing = append(missing, "libelf-dev")
	}
	if len(missing) > 0 {
		return fmt.Errorf("building the kernel needs %s: apt-get install %s (scripts/deps.sh installs them)",
			strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	if runtime.GOARCH != "amd64" {
		return fmt.Errorf("the guest kernel is built for x86-64, on an x86-64 host (this is %s)", runtime.GOARCH)
	}
	return nil
}

// toolchainVersion identifies the compiler and linker: a new one makes a
// different kernel.
func toolchainVersion(ctx context.Context) (string, error) {
	var parts []string
	for _, tool := range []string{"gcc", "ld"} {
		out, err := exec.CommandContext(ctx, tool, "--version").Output()
		if err != nil {
			return "", fmt.Errorf("%s --version: %w", tool, err)
		}
		first, _, _ := strings.Cut(string(out), "\n")
		parts = append(parts, strings.TrimSpace(first))
	}
	return strings.Join(parts, "; "), nil
}

// builtKernelRecipe names a built kernel by everything that makes it: the
// source package's version, the configuration fragment, the toolchain and
// the way it is built.
func builtKernelRecipe(sourceVersion, fragment, toolchain string) string {
	h := sha256.New()
	fmt.Fprintf(h, "format=%s\nsource=%s=%s\ntoolchain=%s\nconfig=%s", kernelBuildFormat,
		KernelSourcePackage, sourceVersion, toolchain, fragment)
	return "build:" + KernelSourcePackage + "=" + sourceVersion + ":" + hex.EncodeToString(h.Sum(nil))[:16]
}

// configSHA256 is the short hash of a configuration fragment, for the manifest.
func configSHA256(fragment string) string {
	sum := sha256.Sum256([]byte(fragment))
	return hex.EncodeToString(sum[:])[:12]
}

// kconfigOption is one line of a configuration: CONFIG_X=value, or
// "# CONFIG_X is not set" (value "n").
var (
	kconfigSet   = regexp.MustCompile(`^(CONFIG_[A-Za-z0-9_]+)=(.*)$`)
	kconfigUnset = regexp.MustCompile(`^# (CONFIG_[A-Za-z0-9_]+) is not set$`)
)

// parseKconfig reads a .config or a fragment into option -> value ("n" for
// an option that is not set). Other lines must be blank or comments; a
// fragment that sets an option twice is refused, as kconfig would only warn.
func parseKconfig(text string) (map[string]string, error) {
	opts := map[string]string{}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		var name, value string
		if m := kconfigSet.FindStringSubmatch(line); m != nil {
			name, value = m[1], m[2]
		} else if m := kconfigUnset.FindStringSubmatch(line); m != nil {
			name, value = m[1], "n"
		} else if line == "" || strings.HasPrefix(line, "#") {
			continue
		} else {
			return nil, fmt.Errorf("line %d: %q is not an option", i+1, line)
		}
		if _, dup := opts[name]; dup {
			return nil, fmt.Errorf("line %d: %s is set twice", i+1, name)
		}
		opts[name] = value
	}
	return opts, nil
}

// verifyKernelConfig checks that every option of the fragment came out of
// kconfig as asked: it silently drops options whose dependencies are not
// met, and a kernel without them would fail at run time instead. It returns
// one line per option that did not.
func verifyKernelConfig(fragment, final string) ([]string, error) {
	want, err := parseKconfig(fragment)
	if err != nil {
		return nil, fmt.Errorf("the configuration fragment: %w", err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(final, "\n") {
		line = strings.TrimSpace(line)
		if m := kconfigSet.FindStringSubmatch(line); m != nil {
			got[m[1]] = m[2]
		} else if m := kconfigUnset.FindStringSubmatch(line); m != nil {
			got[m[1]] = "n"
		}
	}
	var bad []string
	for name, w := range want {
		g, ok := got[name]
		switch {
		case w == "n" && (!ok || g == "n"):
		case g == w:
		case !ok:
			bad = append(bad, fmt.Sprintf("%s: asked %s, but it is not in the configuration (its dependencies are not met, or there is no such option)", name, w))
		default:
			bad = append(bad, fmt.Sprintf("%s: asked %s, got %s", name, w, g))
		}
	}
	sort.Strings(bad)
	return bad, nil
}

// builtKernel is what a kernel build leaves: the bzImage and the full
// configuration it was built with.
type builtKernel struct {
	BzImage string
	Config  string
	Objects int           // files compiled
	Took    time.Duration // the compile
}

// buildKernel compiles the guest kernel from src in dir (which it fills
// with the source tree and the build; the caller removes it), reporting
// progress to progress.
func buildKernel(ctx context.Context, src kernelSource, fragment, dir string, jobs int, progress func(string)) (builtKernel, error) {
	if jobs < 1 {
		jobs = 1
	}
	ctx, cancel := context.WithTimeout(ctx, kernelBuildTimeout)
	defer cancel()
	tree, obj := filepath.Join(dir, "src"), filepath.Join(dir, "obj")
	for _, d := range []string{tree, obj} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return builtKernel{}, err
		}
	}
	progress(fmt.Sprintf("unpacking %s", filepath.Base(src.Tarball)))
	unpack := exec.CommandContext(ctx, "tar", "-xJf", src.Tarball, "-C", tree, "--strip-components=1")
	if out, err := unpack.CombinedOutput(); err != nil {
		return builtKernel{}, fmt.Errorf("unpacking %s: %v: %s", src.Tarball, err, lastLines(out, 5))
	}
	frag := filepath.Join(dir, "guest.config")
	if err := os.WriteFile(frag, []byte(fragment), 0o644); err != nil {
		return builtKernel{}, err
	}
	logPath := filepath.Join(dir, "build.log")
	log, err := os.Create(logPath)
	if err != nil {
		return builtKernel{}, err
	}
	defer log.Close()
	failed := func(what string, err error) error {
		log.Sync()
		tail, _ := os.ReadFile(logPath)
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("timed out after %s", kernelBuildTimeout)
		}
		return fmt.Errorf("%s: %w\n%s", what, err, lastLines(tail, 20))
	}

	// The configuration: everything off, then the fragment, then checked.
	config, err := configureKernel(ctx, tree, obj, frag, log)
	if err != nil {
		return builtKernel{}, failed("configuring", err)
	}
	bad, err := verifyKernelConfig(fragment, config)
	if err != nil {
		return builtKernel{}, err
	}
	if len(bad) > 0 {
		return builtKernel{}, fmt.Errorf("the kernel configuration lacks what guest.config asks for:\n  %s", strings.Join(bad, "\n  "))
	}

	// The compile, counting the files as kbuild names them.
	start := time.Now()
	pw := &compileProgress{start: start, every: 15 * time.Second, last: start, report: progress, estimate: kernelObjectsEstimate}
	err = runMake(ctx, tree, obj, io.MultiWriter(log, pw), "-j"+strconv.Itoa(jobs), "bzImage")
	pw.flush()
	if err != nil {
		return builtKernel{}, failed("make bzImage", err)
	}
	return builtKernel{
		BzImage: filepath.Join(obj, "arch", "x86", "boot", "bzImage"),
		Config:  config,
		Objects: pw.count(),
		Took:    time.Since(start),
	}, nil
}

// configureKernel makes the configuration in obj: allnoconfig with the
// fragment in the file frag, then olddefconfig. It returns the .config.
func configureKernel(ctx context.Context, tree, obj, frag string, log io.Writer) (string, error) {
	// make runs in the tree (-C): a relative path, as a relative data
	// directory gives, would be read from there.
	frag, err := filepath.Abs(frag)
	if err != nil {
		return "", err
	}
	if err := runMake(ctx, tree, obj, log, "KCONFIG_ALLCONFIG="+frag, "allnoconfig"); err != nil {
		return "", fmt.Errorf("make allnoconfig: %w", err)
	}
	if err := runMake(ctx, tree, obj, log, "olddefconfig"); err != nil {
		return "", fmt.Errorf("make olddefconfig: %w", err)
	}
	config, err := os.ReadFile(filepath.Join(obj, ".config"))
	return string(config), err
}

// runMake runs make in the source tree with its output in obj. The
// variables that name the build are fixed, so the same inputs make the
// same kernel wherever it is built.
func runMake(ctx context.Context, tree, obj string, out io.Writer, args ...string) error {
	// make -C changes directory before it reads O=.
	tree, err := filepath.Abs(tree)
	if err != nil {
		return err
	}
	if obj, err = filepath.Abs(obj); err != nil {
		return err
	}
	argv := append([]string{"-C", tree, "O=" + obj, "ARCH=x86_64", "LOCALVERSION="}, args...)
	cmd := exec.CommandContext(ctx, "make", argv...)
	cmd.Env = kernelBuildEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 10 * time.Second
	return cmd.Run()
}

// kernelBuildEnv is the environment of the build: the caller's, minus what
// would change what kbuild does (a cross compiler, another architecture, a
// build directory), plus fixed build names instead of the user, host and
// time of the build.
func kernelBuildEnv(env []string) []string {
	out := make([]string, 0, len(env)+4)
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case name == "ARCH", name == "SRCARCH", name == "CROSS_COMPILE", name == "O", name == "CC", name == "LD",
			name == "HOSTCC", name == "LLVM", name == "MAKEFLAGS", name == "MFLAGS", name == "MAKELEVEL",
			name == "KCONFIG_CONFIG", name == "LOCALVERSION", strings.HasPrefix(name, "KBUILD_"):
			continue
		}
		out = append(out, kv)
	}
	return append(out, "KBUILD_BUILD_USER=execlaw", "KBUILD_BUILD_HOST=execlaw", "KBUILD_BUILD_VERSION=1")
}

// compileProgress counts the files kbuild compiles ("  CC  path" lines) in
// the build's output and reports the count every so often.
type compileProgress struct {
	mu       sync.Mutex
	start    time.Time
	last     time.Time
	every    time.Duration
	estimate int
	report   func(string)
	n        int
	partial  []byte
	now      func() time.Time // tests
}

func (p *compileProgress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	data := append(p.partial, b...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		if isCompileLine(data[:i]) {
			p.n++
		}
		data = data[i+1:]
	}
	p.partial = append(p.partial[:0], data...)
	now := time.Now()
	if p.now != nil {
		now = p.now()
	}
	if now.Sub(p.last) >= p.every {
		p.last = now
		p.report(p.line(now))
	}
	return len(b), nil
}

// isCompileLine is true for kbuild's "  CC      kernel/fork.o".
func isCompileLine(line []byte) bool {
	f := bytes.Fields(line)
	return len(f) == 2 && string(f[0]) == "CC" && bytes.HasSuffix(f[1], []byte(".o"))
}

func (p *compileProgress) line(now time.Time) string {
	pct := ""
	if p.estimate > 0 {
		pct = fmt.Sprintf(" (~%d%%)", min(99, p.n*100/p.estimate))
	}
	return fmt.Sprintf("compiling: %d files%s, %s", p.n, pct, now.Sub(p.start).Round(time.Second))
}

func (p *compileProgress) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.partial) > 0 && isCompileLine(p.partial) {
		p.n++
	}
	p.partial = nil
}

func (p *compileProgress) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}
