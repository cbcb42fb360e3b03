package guest

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// outsideDir is a directory beside the workspace holding a secret: what
// every escape in these tests tries to reach.
func outsideDir(t *testing.T, g *testGuest) string {
	t.Helper()
	dir := filepath.Join(filepath.Dir(g.ws), "outside")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("top secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustWrite(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func wsReadAll(t *testing.T, g *testGuest, p string) (string, error) {
	t.Helper()
	rc, size, err := g.c.WSRead(testCtx(t), p)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err == nil && int64(len(b)) != size {
		t.Fatalf("read %d bytes, size said %d", len(b), size)
	}
	return string(b), err
}

func TestWSListReadConfined(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	out := outsideDir(t, g)
	mustWrite(t, filepath.Join(g.ws, "src/main.go"), "package main\n")
	mustWrite(t, filepath.Join(g.ws, "README.md"), "# hi\n")
	os.Symlink("src/main.go", filepath.Join(g.ws, "inside-link"))
	os.Symlink(filepath.Join(out, "secret"), filepath.Join(g.ws, "abs-link"))
	os.Symlink("../outside/secret", filepath.Join(g.ws, "rel-link"))
	os.Symlink(out, filepath.Join(g.ws, "dir-link"))
	if err := syscall.Mkfifo(filepath.Join(g.ws, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx := testCtx(t)
	l, err := g.c.WSList(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	for _, e := range l.Entries {
		types[e.Name] = e.Type
	}
	want := map[string]string{"src": WSDir, "README.md": WSFile, "inside-link": WSSymlink, "abs-link": WSSymlink,
		"rel-link": WSSymlink, "dir-link": WSSymlink, "fifo": WSOther}
	for k, v := range want {
		if types[k] != v {
			t.Errorf("%s listed as %q, want %q (all: %v)", k, types[k], v, types)
		}
	}
	if l.Path != "" {
		t.Errorf("root listed as %q", l.Path)
	}
	if l, err := g.c.WSList(ctx, filepath.Join(g.ws, "src")); err != nil || l.Path != "src" || len(l.Entries) != 1 || l.Entries[0].Size != 13 {
		t.Errorf("absolute path inside the workspace: %+v %v", l, err)
	}

	if got, err := wsReadAll(t, g, "inside-link"); err != nil || got != "package main\n" {
		t.Errorf("a symlink inside the workspace: %q %v", got, err)
	}
	for _, p := range []string{"abs-link", "rel-link", "dir-link/secret", "../outside/secret", "src/../../outside/secret",
		filepath.Join(out, "secret"), "/etc/passwd"} {
		if got, err := wsReadAll(t, g, p); errCode(err) != CodeInvalid || got != "" {
			t.Errorf("read %s: %q, %v (code %s), want invalid", p, got, err, errCode(err))
		}
	}
	if _, err := g.c.WSList(ctx, "dir-link"); errCode(err) != CodeInvalid {
		t.Errorf("listing through a symlink out: %v", err)
	}
	done := make(chan error, 1)
	go func() { _, err := wsReadAll(t, g, "fifo"); done <- err }()
	select {
	case err := <-done:
		if errCode(err) != CodeInvalid {
			t.Errorf("reading a FIFO: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reading a FIFO blocked")
	}
	if _, err := wsReadAll(t, g, "src"); errCode(err) != CodeIsDir {
		t.Errorf("reading a directory: %v", err)
	}
	if _, err := wsReadAll(t, g, "nope"); errCode(err) != CodeNotFound {
		t.Errorf("reading a missing file: %v", err)
	}
	if _, err := wsReadAll(t, g, "a\x00b"); errCode(err) != CodeInvalid {
		t.Errorf("NUL in a path: %v", err)
	}
}

func TestWSWrite(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	out := outsideDir(t, g)
	ctx := testCtx(t)
	r, err := g.c.WSWrite(ctx, "new/dir/file.bin", bytes.NewReader([]byte{0, 1, 2, 255}), 1<<20)
	if err != nil || r.Path != "new/dir/file.bin" || r.Size != 4 {
		t.Fatalf("write: %+v %v", r, err)
	}
	if b, _ := os.ReadFile(filepath.Join(g.ws, "new/dir/file.bin")); !bytes.Equal(b, []byte{0, 1, 2, 255}) {
		t.Fatalf("on disk: %v", b)
	}
	// Too large: refused, and the old file stays whole.
	mustWrite(t, filepath.Join(g.ws, "keep.txt"), "original")
	os.Chmod(filepath.Join(g.ws, "keep.txt"), 0o755)
	if _, err := g.c.WSWrite(ctx, "keep.txt", strings.NewReader(strings.Repeat("x", 2000)), 1000); errCode(err) != CodeTooLarge {
		t.Fatalf("too large: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(g.ws, "keep.txt")); string(b) != "original" {
		t.Fatalf("a refused write changed the file: %q", b)
	}
	if _, err := g.c.WSWrite(ctx, "keep.txt", strings.NewReader("new"), 1000); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(g.ws, "keep.txt")); fi.Mode().Perm() != 0o755 {
		t.Errorf("rewriting lost the mode: %v", fi.Mode())
	}
	// Out of the workspace: through "..", a symlinked directory, an absolute path.
	os.Symlink(out, filepath.Join(g.ws, "out"))
	for _, p := range []string{"../outside/secret", "out/secret", "out/new", filepath.Join(out, "secret"), "", "."} {
		if _, err := g.c.WSWrite(ctx, p, strings.NewReader("pwned"), 1000); errCode(err) != CodeInvalid {
			t.Errorf("write %q: %v, want invalid", p, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(out, "secret")); string(b) != "top secret" {
		t.Fatalf("the secret outside changed: %q", b)
	}
	if _, err := os.Stat(filepath.Join(out, "new")); err == nil {
		t.Fatal("a file was created outside")
	}
	// A symlink in the file's place is replaced, not written through.
	os.Symlink(filepath.Join(out, "secret"), filepath.Join(g.ws, "link"))
	if _, err := g.c.WSWrite(ctx, "link", strings.NewReader("mine"), 1000); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(filepath.Join(g.ws, "link")); !fi.Mode().IsRegular() {
		t.Error("the symlink was not replaced")
	}
	if b, _ := os.ReadFile(filepath.Join(out, "secret")); string(b) != "top secret" {
		t.Fatalf("written through a symlink: %q", b)
	}
	if _, err := g.c.WSWrite(ctx, "new", strings.NewReader("x"), 10); errCode(err) != CodeIsDir {
		t.Errorf("over a directory: %v", err)
	}
	// No temporary file is left behind by the failures.
	filepath.WalkDir(g.ws, func(p string, d os.DirEntry, err error) error {
		if strings.Contains(d.Name(), "execlaw-upload") {
			t.Errorf("left behind: %s", p)
		}
		return nil
	})
}

// tarTree reads a gzipped tarball into name → content (dirs "/", links "->target").
func tarTree(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	zr, err := gzip.NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	got := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			got[h.Name] = "/"
		case tar.TypeSymlink:
			got[h.Name] = "->" + h.Linkname
		default:
			b, _ := io.ReadAll(tr)
			got[h.Name] = string(b)
		}
	}
}

func TestWSTar(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	out := outsideDir(t, g)
	mustWrite(t, filepath.Join(g.ws, "a/b/c.txt"), "deep")
	mustWrite(t, filepath.Join(g.ws, "top.txt"), "top")
	os.Symlink(filepath.Join(out, "secret"), filepath.Join(g.ws, "escape"))
	os.Symlink(out, filepath.Join(g.ws, "escape-dir"))
	syscall.Mkfifo(filepath.Join(g.ws, "fifo"), 0o644)
	rc, err := g.c.WSTar(testCtx(t), WSTarRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := tarTree(t, rc)
	rc.Close()
	want := map[string]string{"workspace/": "/", "workspace/a/": "/", "workspace/a/b/": "/", "workspace/a/b/c.txt": "deep",
		"workspace/top.txt": "top", "workspace/escape": "->" + filepath.Join(out, "secret"), "workspace/escape-dir": "->" + out}
	if len(got) != len(want) {
		t.Errorf("tar holds %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	// Bounded: the archive ends with a note, and stays valid.
	rc, err = g.c.WSTar(testCtx(t), WSTarRequest{MaxEntries: 3})
	if err != nil {
		t.Fatal(err)
	}
	got = tarTree(t, rc)
	rc.Close()
	if note := got["workspace/"+TarNoteName]; !strings.Contains(note, "more than 3 entries") {
		t.Errorf("no note in a cut archive: %v", got)
	}
	rc, _ = g.c.WSTar(testCtx(t), WSTarRequest{MaxBytes: 5})
	got = tarTree(t, rc)
	rc.Close()
	if note := got["workspace/"+TarNoteName]; !strings.Contains(note, "more than 5 bytes") {
		t.Errorf("no note in a cut archive: %v", got)
	}
}

type tarEntry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func makeTarGz(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Mode: mode, Size: int64(len(e.body))}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func treeOf(t *testing.T, dir string) []string {
	t.Helper()
	var got []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		fi, _ := os.Lstat(p)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			rel += " -> " + l
		case fi.IsDir():
			rel += "/"
		default:
			b, _ := os.ReadFile(p)
			rel += " = " + string(b)
		}
		got = append(got, rel)
		return nil
	})
	sort.Strings(got)
	return got
}

func TestWSUnpack(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)
	arch := makeTarGz(t,
		tarEntry{name: "proj/", typ: tar.TypeDir},
		tarEntry{name: "proj/src/main.go", body: "package main\n"},
		tarEntry{name: "proj/run.sh", body: "#!/bin/sh\n", mode: 0o755},
		tarEntry{name: "proj/link", typ: tar.TypeSymlink, link: "src/main.go"},
		tarEntry{name: "proj/hard", typ: tar.TypeLink, link: "proj/run.sh"},
		tarEntry{name: "proj/dev", typ: tar.TypeChar},
	)
	res, err := g.c.WSUnpack(ctx, bytes.NewReader(arch), UnpackLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Format != "tar.gz" || res.Files != 3 || res.Symlinks != 1 || res.Skipped != 1 || res.Stripped != "proj" {
		t.Errorf("result %+v", res)
	}
	want := []string{"hard = #!/bin/sh\n", "link -> src/main.go", "run.sh = #!/bin/sh\n", "src/", "src/main.go = package main\n"}
	if got := treeOf(t, g.ws); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("unpacked %q, want %q", got, want)
	}
	if fi, _ := os.Stat(filepath.Join(g.ws, "run.sh")); fi.Mode().Perm() != 0o755 {
		t.Errorf("run.sh mode %v", fi.Mode())
	}

	// A zip, not stripped (two top-level entries).
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	w, _ := zw.Create("z/one.txt")
	w.Write([]byte("one"))
	w, _ = zw.Create("two.txt")
	w.Write([]byte("two"))
	w, _ = zw.Create("__MACOSX/._two.txt")
	w.Write([]byte("junk"))
	zw.Close()
	res, err = g.c.WSUnpack(ctx, bytes.NewReader(zbuf.Bytes()), UnpackLimits{})
	if err != nil || res.Format != "zip" || res.Files != 2 || res.Stripped != "" || res.Skipped != 1 {
		t.Fatalf("zip: %+v %v", res, err)
	}
	if b, _ := os.ReadFile(filepath.Join(g.ws, "z/one.txt")); string(b) != "one" {
		t.Errorf("zip content %q", b)
	}
}

func TestWSUnpackHostile(t *testing.T) {
	cases := []struct {
		name    string
		entries []tarEntry
		lim     UnpackLimits
		code    string
	}{
		{"dot-dot", []tarEntry{{name: "../evil", body: "x"}}, UnpackLimits{}, CodeInvalid},
		{"dot-dot inside", []tarEntry{{name: "a/../../evil", body: "x"}}, UnpackLimits{}, CodeInvalid},
		{"absolute", []tarEntry{{name: "/tmp/evil", body: "x"}}, UnpackLimits{}, CodeInvalid},
		{"symlink out then through it", []tarEntry{{name: "ln", typ: tar.TypeSymlink, link: "../outside"}, {name: "ln/secret", body: "pwned"}}, UnpackLimits{}, CodeInvalid},
		{"absolute symlink", []tarEntry{{name: "ln", typ: tar.TypeSymlink, link: "/etc"}}, UnpackLimits{}, CodeInvalid},
		{"write through an inside symlink", []tarEntry{{name: "d/", typ: tar.TypeDir}, {name: "ln", typ: tar.TypeSymlink, link: "d"}, {name: "ln/x", body: "x"}}, UnpackLimits{}, CodeInvalid},
		{"hard link out", []tarEntry{{name: "h", typ: tar.TypeLink, link: "../outside/secret"}}, UnpackLimits{}, CodeInvalid},
		{"hard link through a symlink", []tarEntry{{name: "ln", typ: tar.TypeSymlink, link: "."}, {name: "h", typ: tar.TypeLink, link: "ln/x"}}, UnpackLimits{}, CodeInvalid},
		{"too many entries", []tarEntry{{name: "a", body: "1"}, {name: "b", body: "2"}, {name: "c", body: "3"}}, UnpackLimits{MaxEntries: 2}, CodeTooLarge},
		{"too many bytes", []tarEntry{{name: "a", body: strings.Repeat("x", 600)}, {name: "b", body: strings.Repeat("x", 600)}}, UnpackLimits{MaxBytes: 1000}, CodeTooLarge},
		{"archive too large", []tarEntry{{name: "a", body: strings.Repeat("x", 100000)}}, UnpackLimits{MaxArchive: 100}, CodeTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := startGuest(t, ServerConfig{})
			out := outsideDir(t, g)
			_, err := g.c.WSUnpack(testCtx(t), bytes.NewReader(makeTarGz(t, c.entries...)), c.lim)
			if errCode(err) != c.code {
				t.Fatalf("got %v (code %s), want %s", err, errCode(err), c.code)
			}
			if b, _ := os.ReadFile(filepath.Join(out, "secret")); string(b) != "top secret" {
				t.Fatalf("the secret outside changed: %q", b)
			}
			entries, _ := os.ReadDir(filepath.Dir(g.ws))
			for _, e := range entries {
				if e.Name() != "ws" && e.Name() != "outside" && e.Name() != "g.sock" {
					t.Errorf("left beside the workspace: %s", e.Name())
				}
			}
			if _, err := os.Stat(filepath.Join(out, "x")); err == nil {
				t.Error("written outside")
			}
		})
	}
	g := startGuest(t, ServerConfig{})
	if _, err := g.c.WSUnpack(testCtx(t), strings.NewReader("this is not an archive at all"), UnpackLimits{}); errCode(err) != CodeInvalid {
		t.Errorf("not an archive: %v", err)
	}
	// A zip whose entry claims a small size but holds a lot: bounded by what is written.
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	fw, _ := zw.CreateHeader(&zip.FileHeader{Name: "bomb", Method: zip.Deflate})
	fw.Write(bytes.Repeat([]byte{0}, 1<<20))
	zw.Close()
	if _, err := g.c.WSUnpack(testCtx(t), bytes.NewReader(zbuf.Bytes()), UnpackLimits{MaxBytes: 1000}); errCode(err) != CodeTooLarge {
		t.Errorf("zip bomb: %v", err)
	}
	if _, err := os.Stat(filepath.Join(g.ws, "bomb")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the bomb was left in the workspace: %v", err)
	}
}

// Kernels without openat2 get a walk that follows no symlink at all:
// stricter, never looser.
func TestWSWithoutOpenat2(t *testing.T) {
	noOpenat2.Store(true)
	t.Cleanup(func() { noOpenat2.Store(false) })
	g := startGuest(t, ServerConfig{})
	out := outsideDir(t, g)
	mustWrite(t, filepath.Join(g.ws, "src/main.go"), "package main\n")
	os.Symlink("src", filepath.Join(g.ws, "inside"))
	os.Symlink(out, filepath.Join(g.ws, "out"))
	if got, err := wsReadAll(t, g, "src/main.go"); err != nil || got != "package main\n" {
		t.Fatalf("read: %q %v", got, err)
	}
	if l, err := g.c.WSList(testCtx(t), ""); err != nil || len(l.Entries) != 3 {
		t.Fatalf("list: %+v %v", l, err)
	}
	for _, p := range []string{"out/secret", "inside/main.go"} {
		if _, err := wsReadAll(t, g, p); err == nil {
			t.Errorf("read %s through a symlink", p)
		}
	}
	if _, err := g.c.WSWrite(testCtx(t), "out/x", strings.NewReader("x"), 10); err == nil {
		t.Error("wrote through a symlink")
	}
	if _, err := g.c.WSWrite(testCtx(t), "new/x", strings.NewReader("x"), 10); err != nil {
		t.Error(err)
	}
}
