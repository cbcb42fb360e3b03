package image

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// KernelMetaPackage is Debian's package that always depends on the current kernel.
const KernelMetaPackage = "linux-image-amd64"

// debianKernel is a kernel package as apt resolves it.
type debianKernel struct {
	Package string // e.g. linux-image-6.1.0-56-amd64
	Version string // the package version, e.g. 6.1.192-2
}

func (k debianKernel) recipe() string { return "debian:" + k.Package + "=" + k.Version }

var kernelPkgRE = regexp.MustCompile(`^linux-image-[0-9][A-Za-z0-9.+~-]*$`)

// resolveDebianKernel asks apt which kernel package linux-image-amd64 means
// today, and its version, without downloading anything.
func resolveDebianKernel(ctx context.Context) (debianKernel, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", "--important", KernelMetaPackage).Output()
	if err != nil {
		return debianKernel{}, fmt.Errorf("apt-cache depends %s: %w (is this Debian with apt sources?)", KernelMetaPackage, err)
	}
	var k debianKernel
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Depends: "); ok && kernelPkgRE.MatchString(p) {
			k.Package = p
			break
		}
	}
	if k.Package == "" {
		return debianKernel{}, fmt.Errorf("%s depends on no linux-image package", KernelMetaPackage)
	}
	out, err = exec.CommandContext(ctx, "apt-cache", "policy", k.Package).Output()
	if err != nil {
		return debianKernel{}, fmt.Errorf("apt-cache policy %s: %w", k.Package, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Candidate: "); ok && v != "(none)" {
			k.Version = v
		}
	}
	if k.Version == "" {
		return debianKernel{}, fmt.Errorf("apt has no candidate version of %s; run apt-get update", k.Package)
	}
	return k, nil
}

// downloadDebianKernel fetches the kernel package into dir and returns the .deb path.
func downloadDebianKernel(ctx context.Context, k debianKernel, dir string) (string, error) {
	// As root apt would drop to the _apt user, who cannot write our temp dir.
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-o", "APT::Sandbox::User=root", k.Package+"="+k.Version)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download %s: %v: %s", k.Package, err, lastLines(out, 5))
	}
	debs, _ := filepath.Glob(filepath.Join(dir, k.Package+"_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download %s: no .deb appeared", k.Package)
	}
	return debs[0], nil
}

// unpackedKernel is a kernel and its modules on disk.
type unpackedKernel struct {
	Version    string // the release, as uname -r says it
	BzImage    string
	ModulesDir string // may be empty: a kernel with what it needs built in
}

// unpackKernelDeb extracts a kernel package with dpkg-deb (present on every
// Debian) into dir.
func unpackKernelDeb(ctx context.Context, deb, dir string) (unpackedKernel, error) {
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, dir).CombinedOutput(); err != nil {
		return unpackedKernel{}, fmt.Errorf("dpkg-deb -x %s: %v: %s", filepath.Base(deb), err, lastLines(out, 5))
	}
	images, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return unpackedKernel{}, fmt.Errorf("%s holds %d kernels, want 1", filepath.Base(deb), len(images))
	}
	version := strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")
	mods := filepath.Join(dir, "lib", "modules", version)
	if _, err := os.Stat(mods); err != nil {
		return unpackedKernel{}, fmt.Errorf("%s has no modules for %s", filepath.Base(deb), version)
	}
	return unpackedKernel{Version: version, BzImage: images[0], ModulesDir: mods}, nil
}

// kernelRelease reads the release string from a bzImage's setup header
// (kernel_version field), so a user-supplied kernel is named correctly.
func kernelRelease(bz []byte) string {
	if len(bz) < 0x210 || string(bz[0x202:0x206]) != "HdrS" {
		return ""
	}
	off := int(bz[0x20e]) | int(bz[0x20f])<<8
	off += 0x200
	if off <= 0x200 || off >= len(bz) {
		return ""
	}
	end := bytes.IndexByte(bz[off:], 0)
	if end < 0 {
		return ""
	}
	s := string(bz[off : off+end])
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return ""
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
