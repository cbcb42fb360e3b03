package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/execlaw/execlaw/internal/image"
	"github.com/execlaw/execlaw/internal/testutil"
)

// These tests read the archives back with go-containerregistry, which is
// not the code that wrote them. Whether containerd's `ctr images import`
// takes an archive is left to the Kubernetes cluster tests, which run
// containerd anyway; these need only e2fsprogs (the image build needs it
// too).

// TestOCIArchiveFromTestImage writes the cached "minimal" test image as an
// OCI archive and checks every part of it.
func TestOCIArchiveFromTestImage(t *testing.T) {
	dataDir := testutil.VMImageDir(t)
	guest := testutil.GuestBinary(t)
	st, err := image.NewStore(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.Load("minimal")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	archive := filepath.Join(out, "minimal.tar")
	var progress bytes.Buffer
	start := time.Now()
	img, err := st.WriteOCI(context.Background(), m, image.OCIOptions{
		Path: archive, GuestBinary: guest, Version: "test", Out: &progress,
	})
	if err != nil {
		t.Fatalf("WriteOCI: %v\n%s", err, progress.String())
	}
	took := time.Since(start)
	t.Logf("wrote %s in %s: archive %.1f MiB, layer %.1f MiB gzip'd (%.1f MiB of tar, %d entries); rootfs %.1f MiB ext4\n%s",
		img.Ref, took.Round(100*time.Millisecond), mibf(img.Size), mibf(img.LayerSize), mibf(img.TarSize), img.Entries,
		mibf(m.Rootfs.Size), progress.String())
	if !strings.Contains(progress.String(), "oci: layer ") || !strings.Contains(progress.String(), archive) {
		t.Errorf("progress does not report the layer and the archive:\n%s", progress.String())
	}
	ociImg := checkWritten(t, archive, img, "execlaw-guest")
	t.Run("config", func(t *testing.T) {
		cf, err := ociImg.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if strings.Join(c.Entrypoint, " ") != "/usr/local/bin/execlaw-guest --pod" || len(c.Cmd) != 0 {
			t.Errorf("entrypoint %q, cmd %q", c.Entrypoint, c.Cmd)
		}
		if c.WorkingDir != "/workspace" {
			t.Errorf("working dir %q", c.WorkingDir)
		}
		if _, ok := c.ExposedPorts["7600/tcp"]; !ok || len(c.ExposedPorts) != 1 {
			t.Errorf("exposed ports %v, want 7600/tcp", c.ExposedPorts)
		}
		guestSum := fileSum(t, guest)
		for k, v := range map[string]string{
			"io.execlaw.version": "test", "io.execlaw.image": "minimal", "io.execlaw.profile": "minimal",
			"io.execlaw.rootfs.sha256": m.Rootfs.SHA256, "io.execlaw.initramfs.sha256": m.Initramfs.SHA256,
			"io.execlaw.kernel.sha256": m.Kernel.SHA256, "io.execlaw.guest.sha256": guestSum, "io.execlaw.agents": "",
		} {
			if c.Labels[k] != v {
				t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
			}
		}
		if cf.OS != "linux" || cf.Architecture != "amd64" || len(cf.RootFS.DiffIDs) != 1 || cf.Created.IsZero() {
			t.Errorf("config: os %q arch %q, %d diff ids, created %v", cf.OS, cf.Architecture, len(cf.RootFS.DiffIDs), cf.Created)
		}
	})
	t.Run("docker manifest.json", func(t *testing.T) {
		dm, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(archive) })
		if err != nil {
			t.Fatal(err)
		}
		if len(dm) != 1 || len(dm[0].RepoTags) != 1 || dm[0].RepoTags[0] != img.Ref {
			t.Fatalf("manifest.json: %+v, want one image tagged %s", dm, img.Ref)
		}
		dimg, err := tarball.ImageFromPath(archive, nil)
		if err != nil {
			t.Fatal(err)
		}
		if cn, err := dimg.ConfigName(); err != nil || cn.String() != img.ConfigDigest {
			t.Errorf("docker side config %v (%v), want %s", cn, err, img.ConfigDigest)
		}
		if err := validate.Image(dimg, validate.Fast); err != nil {
			t.Errorf("docker side: %v", err)
		}
	})

	ents, order := layerEntries(t, ociImg)
	t.Run("layer", func(t *testing.T) {
		g, ok := ents["usr/local/bin/execlaw-guest"]
		if !ok || g.hdr.Typeflag != tar.TypeReg || g.hdr.Mode != 0o755 || g.hdr.Uid != 0 || g.hdr.Gid != 0 {
			t.Fatalf("usr/local/bin/execlaw-guest: %+v", g.hdr)
		}
		if g.sum != fileSum(t, guest) {
			t.Errorf("usr/local/bin/execlaw-guest differs from %s", guest)
		}
		bash := ents[resolve(ents, "bin/bash")]
		if bash.hdr == nil || bash.hdr.Typeflag != tar.TypeReg || bash.hdr.Mode&0o111 == 0 || bash.hdr.Size < 100000 {
			t.Errorf("bin/bash (%s): %+v", resolve(ents, "bin/bash"), bash.hdr)
		}
		osr := ents[resolve(ents, "etc/os-release")]
		if osr.hdr == nil || !bytes.Contains(osr.data, []byte("bookworm")) {
			t.Errorf("etc/os-release (%s) does not name bookworm: %q", resolve(ents, "etc/os-release"), osr.data)
		}
		for name, want := range map[string]struct {
			mode     int64
			uid, gid int
		}{"usr/bin/passwd": {0o4755, 0, 0}, "usr/bin/chage": {0o2755, 0, 42}, "tmp": {0o1777, 0, 0}, "root": {0o700, 0, 0}} {
			if h := ents[name].hdr; h == nil || h.Mode != want.mode || h.Uid != want.uid || h.Gid != want.gid {
				t.Errorf("%s: %+v, want mode %o owner %d:%d", name, h, want.mode, want.uid, want.gid)
			}
		}
		for _, d := range []string{"dev", "proc", "sys", "workspace"} {
			if h := ents[d].hdr; h == nil || h.Typeflag != tar.TypeDir {
				t.Errorf("%s/ is not in the layer as a directory", d)
			}
		}
		if _, ok := ents["lost+found"]; ok {
			t.Error("lost+found is in the layer")
		}
		for _, name := range order {
			h := ents[name].hdr
			if strings.HasPrefix(name, "dev/") || strings.HasPrefix(name, "proc/") || strings.HasPrefix(name, "sys/") {
				t.Errorf("%s: the layer has contents under /dev, /proc or /sys", name)
			}
			if h.Typeflag == tar.TypeChar || h.Typeflag == tar.TypeBlock {
				t.Errorf("%s: a device node", name)
			}
		}
		checkOrder(t, ents, order)
	})
	t.Run("same as debugfs", func(t *testing.T) { compareWithDebugfs(t, st.Path(m.Rootfs.Blob), ents) })
	t.Run("deterministic", func(t *testing.T) {
		again := filepath.Join(t.TempDir(), "again.tar")
		img2, err := st.WriteOCI(context.Background(), m, image.OCIOptions{Path: again, GuestBinary: guest, Version: "test"})
		if err != nil {
			t.Fatal(err)
		}
		if img2.ManifestDigest != img.ManifestDigest || img2.LayerDigest != img.LayerDigest || fileSum(t, again) != fileSum(t, archive) {
			t.Errorf("a second archive differs: manifest %s, layer %s; first %s, %s", img2.ManifestDigest, img2.LayerDigest,
				img.ManifestDigest, img.LayerDigest)
		}
		// Another tag changes the manifest (it carries the name), not the image.
		img3, err := st.WriteOCI(context.Background(), m, image.OCIOptions{
			Path: again, GuestBinary: guest, Version: "test", Ref: "registry.example.com:5000/team/guest:v1",
		})
		if err != nil {
			t.Fatal(err)
		}
		if img3.ConfigDigest != img.ConfigDigest || img3.LayerDigest != img.LayerDigest || img3.ManifestDigest == img.ManifestDigest ||
			img3.Name != "registry.example.com:5000/team/guest:v1" {
			t.Errorf("with --oci-tag: %+v", img3)
		}
	})
}

// checkWritten checks an archive against what the function that wrote it
// says: its size, a name of repo and the short hash, no temporary files
// left beside it; and reads it back with readOCILayout.
func checkWritten(t *testing.T, archive string, img image.OCIImage, repo string) v1.Image {
	t.Helper()
	if fi, err := os.Stat(archive); err != nil || fi.Size() != img.Size {
		t.Fatalf("archive: %v, size %v, said to be %d", err, fi, img.Size)
	}
	wantRef := repo + ":" + strings.TrimPrefix(img.ConfigDigest, "sha256:")[:12]
	if img.Ref != wantRef || img.Name != "docker.io/library/"+wantRef {
		t.Errorf("ref %q, name %q; want %q and docker.io/library/%[3]s", img.Ref, img.Name, wantRef)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(archive), ".execlaw-oci*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
	return readOCILayout(t, archive, img)
}

// readOCILayout unpacks the archive and reads it as an OCI image layout:
// the index must name the image for containerd and podman, and the image
// must be valid (digests, sizes, diff IDs).
func readOCILayout(t *testing.T, archive string, img image.OCIImage) v1.Image {
	t.Helper()
	dir := t.TempDir()
	untar(t, archive, dir)
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index.json: %d manifests", len(im.Manifests))
	}
	d := im.Manifests[0]
	if d.Digest.String() != img.ManifestDigest || d.Platform == nil || d.Platform.OS != "linux" ||
		d.Annotations["io.containerd.image.name"] != img.Name || d.Annotations["org.opencontainers.image.ref.name"] != img.Name {
		t.Errorf("index.json entry: %+v, want %s named %s", d, img.ManifestDigest, img.Name)
	}
	oimg, err := idx.Image(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	man, err := oimg.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if man.Annotations["org.opencontainers.image.ref.name"] != img.Name || len(man.Layers) != 1 ||
		man.Layers[0].Digest.String() != img.LayerDigest || man.Config.Digest.String() != img.ConfigDigest {
		t.Errorf("manifest: %+v", man)
	}
	if err := validate.Image(oimg); err != nil {
		t.Errorf("the OCI image does not validate: %v", err)
	}
	// containerd picks the image for its node by the index's platform.
	if cf, err := oimg.ConfigFile(); err != nil || d.Platform != nil && d.Platform.Architecture != cf.Architecture {
		t.Errorf("index.json platform %+v, config %v", d.Platform, err)
	}
	return oimg
}

func untar(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, tr); err != nil {
			t.Fatal(err)
		}
		out.Close()
	}
}

type layerEntry struct {
	hdr  *tar.Header
	sum  string // a regular file's sha256
	data []byte // a small regular file's contents
}

// layerEntries reads the image's one layer: its entries by name (without a
// trailing slash) and their order.
func layerEntries(t *testing.T, img v1.Image) (map[string]layerEntry, []string) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers: %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	ents := map[string]layerEntry{}
	var order []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return ents, order
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		if _, dup := ents[name]; dup {
			t.Errorf("%s is in the layer twice", name)
		}
		e := layerEntry{hdr: h}
		if h.Typeflag == tar.TypeReg {
			hs := sha256.New()
			var small bytes.Buffer
			if _, err := io.Copy(io.MultiWriter(hs, &limitedBuffer{&small, 64 << 10}), tr); err != nil {
				t.Fatal(err)
			}
			e.sum, e.data = hex.EncodeToString(hs.Sum(nil)), small.Bytes()
		}
		ents[name] = e
		order = append(order, name)
	}
}

type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// resolve follows the layer's symlinks in p, as the container would.
func resolve(ents map[string]layerEntry, p string) string {
	for range 40 {
		parts := strings.Split(p, "/")
		cur, followed := "", false
		for i, c := range parts {
			next := path.Join(cur, c)
			if e, ok := ents[next]; ok && e.hdr.Typeflag == tar.TypeSymlink {
				target := e.hdr.Linkname
				if !path.IsAbs(target) {
					target = path.Join("/", cur, target)
				}
				p = strings.TrimPrefix(path.Join(append([]string{target}, parts[i+1:]...)...), "/")
				followed = true
				break
			}
			cur = next
		}
		if !followed {
			return p
		}
	}
	return ""
}

// checkOrder checks that every entry comes after its directory and after
// its earlier siblings by name.
func checkOrder(t *testing.T, ents map[string]layerEntry, order []string) {
	t.Helper()
	seen := map[string]bool{".": true}
	last := map[string]string{}
	for _, name := range order {
		dir := path.Dir(name)
		if !seen[dir] || ents[dir].hdr != nil && ents[dir].hdr.Typeflag != tar.TypeDir && dir != "." {
			t.Errorf("%s comes before its directory", name)
		}
		if prev, ok := last[dir]; ok && prev >= path.Base(name) {
			t.Errorf("%s comes after %s", name, path.Join(dir, prev))
		}
		last[dir], seen[name] = path.Base(name), true
	}
}

// compareWithDebugfs compares the layer with what e2fsprogs' debugfs,
// another reader of the same file system, finds in it: `ls -p` of every
// directory gives names, full modes and owners; rdump gives contents,
// symlink targets and times (it keeps only permission bits, and owners only
// as root).
func compareWithDebugfs(t *testing.T, ext4 string, ents map[string]layerEntry) {
	t.Helper()
	debugfs := lookTool(t, "debugfs")
	kept := func(name string) bool { // what the layer has of the file system
		top, rest, _ := strings.Cut(name, "/")
		return top != "lost+found" && (rest == "" || top != "dev" && top != "proc" && top != "sys")
	}

	// ls -p: "/inode/mode/uid/gid/name/size/" per entry, after an echo of
	// each command.
	var cmds strings.Builder
	var tops []string
	dirs := []string{""}
	for name, e := range ents {
		if e.hdr.Typeflag == tar.TypeDir && kept(name+"/x") {
			dirs = append(dirs, name)
		}
		if !strings.Contains(name, "/") && kept(name+"/x") {
			tops = append(tops, "/"+name)
		}
	}
	for _, d := range dirs {
		cmds.WriteString("ls -p /" + d + "\n")
	}
	cmdFile := filepath.Join(t.TempDir(), "cmds")
	if err := os.WriteFile(cmdFile, []byte(cmds.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(debugfs, "-f", cmdFile, ext4).Output()
	if err != nil {
		t.Fatalf("debugfs ls: %v", err)
	}
	listed := map[string]bool{}
	dir := ""
	for _, line := range strings.Split(string(out), "\n") {
		if d, ok := strings.CutPrefix(line, "debugfs: ls -p /"); ok {
			dir = d
			continue
		}
		f := strings.Split(line, "/")
		if len(f) != 8 || f[5] == "." || f[5] == ".." {
			continue
		}
		name := path.Join(dir, f[5])
		if !kept(name) {
			continue
		}
		listed[name] = true
		h := ents[name].hdr
		if h == nil {
			t.Errorf("%s: debugfs lists it, the layer does not have it", name)
			continue
		}
		if h.Typeflag == tar.TypeLink {
			h = ents[h.Linkname].hdr
		}
		if got := fmt.Sprintf("%o/%d/%d", stMode(h), h.Uid, h.Gid); strings.TrimLeft(f[2], "0")+"/"+f[3]+"/"+f[4] != got {
			t.Errorf("%s: debugfs says mode/uid/gid %s/%s/%s, the layer %s", name, f[2], f[3], f[4], got)
		}
	}
	for name := range ents {
		if !listed[name] && name != "usr/local/bin/execlaw-guest" {
			t.Errorf("%s: the layer has it, debugfs does not list it", name)
		}
	}

	// rdump
	dump := t.TempDir()
	if out, err := exec.Command(debugfs, "-R", "rdump "+strings.Join(tops, " ")+" "+dump, ext4).CombinedOutput(); err != nil {
		t.Fatalf("debugfs rdump: %v\n%s", err, out)
	}
	dumped := 0
	err = filepath.WalkDir(dump, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == dump {
			return err
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, dump+"/"))
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e, ok := ents[rel]
		if !ok {
			t.Errorf("%s: debugfs dumped it, the layer does not have it", rel)
			return nil
		}
		dumped++
		if e.hdr.Typeflag == tar.TypeLink {
			e = ents[e.hdr.Linkname]
		}
		compareFile(t, rel, p, fi, e.hdr, e.sum)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d names match debugfs ls, %d files debugfs rdump", len(listed), dumped)
}

// stMode is a layer entry's mode as stat's st_mode.
func stMode(h *tar.Header) int64 {
	return h.Mode | map[byte]int64{tar.TypeDir: 0o40000, tar.TypeReg: 0o100000, tar.TypeSymlink: 0o120000, tar.TypeFifo: 0o10000}[h.Typeflag]
}

// compareFile compares a file debugfs dumped with the layer's entry for it.
func compareFile(t *testing.T, rel, p string, fi os.FileInfo, h *tar.Header, sum string) {
	t.Helper()
	mode := fi.Mode()
	switch {
	case mode&os.ModeSymlink != 0:
		target, _ := os.Readlink(p)
		if h.Typeflag != tar.TypeSymlink || h.Linkname != target {
			t.Errorf("%s: symlink to %q, layer has type %c to %q", rel, target, h.Typeflag, h.Linkname)
		}
		return // rdump sets no times or modes on symlinks
	case mode.IsDir():
		if h.Typeflag != tar.TypeDir {
			t.Errorf("%s: a directory, layer has type %c", rel, h.Typeflag)
		}
	case mode.IsRegular():
		if h.Typeflag != tar.TypeReg || h.Size != fi.Size() || fileSum(t, p) != sum {
			t.Errorf("%s: %d bytes, layer has type %c, %d bytes, or other contents", rel, fi.Size(), h.Typeflag, h.Size)
		}
	default:
		t.Errorf("%s: debugfs dumped a %v", rel, mode.Type())
	}
	if int64(mode.Perm()) != h.Mode&0o777 {
		t.Errorf("%s: mode %o, layer has %o", rel, mode.Perm(), h.Mode)
	}
	if !h.ModTime.Equal(fi.ModTime().Truncate(time.Second)) {
		t.Errorf("%s: modified %v, layer says %v", rel, fi.ModTime(), h.ModTime)
	}
}

func ownerOf(fi os.FileInfo) (uid, gid int) {
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}

func lookTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(d, name); fileExists(p) {
			return p
		}
	}
	t.Fatalf("%s is not installed; it is part of e2fsprogs, which building images needs too: apt-get install e2fsprogs", name)
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func mibf(n int64) float64 { return float64(n) / (1 << 20) }

// TestOCIBadPath: a path the archive cannot be written to is refused at
// once, with the reason, before anything is read.
func TestOCIBadPath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := image.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{filepath.Join(dir, "missing", "x.tar"), "directory " + filepath.Join(dir, "missing") + " does not exist"},
		{dir, "is a directory"},
		{filepath.Join(file, "x.tar"), file + " is not a directory"},
		{"", "no file name"},
	} {
		if err := image.CheckOCIPath(c.path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CheckOCIPath(%q) = %v, want %q", c.path, err, c.want)
		}
		_, err := st.WriteOCI(context.Background(), image.Manifest{Name: "none"}, image.OCIOptions{Path: c.path, GuestBinary: file})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("WriteOCI to %q = %v, want %q", c.path, err, c.want)
		}
	}
	if os.Geteuid() != 0 { // root writes anywhere
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o555); err != nil {
			t.Fatal(err)
		}
		if err := image.CheckOCIPath(filepath.Join(ro, "x.tar")); err == nil || !strings.Contains(err.Error(), "cannot write in") {
			t.Errorf("read-only directory: %v", err)
		}
	}
	if err := image.CheckOCIPath(filepath.Join(dir, "new.tar")); err != nil {
		t.Errorf("a writable directory: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".execlaw-oci*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestOCIBadRef: names an image cannot have are refused before any work.
func TestOCIBadRef(t *testing.T) {
	st, err := image.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "x.tar")
	for _, ref := range []string{"Execlaw-Guest:v1", "execlaw-guest:-v1", "execlaw-guest@sha256:" + strings.Repeat("0", 64),
		"execlaw guest", "execlaw-guest:", "execlaw-guest:" + strings.Repeat("v", 129)} {
		_, err := st.WriteOCI(context.Background(), image.Manifest{Name: "none"}, image.OCIOptions{Path: p, Ref: ref})
		if err == nil || !strings.Contains(err.Error(), "image reference") {
			t.Errorf("ref %q: %v, want an image reference error", ref, err)
		}
	}
}
