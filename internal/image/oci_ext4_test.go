package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/execlaw/execlaw/internal/image"
)

// capNetRaw is a security.capability value (VFS_CAP_REVISION_2, effective):
// cap_net_raw=ep, what Debian gives ping.
var capNetRaw = []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// TestOCILayerFromMadeExt4 makes a tree with what the ext4 reader must get
// right (hard links, long and short symlinks, sparse files with deep extent
// trees, a large directory, times past 2038 and before 1970, special mode
// bits, high owners, file capabilities, FIFOs, device nodes and sockets),
// writes it to ext4 with mkfs.ext4 -d as the image build does, and checks
// the layer against the tree. Owners, device nodes and capabilities need
// root; without it they are left out, and the log says so.
func TestOCILayerFromMadeExt4(t *testing.T) {
	mkfs := lookTool(t, "mkfs.ext4")
	root := os.Geteuid() == 0
	tree := t.TempDir()
	w := func(name string, data []byte, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(tree, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask, with special bits
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	big := make([]byte, 3<<20+123)
	rand.Read(big)
	w("usr/bin/tool", big, 0o755)
	w("usr/bin/suid", []byte("#!/bin/sh\n"), 0o755|os.ModeSetuid)
	w("usr/bin/ping", []byte("ping"), 0o755)
	w("usr/bin/ping2", []byte("ping2"), 0o755)
	w("etc/os-release", []byte("ID=test\n"), 0o644)
	w("etc/secret", []byte("s"), 0o600)
	w("etc/hardlink", []byte("linked"), 0o644)
	must(os.Link(filepath.Join(tree, "etc/hardlink"), filepath.Join(tree, "usr/bin/link1")))
	must(os.Link(filepath.Join(tree, "etc/hardlink"), filepath.Join(tree, "usr/bin/link2")))
	w("var/empty", nil, 0o644)
	w("usr/local/bin/execlaw-guest", []byte("an older one, replaced"), 0o700)
	must(os.MkdirAll(filepath.Join(tree, "usr/local/bin"), 0o755))
	must(os.MkdirAll(filepath.Join(tree, "tmp"), 0o755))
	must(os.Chmod(filepath.Join(tree, "tmp"), 0o1777))
	must(os.MkdirAll(filepath.Join(tree, "var/mail"), 0o755))
	must(os.Chmod(filepath.Join(tree, "var/mail"), 0o2775))
	must(os.MkdirAll(filepath.Join(tree, "proc/1"), 0o755))
	w("sys/kernel/x", []byte("x"), 0o644)
	must(os.Symlink("usr/bin", filepath.Join(tree, "bin")))
	long := strings.Repeat("long/", 20) + "target" // past the 60 bytes a fast symlink holds
	must(os.Symlink(long, filepath.Join(tree, "usr/long")))
	must(syscall.Mkfifo(filepath.Join(tree, "var/fifo"), 0o640))
	must(syscall.Mknod(filepath.Join(tree, "var/socket"), syscall.S_IFSOCK|0o644, 0))

	// Sparse files: 40 one-block pieces with holes between them need more
	// extents than the inode holds, so the tree gets an index level; one
	// starts with a hole, both end in one.
	for _, name := range []string{"var/sparse", "var/sparse-hole-first"} {
		f, err := os.Create(filepath.Join(tree, name))
		must(err)
		first := int64(0)
		if strings.HasSuffix(name, "first") {
			first = 1
		}
		for i := range int64(40) {
			block := bytes.Repeat([]byte{byte(i + 1)}, 4096)
			_, err := f.WriteAt(block, (first+2*i)*4096)
			must(err)
		}
		must(f.Truncate(1 << 20))
		must(f.Close())
	}
	// debugfs makes this file's blocks unwritten extents once in ext4.
	must(os.WriteFile(filepath.Join(tree, "var/prealloc"), nil, 0o644))
	must(os.Truncate(filepath.Join(tree, "var/prealloc"), 10*4096))
	for i := range 3000 { // a directory of many blocks
		w(fmt.Sprintf("var/many/file-%04d", i), nil, 0o644)
	}
	times := map[string]time.Time{
		"etc/os-release": time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC),
		"var/empty":      time.Date(2040, 1, 2, 3, 4, 5, 0, time.UTC), // past 2038: ext4's extra epoch bits
		"etc/secret":     time.Date(1969, 7, 20, 20, 17, 40, 0, time.UTC),
	}
	for name, tm := range times {
		must(os.Chtimes(filepath.Join(tree, name), tm, tm))
	}
	if root {
		must(os.Chown(filepath.Join(tree, "etc/secret"), 1000, 1000))
		must(os.Lchown(filepath.Join(tree, "var/mail"), 0, 8))
		must(os.Lchown(filepath.Join(tree, "usr/long"), 70000, 130000)) // past 16 bits
		must(os.MkdirAll(filepath.Join(tree, "dev/pts"), 0o755))
		must(syscall.Mknod(filepath.Join(tree, "dev/null"), syscall.S_IFCHR|0o666, int(1<<8|3)))
		must(syscall.Mknod(filepath.Join(tree, "var/loop"), syscall.S_IFBLK|0o660, int(7<<8)))
		must(syscall.Setxattr(filepath.Join(tree, "usr/bin/ping"), "security.capability", capNetRaw, 0))
		// Enough attributes that they do not all fit in the inode.
		for i := range 6 {
			must(syscall.Setxattr(filepath.Join(tree, "usr/bin/ping2"), fmt.Sprintf("user.pad%d", i), bytes.Repeat([]byte("v"), 200), 0))
		}
		must(syscall.Setxattr(filepath.Join(tree, "usr/bin/ping2"), "security.capability", capNetRaw, 0))
	} else {
		t.Log("not root: no owners, device nodes or file capabilities in the tree")
	}

	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	must(os.WriteFile(img, nil, 0o644))
	must(os.Truncate(img, 64<<20))
	out, err := exec.Command(mkfs, "-q", "-F", "-b", "4096", "-N", "8192", "-O", "^has_journal", "-E", "root_owner=0:0", "-d", tree, img).CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.ext4 -d: %v\n%s", err, out)
	}
	debugfs := lookTool(t, "debugfs")
	// mkfs.ext4 1.47.0 -d drops the bits of a time past 2038 (later
	// versions keep them); debugfs sets them.
	if out, err := exec.Command(debugfs, "-w", "-R", "sif /var/empty mtime 20400102030405", img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs sif: %v\n%s", err, out)
	}
	if out, _ := exec.Command(debugfs, "-R", "stat /var/empty", img).Output(); !bytes.Contains(out, []byte("mtime: 0x83abfb25:00000001")) {
		t.Errorf("var/empty's time is not stored with the epoch bits:\n%s", out)
	}
	if out, err := exec.Command(debugfs, "-w", "-R", "fallocate /var/prealloc 0 9", img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs fallocate: %v\n%s", err, out)
	}
	if out, _ := exec.Command(debugfs, "-R", "stat /var/prealloc", img).Output(); !bytes.Contains(out, []byte("(0-9[u])")) {
		t.Errorf("var/prealloc has no unwritten extent:\n%s", out)
	}
	if out, _ := exec.Command(debugfs, "-R", "stat /var/sparse", img).Output(); !bytes.Contains(out, []byte("(ETB0)")) {
		t.Errorf("var/sparse has no extent index block, so the test does not cover one:\n%s", out)
	}

	st, err := image.NewStore(t.TempDir())
	must(err)
	blob, err := st.PutFile(img)
	must(err)
	m := image.Manifest{Name: "made", Arch: "amd64", Rootfs: image.Component{Blob: blob}}
	guest := filepath.Join(tree, "usr/bin/tool") // any file will do
	archive := filepath.Join(t.TempDir(), "made.tar")
	var progress bytes.Buffer
	oi, err := st.WriteOCI(context.Background(), m, image.OCIOptions{Path: archive, GuestBinary: guest, Ref: "myrepo", Out: &progress})
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if tag := strings.TrimPrefix(oi.ConfigDigest, "sha256:")[:12]; oi.Ref != "myrepo:"+tag || oi.Name != "docker.io/library/myrepo:"+tag {
		t.Errorf("--oci-tag myrepo: ref %q, name %q", oi.Ref, oi.Name)
	}
	// var/loop and var/socket; dev/null goes with the rest of /dev.
	if root && !strings.Contains(progress.String(), "(2 device nodes and sockets left out)") {
		t.Errorf("progress does not count the device nodes and the socket:\n%s", progress.String())
	}
	dimg, err := tarball.ImageFromPath(archive, nil)
	must(err)
	ents, order := layerEntries(t, dimg)
	checkOrder(t, ents, order)

	// Every file of the tree is in the layer as it is on disk, except what
	// the layer leaves out.
	firstLink := map[uint64]string{}
	seen := map[string]bool{}
	must(filepath.Walk(tree, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == tree {
			return err
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, tree+"/"))
		top, rest, _ := strings.Cut(rel, "/")
		typ := fi.Mode().Type()
		if rest != "" && (top == "dev" || top == "proc" || top == "sys") || typ&(os.ModeDevice|os.ModeSocket) != 0 {
			if _, ok := ents[rel]; ok {
				t.Errorf("%s is in the layer", rel)
			}
			return nil
		}
		seen[rel] = true
		if rel == "usr/local/bin/execlaw-guest" {
			return nil // replaced: checked below
		}
		e, ok := ents[rel]
		if !ok {
			t.Errorf("%s is not in the layer", rel)
			return nil
		}
		h := e.hdr
		sys := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().IsRegular() && sys.Nlink > 1 {
			if first, ok := firstLink[sys.Ino]; ok {
				if h.Typeflag != tar.TypeLink || h.Linkname != first {
					t.Errorf("%s: want a hard link to %s, got %+v", rel, first, h)
				}
				return nil
			}
			firstLink[sys.Ino] = rel
		}
		wantMode := int64(sys.Mode & 0o7777)
		uid, gid := ownerOf(fi)
		if h.Mode != wantMode || h.Uid != uid || h.Gid != gid || !h.ModTime.Equal(fi.ModTime().Truncate(time.Second)) {
			t.Errorf("%s: mode %o owner %d:%d time %v; layer has %o %d:%d %v", rel, wantMode, uid, gid, fi.ModTime(),
				h.Mode, h.Uid, h.Gid, h.ModTime)
		}
		switch {
		case typ == os.ModeSymlink:
			target, _ := os.Readlink(p)
			if h.Typeflag != tar.TypeSymlink || h.Linkname != target {
				t.Errorf("%s: symlink to %q, layer has %c %q", rel, target, h.Typeflag, h.Linkname)
			}
		case typ == os.ModeNamedPipe:
			if h.Typeflag != tar.TypeFifo {
				t.Errorf("%s: a fifo, layer has %c", rel, h.Typeflag)
			}
		case fi.IsDir():
			if h.Typeflag != tar.TypeDir {
				t.Errorf("%s: a directory, layer has %c", rel, h.Typeflag)
			}
		default:
			if h.Typeflag != tar.TypeReg || h.Size != fi.Size() || e.sum != fileSum(t, p) {
				t.Errorf("%s: %d bytes; layer has %c, %d bytes, or other contents", rel, fi.Size(), h.Typeflag, h.Size)
			}
		}
		capability := h.PAXRecords["SCHILY.xattr.security.capability"]
		wantCap := root && (rel == "usr/bin/ping" || rel == "usr/bin/ping2")
		if wantCap && capability != string(capNetRaw) || !wantCap && capability != "" {
			t.Errorf("%s: capability %x", rel, capability)
		}
		for k := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") && k != "SCHILY.xattr.security.capability" {
				t.Errorf("%s: the layer has attribute %s", rel, k)
			}
		}
		return nil
	}))
	for name := range ents {
		if !seen[name] && name != "usr/local/bin/execlaw-guest" {
			t.Errorf("%s: in the layer, not in the tree", name)
		}
	}
	if g := ents["usr/local/bin/execlaw-guest"]; g.hdr == nil || g.sum != fileSum(t, guest) || g.hdr.Mode != 0o755 {
		t.Error("usr/local/bin/execlaw-guest is not the guest binary")
	}
	for name, tm := range times {
		if h := ents[name].hdr; h == nil || !h.ModTime.Equal(tm) {
			t.Errorf("%s: time %v, want %v", name, h.ModTime, tm)
		}
	}
}

// TestOCIExt4SmallInodes: with 128-byte inodes (no room for attributes or
// the extra time fields in the inode) a file capability is in an attribute
// block of its own.
func TestOCIExt4SmallInodes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setting security.capability needs root")
	}
	mkfs := lookTool(t, "mkfs.ext4")
	tree := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tree, "usr/local/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	ping := filepath.Join(tree, "usr/bin/ping")
	if err := os.MkdirAll(filepath.Dir(ping), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ping, []byte("ping"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setxattr(ping, "security.capability", capNetRaw, 0); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "small-inodes.ext4")
	if err := os.WriteFile(img, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-I", "128", "-O", "^has_journal", "-d", tree, img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	st, err := image.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	blob, err := st.PutFile(img)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "x.tar")
	_, err = st.WriteOCI(context.Background(), image.Manifest{Name: "small", Arch: "amd64", Rootfs: image.Component{Blob: blob}},
		image.OCIOptions{Path: archive, GuestBinary: ping})
	if err != nil {
		t.Fatal(err)
	}
	dimg, err := tarball.ImageFromPath(archive, nil)
	if err != nil {
		t.Fatal(err)
	}
	ents, _ := layerEntries(t, dimg)
	fi, err := os.Stat(ping)
	if err != nil {
		t.Fatal(err)
	}
	h := ents["usr/bin/ping"].hdr
	if h == nil || h.PAXRecords["SCHILY.xattr.security.capability"] != string(capNetRaw) || !h.ModTime.Equal(fi.ModTime().Truncate(time.Second)) {
		t.Errorf("usr/bin/ping: %+v", h)
	}
}

// TestOCIExt4Unsupported: a file system using what the reader does not
// handle fails with an error that says so, not with a different tree.
func TestOCIExt4Unsupported(t *testing.T) {
	mkfs := lookTool(t, "mkfs.ext4")
	tree := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tree, "usr/local/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "small"), []byte("inline"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "inline.ext4")
	if err := os.WriteFile(img, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-O", "inline_data,^has_journal", "-d", tree, img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	notExt4 := filepath.Join(t.TempDir(), "zeros")
	if err := os.WriteFile(notExt4, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := image.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{img: "inline", notExt4: "not an ext4 file system"} {
		blob, err := st.PutFile(file)
		if err != nil {
			t.Fatal(err)
		}
		m := image.Manifest{Name: "bad", Arch: "amd64", Rootfs: image.Component{Blob: blob}}
		_, err = st.WriteOCI(context.Background(), m, image.OCIOptions{Path: filepath.Join(t.TempDir(), "x.tar"), GuestBinary: filepath.Join(tree, "small")})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error about %q", filepath.Base(file), err, want)
		}
	}
}
