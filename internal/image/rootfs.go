package image

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Profile is a set of packages installed on top of the distribution's minimal base.
type Profile struct {
	Name        string
	Description string
	Packages    []string
}

// Profiles are the root filesystems execlaw can build.
var Profiles = map[string]Profile{
	"minimal": {Name: "minimal", Description: "the distribution's minimal base (bash, coreutils): small and quick, for tests",
		Packages: []string{"ca-certificates"}},
	"minimal-git": {Name: "minimal-git", Description: "minimal plus git: for tests of sessions that start from a repository",
		Packages: []string{"ca-certificates", "git"}},
	"dev": {Name: "dev", Description: "a development box: git, curl, python3, build-essential",
		Packages: []string{"ca-certificates", "curl", "git", "python3", "build-essential", "procps", "less",
			"iproute2", "iputils-ping", "openssh-client", "unzip", "xz-utils", "file", "nano"}},
}

// Distro is a distribution debootstrap can install.
type Distro struct {
	Name       string // the suite: bookworm, noble
	Mirror     string
	Components string
	Keyring    string // extra keyring debootstrap needs, if any
}

// Distros are the distributions execlaw knows.
var Distros = map[string]Distro{
	"bookworm": {Name: "bookworm", Mirror: "http://deb.debian.org/debian", Components: "main"},
	"noble": {Name: "noble", Mirror: "http://archive.ubuntu.com/ubuntu", Components: "main,universe",
		Keyring: "/usr/share/keyrings/ubuntu-archive-keyring.gpg"},
}

// rootfsFormat changes when the way a root filesystem is built changes, so
// images built the old way are rebuilt.
const rootfsFormat = "3"

func rootfsRecipe(d Distro, p Profile, agents AgentSpec) string {
	h := sha256.New()
	fmt.Fprintf(h, "format=%s\ndistro=%s\nmirror=%s\ncomponents=%s\n", rootfsFormat, d.Name, d.Mirror, d.Components)
	pk := append([]string(nil), p.Packages...)
	sort.Strings(pk)
	fmt.Fprintf(h, "packages=%s\n", strings.Join(pk, ","))
	fmt.Fprintf(h, "agents=%s\n", agents.recipe())
	return "rootfs:" + hex.EncodeToString(h.Sum(nil))[:16]
}

// checkMirror fails fast, with a clear message, when a mirror does not answer.
func checkMirror(ctx context.Context, d Distro) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	url := strings.TrimRight(d.Mirror, "/") + "/dists/" + d.Name + "/Release"
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("the %s mirror %s does not answer: %w", d.Name, d.Mirror, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the %s mirror %s answered %s for %s", d.Name, d.Mirror, resp.Status, url)
	}
	if d.Keyring != "" {
		if _, err := os.Stat(d.Keyring); err != nil {
			return fmt.Errorf("debootstrap needs %s for %s (apt-get install ubuntu-keyring)", d.Keyring, d.Name)
		}
	}
	return nil
}

// debootstrap installs the distribution into dir. Its output goes to log;
// while it runs, onSize is told how much it has written.
func debootstrap(ctx context.Context, d Distro, p Profile, dir string, log io.Writer, onSize func(int64)) error {
	args := []string{"--variant=minbase", "--components=" + d.Components}
	if len(p.Packages) > 0 {
		args = append(args, "--include="+strings.Join(p.Packages, ","))
	}
	if d.Keyring != "" {
		args = append(args, "--keyring="+d.Keyring)
	}
	args = append(args, d.Name, dir, d.Mirror)
	cmd := exec.CommandContext(ctx, "debootstrap", args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("debootstrap: %w (apt-get install debootstrap)", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("debootstrap %s: %w (its log: %s)", d.Name, err, filepath.Join(dir, "debootstrap", "debootstrap.log"))
			}
			return nil
		case <-tick.C:
			if onSize != nil {
				onSize(dirSize(dir))
			}
		}
	}
}

// configureRootfs makes a debootstrapped tree into an execlaw guest root: the
// workspace, host name files, and no caches or docs to carry around.
func configureRootfs(dir string) error {
	for _, d := range []string{"workspace", "var/cache/apt/archives/partial"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	files := map[string]string{
		"etc/hostname":    "execlaw\n",
		"etc/hosts":       "127.0.0.1\tlocalhost\n127.0.1.1\texeclaw\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		"etc/resolv.conf": "# written by execlaw-guest at boot\n",
		"etc/fstab":       "# the root overlay is mounted by execlaw-guest\n",
		"etc/motd":        "This is an ExeClaw sandbox: a throw-away virtual machine.\n",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.Remove(p) // resolv.conf may be a symlink into the build host
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	for _, glob := range []string{"var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/log/*.log",
		"usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "debootstrap"} {
		matches, _ := filepath.Glob(filepath.Join(dir, glob))
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				return err
			}
		}
	}
	return nil
}

// installedPackages lists the packages in a tree, from dpkg's status file.
func installedPackages(dir string) ([]string, error) {
	f, err := os.Open(filepath.Join(dir, "var/lib/dpkg/status"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	var name, version string
	installed := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	flush := func() {
		if name != "" && installed {
			out = append(out, name+"="+version)
		}
		name, version, installed = "", "", false
	}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			flush()
		case strings.HasPrefix(line, "Package: "):
			name = strings.TrimPrefix(line, "Package: ")
		case strings.HasPrefix(line, "Version: "):
			version = strings.TrimPrefix(line, "Version: ")
		case strings.HasPrefix(line, "Status: "):
			installed = strings.HasSuffix(line, " installed")
		}
	}
	flush()
	sort.Strings(out)
	return out, sc.Err()
}

// mkfsFromDir writes dir into a new ext4 image without mounting anything
// (mkfs.ext4 -d). The base is mounted read-only, so it needs no journal and
// little free space.
func mkfsFromDir(ctx context.Context, dir, img string) error {
	size := dirSize(dir)
	size = size + size/5 + 64<<20
	size = (size + 1<<20 - 1) &^ (1<<20 - 1)
	f, err := os.Create(img)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-L", "execlaw-base", "-O", "^has_journal",
		"-m", "0", "-E", "root_owner=0:0", "-d", dir, img)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 -d: %v: %s", err, lastLines(out, 5))
	}
	return nil
}

// dirSize adds up the sizes of the files below dir (not following links).
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// unmountUnder detaches every mount below dir, deepest first. debootstrap
// mounts /proc (and, on some hosts, /sys) in its target and normally takes
// them down, but a run that fails or is killed can leave them: they must not
// end up copied into the image, nor outlive the build.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	prefix := filepath.Clean(dir) + "/"
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if strings.HasPrefix(mp, prefix) {
			points = append(points, mp)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
