package image

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// newcEntry is one entry of a newc archive as the kernel reads it
// (init/initramfs.c).
type newcEntry struct {
	name                 string
	ino, mode, uid, gid  uint32
	nlink, mtime         uint32
	devMajor, devMinor   uint32
	rdevMajor, rdevMinor uint32
	check                uint32
	data                 []byte
}

// readNewc parses an archive the way the kernel's initramfs unpacker does,
// and checks what it relies on: the "070701" magic, 13 hex fields, a name
// whose size counts its NUL, header+name and data each padded with zeros to
// 4 bytes from the start of the archive, the TRAILER!!! entry, and only
// zeros after it. It returns the entries before the trailer.
func readNewc(b []byte) ([]newcEntry, error) {
	var entries []newcEntry
	pos := 0
	align := func(what string) error {
		for ; pos%4 != 0; pos++ {
			if pos >= len(b) {
				return fmt.Errorf("%s: archive ends in the padding", what)
			}
			if b[pos] != 0 {
				return fmt.Errorf("%s: padding byte %d is %#x", what, pos, b[pos])
			}
		}
		return nil
	}
	for {
		if pos+110 > len(b) {
			return nil, fmt.Errorf("header at %d: archive ends, no TRAILER!!!", pos)
		}
		h := b[pos : pos+110]
		if string(h[:6]) != "070701" {
			return nil, fmt.Errorf("header at %d: magic %q", pos, h[:6])
		}
		var f [13]uint32
		for i := range f {
			field := string(h[6+8*i : 14+8*i])
			v, err := strconv.ParseUint(field, 16, 32)
			if err != nil || strings.ToUpper(field) != field {
				return nil, fmt.Errorf("header at %d: field %d is %q", pos, i, field)
			}
			f[i] = uint32(v)
		}
		e := newcEntry{ino: f[0], mode: f[1], uid: f[2], gid: f[3], nlink: f[4], mtime: f[5],
			devMajor: f[7], devMinor: f[8], rdevMajor: f[9], rdevMinor: f[10], check: f[12]}
		size, nameSize := int(f[6]), int(f[11])
		pos += 110
		if nameSize < 1 || pos+nameSize > len(b) || b[pos+nameSize-1] != 0 {
			return nil, fmt.Errorf("entry at %d: bad name size %d", pos-110, nameSize)
		}
		e.name = string(b[pos : pos+nameSize-1])
		if strings.IndexByte(e.name, 0) >= 0 {
			return nil, fmt.Errorf("entry %q: NUL inside the name", e.name)
		}
		pos += nameSize
		if err := align(e.name + " name"); err != nil {
			return nil, err
		}
		if pos+size > len(b) {
			return nil, fmt.Errorf("entry %q: %d bytes of data, archive ends", e.name, size)
		}
		e.data = b[pos : pos+size]
		pos += size
		if err := align(e.name + " data"); err != nil {
			return nil, err
		}
		if e.name == "TRAILER!!!" {
			if len(b)%512 != 0 {
				return nil, fmt.Errorf("archive is %d bytes, not whole 512-byte blocks", len(b))
			}
			if len(bytes.Trim(b[pos:], "\x00")) != 0 {
				return nil, errors.New("data after TRAILER!!!")
			}
			return entries, nil
		}
		entries = append(entries, e)
	}
}

// cpioOp is a call on the writer: addFile, or addDir when dir is set.
type cpioOp struct {
	dir  bool
	name string
	perm uint32
	data []byte
}

func opFile(name string, perm uint32, data string) cpioOp {
	return cpioOp{name: name, perm: perm, data: []byte(data)}
}
func opDir(name string) cpioOp { return cpioOp{dir: true, name: name} }

// wantEntry is an entry the archive must hold, in this order.
type wantEntry struct {
	name string
	mode uint32
	data string
}

func wantDir(name string) wantEntry { return wantEntry{name, modeDir | 0o755, ""} }
func wantFile(name string, perm uint32, data string) wantEntry {
	return wantEntry{name, modeReg | perm, data}
}

func writeCPIO(t *testing.T, ops []cpioOp) []byte {
	t.Helper()
	var buf bytes.Buffer
	c := newCPIO(&buf)
	for _, op := range ops {
		if op.dir {
			c.addDir(op.name)
		} else {
			c.addFile(op.name, op.perm, op.data)
		}
	}
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var cpioCases = []struct {
	name string
	ops  []cpioOp
	want []wantEntry
}{
	{"empty archive", nil, nil},
	{"init alone", []cpioOp{opFile("/init", 0o755, "#!/bin/sh\n")}, []wantEntry{wantFile("init", 0o755, "#!/bin/sh\n")}},
	{"parents made, sorted before children",
		[]cpioOp{opFile("/lib/modules/load-order", 0o644, "/lib/modules/a.ko\n"), opFile("/init", 0o755, "x")},
		[]wantEntry{wantFile("init", 0o755, "x"), wantDir("lib"), wantDir("lib/modules"), wantFile("lib/modules/load-order", 0o644, "/lib/modules/a.ko\n")}},
	{"directories only, each once",
		[]cpioOp{opDir("/dev"), opDir("/proc"), opDir("dev"), opDir("/a/b/c"), opDir("/a/b"), opDir("/")},
		[]wantEntry{wantDir("a"), wantDir("a/b"), wantDir("a/b/c"), wantDir("dev"), wantDir("proc")}},
	{"names cleaned",
		[]cpioOp{opFile("//a/./b/../c", 0o600, "c"), opFile("rel", 0o644, ""), opFile("/x/../../y", 0o644, "y")},
		[]wantEntry{wantDir("a"), wantFile("a/c", 0o600, "c"), wantFile("rel", 0o644, ""), wantFile("y", 0o644, "y")}},
	{"a sibling that sorts between parent and child",
		[]cpioOp{opFile("/a/x", 0o644, "1"), opFile("/a-b", 0o644, "2"), opFile("/a.c/y", 0o644, "3")},
		[]wantEntry{wantDir("a"), wantFile("a-b", 0o644, "2"), wantDir("a.c"), wantFile("a.c/y", 0o644, "3"), wantFile("a/x", 0o644, "1")}},
	{"every padding: name and data lengths 0 to 7",
		[]cpioOp{opFile("n", 0o644, ""), opFile("na", 0o644, "1"), opFile("nam", 0o644, "12"), opFile("name", 0o644, "123"),
			opFile("name5", 0o644, "1234"), opFile("name6x", 0o644, "12345"), opFile("name7xx", 0o644, "123456"), opFile("name8xxx", 0o644, "1234567")},
		[]wantEntry{wantFile("n", 0o644, ""), wantFile("na", 0o644, "1"), wantFile("nam", 0o644, "12"), wantFile("name", 0o644, "123"),
			wantFile("name5", 0o644, "1234"), wantFile("name6x", 0o644, "12345"), wantFile("name7xx", 0o644, "123456"), wantFile("name8xxx", 0o644, "1234567")}},
	{"modes", []cpioOp{opFile("suid", 0o4755, "s"), opFile("ro", 0o400, "r"), opFile("none", 0, "n"), opFile("sticky", 0o1777, "t")},
		[]wantEntry{wantFile("none", 0, "n"), wantFile("ro", 0o400, "r"), wantFile("sticky", 0o1777, "t"), wantFile("suid", 0o4755, "s")}},
	{"a name with spaces and UTF-8", []cpioOp{opFile("/dir with space/file ü.txt", 0o644, "ü")},
		[]wantEntry{wantDir("dir with space"), wantFile("dir with space/file ü.txt", 0o644, "ü")}},
	{"binary data, every byte value", []cpioOp{opFile("bin", 0o644, string(allBytes()))}, []wantEntry{wantFile("bin", 0o644, string(allBytes()))}},
	{"a large file", []cpioOp{opFile("lib/modules/big.ko", 0o644, string(randomBytes(8, 1<<20+3)))},
		[]wantEntry{wantDir("lib"), wantDir("lib/modules"), wantFile("lib/modules/big.ko", 0o644, string(randomBytes(8, 1<<20+3)))}},
	{"a long name", []cpioOp{opFile(strings.Repeat("n", 255), 0o644, "l")}, []wantEntry{wantFile(strings.Repeat("n", 255), 0o644, "l")}},
}

func allBytes() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// The writer's archive, read back as the kernel reads it.
func TestCpioNewcFormat(t *testing.T) {
	for _, tc := range cpioCases {
		t.Run(tc.name, func(t *testing.T) {
			archive := writeCPIO(t, tc.ops)
			entries, err := readNewc(archive)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != len(tc.want) {
				t.Fatalf("%d entries, want %d: %v", len(entries), len(tc.want), names(entries))
			}
			inos := map[uint32]bool{}
			for i, e := range entries {
				w := tc.want[i]
				if e.name != w.name || e.mode != w.mode || string(e.data) != w.data {
					t.Errorf("entry %d: %q mode %o, %d bytes; want %q mode %o, %d bytes", i, e.name, e.mode, len(e.data), w.name, w.mode, len(w.data))
				}
				wantLinks := uint32(1)
				if w.mode&modeDir != 0 {
					wantLinks = 2
				}
				if e.nlink != wantLinks {
					t.Errorf("%q: nlink %d, want %d", e.name, e.nlink, wantLinks)
				}
				// Fixed owner and time, no device numbers: the same files
				// always make the same archive.
				if e.uid != 0 || e.gid != 0 || e.mtime != 0 || e.devMajor|e.devMinor|e.rdevMajor|e.rdevMinor|e.check != 0 {
					t.Errorf("%q: uid %d gid %d mtime %d devs %d:%d/%d:%d check %d; want all 0", e.name, e.uid, e.gid, e.mtime, e.devMajor, e.devMinor, e.rdevMajor, e.rdevMinor, e.check)
				}
				if inos[e.ino] {
					t.Errorf("%q: inode %d used twice (GNU cpio would take it for a hard link)", e.name, e.ino)
				}
				inos[e.ino] = true
			}
		})
	}
}

func names(entries []newcEntry) []string {
	var s []string
	for _, e := range entries {
		s = append(s, e.name)
	}
	return s
}

// lsMode formats a mode as cpio -t -v (and ls -l) prints it.
func lsMode(mode uint32) string {
	b := []byte("-rwxrwxrwx")
	if mode&modeDir != 0 {
		b[0] = 'd'
	}
	for i := 0; i < 9; i++ {
		if mode&(1<<(8-i)) == 0 {
			b[1+i] = '-'
		}
	}
	special := func(bit uint32, at int, set, unset byte) {
		if mode&bit != 0 {
			if b[at] == '-' {
				b[at] = unset
			} else {
				b[at] = set
			}
		}
	}
	special(0o4000, 3, 's', 'S')
	special(0o2000, 6, 's', 'S')
	special(0o1000, 9, 't', 'T')
	return string(b)
}

// cpio -t -v line: mode, links, owner, group, size, date (3 fields), name.
var cpioListRE = regexp.MustCompile(`^(\S{10})\s+(\d+)\s+(\S+)\s+(\S+)\s+(\d+)\s+\S+\s+\d+\s+\S+\s(.*)$`)

// The writer's archive, listed and extracted by GNU cpio.
func TestCpioWithGNUCpio(t *testing.T) {
	needTool(t, "cpio", "cpio")
	for _, tc := range cpioCases {
		t.Run(tc.name, func(t *testing.T) {
			archive := writeCPIO(t, tc.ops)

			out := runTool(t, archive, "", "cpio", "-t", "-v", "--quiet", "--numeric-uid-gid")
			var lines []string
			if s := strings.TrimSuffix(string(out), "\n"); s != "" {
				lines = strings.Split(s, "\n")
			}
			if len(lines) != len(tc.want) {
				t.Fatalf("cpio -t lists %d entries, want %d:\n%s", len(lines), len(tc.want), out)
			}
			for i, line := range lines {
				w := tc.want[i]
				m := cpioListRE.FindStringSubmatch(line)
				if m == nil {
					t.Fatalf("cpio -t -v line %q", line)
				}
				if m[1] != lsMode(w.mode) || m[3] != "0" || m[4] != "0" || m[5] != strconv.Itoa(len(w.data)) || m[6] != w.name {
					t.Errorf("cpio -t -v: %q; want %s 0 0 %d %s", line, lsMode(w.mode), len(w.data), w.name)
				}
			}

			// Extracted, the tree holds exactly the entries, with their
			// modes and contents.
			root := t.TempDir()
			runTool(t, archive, root, "cpio", "-i", "-d", "--quiet", "--no-absolute-filenames")
			got := map[string]bool{}
			err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
				if err == nil && p != root {
					rel, _ := filepath.Rel(root, p)
					got[filepath.ToSlash(rel)] = true
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				delete(got, w.name)
				p := filepath.Join(root, filepath.FromSlash(w.name))
				fi, err := os.Lstat(p)
				if err != nil {
					t.Errorf("extracted: %v", err)
					continue
				}
				if m := unixMode(fi.Mode()); m != w.mode {
					t.Errorf("extracted %s: mode %o, want %o", w.name, m, w.mode)
				}
				if w.mode&modeReg != 0 {
					os.Chmod(p, 0o600) // mode 0 is unreadable to anyone but root
					data, err := os.ReadFile(p)
					if err != nil {
						t.Fatal(err)
					}
					if string(data) != w.data {
						t.Errorf("extracted %s: %s", w.name, firstDiff(data, []byte(w.data)))
					}
				}
			}
			if len(got) != 0 {
				t.Errorf("extracted more than the entries: %v", got)
			}
		})
	}
}

// unixMode turns an fs.FileMode back into the st_mode bits cpio stores.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	switch {
	case m.IsDir():
		u |= modeDir
	case m.IsRegular():
		u |= modeReg
	}
	return u
}

// The same files give the same bytes, whatever order they were added in:
// the initramfs is content-addressed.
func TestCpioDeterministic(t *testing.T) {
	ops := []cpioOp{opFile("/init", 0o755, "init"), opFile("/lib/modules/a.ko", 0o644, "a"), opFile("/lib/modules/b.ko", 0o644, "b"), opDir("/dev"), opDir("/proc")}
	first := writeCPIO(t, ops)
	for i := 0; i < len(ops); i++ {
		rotated := append(append([]cpioOp(nil), ops[i:]...), ops[:i]...)
		sort.SliceStable(rotated, func(a, b int) bool { return i%2 == 1 && rotated[a].name > rotated[b].name })
		if got := writeCPIO(t, rotated); !bytes.Equal(got, first) {
			t.Fatalf("order %d: %s", i, firstDiff(got, first))
		}
	}
}

// failWriter accepts n bytes, then fails.
type failWriter struct{ n int }

var errDiskFull = errors.New("disk full")

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) <= w.n {
		w.n -= len(p)
		return len(p), nil
	}
	n := w.n
	w.n = 0
	return n, errDiskFull
}

// A write error anywhere, in a header, a name, data or the final padding,
// comes back from close.
func TestCpioWriteError(t *testing.T) {
	ops := []cpioOp{opFile("/init", 0o755, "0123456789"), opDir("/dev")}
	size := len(writeCPIO(t, ops))
	for _, n := range []int{0, 1, 109, 110, 111, 116, 120, 125, 300, size - 1} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			c := newCPIO(&failWriter{n: n})
			for _, op := range ops {
				if op.dir {
					c.addDir(op.name)
				} else {
					c.addFile(op.name, op.perm, op.data)
				}
			}
			if err := c.close(); !errors.Is(err, errDiskFull) {
				t.Fatalf("close after %d of %d bytes: %v, want %v", n, size, err, errDiskFull)
			}
		})
	}
}

// staticELF writes a file that passes checkStatic: x86-64, no interpreter.
func staticELF(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "execlaw-guest")
	if err := os.WriteFile(p, minimalELF([]byte{0xE8, 0, 0, 0, 0, 0xC3}, elf.EM_X86_64, elf.ET_EXEC), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// BuildInitramfs without modules (a kernel with everything built in): gzip
// around a newc archive with /init and the mount points, and no load order,
// readable by GNU cpio.
func TestBuildInitramfsNoModules(t *testing.T) {
	guest := staticELF(t)
	gz, mods, err := BuildInitramfs(guest, "", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(mods) != 0 {
		t.Fatalf("modules %v, want none", mods)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	archive, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := readNewc(archive)
	if err != nil {
		t.Fatal(err)
	}
	init, _ := os.ReadFile(guest)
	want := []wantEntry{wantDir("dev"), wantFile("init", 0o755, string(init)),
		wantDir("newroot"), wantDir("proc"), wantDir("run"), wantDir("sys"), wantDir("tmp")}
	if len(entries) != len(want) {
		t.Fatalf("entries %v", names(entries))
	}
	for i, e := range entries {
		if w := want[i]; e.name != w.name || e.mode != w.mode || string(e.data) != w.data {
			t.Errorf("entry %d: %q mode %o %d bytes, want %q mode %o %d bytes", i, e.name, e.mode, len(e.data), w.name, w.mode, len(w.data))
		}
	}
	needTool(t, "cpio", "cpio")
	out := runTool(t, archive, "", "cpio", "-t", "--quiet")
	if got, wantNames := strings.Fields(string(out)), []string{"dev", "init", "newroot", "proc", "run", "sys", "tmp"}; strings.Join(got, " ") != strings.Join(wantNames, " ") {
		t.Errorf("cpio -t: %v", got)
	}
	again, _, err := BuildInitramfs(guest, "", true)
	if err != nil || !bytes.Equal(again, gz) {
		t.Errorf("a second build differs (err %v)", err)
	}
}

// Uncompressed, the archive is the same newc archive the gzip stream holds.
func TestBuildInitramfsUncompressed(t *testing.T) {
	guest := staticELF(t)
	raw, _, err := BuildInitramfs(guest, "", false)
	if err != nil {
		t.Fatal(err)
	}
	gz, _, err := BuildInitramfs(guest, "", true)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	inflated, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, inflated) {
		t.Fatalf("the uncompressed archive (%d bytes) differs from the inflated one (%d bytes)", len(raw), len(inflated))
	}
	if !bytes.HasPrefix(raw, []byte("070701")) {
		t.Fatalf("starts %q, want a newc header", raw[:6])
	}
}

func TestBuildInitramfsRefusesGuest(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// An executable that asks for a dynamic loader (PT_INTERP).
	dynamic := minimalELF([]byte("/lib64/ld-linux-x86-64.so.2\x00"), elf.EM_X86_64, elf.ET_EXEC)
	binary.LittleEndian.PutUint32(dynamic[64:], uint32(elf.PT_INTERP))
	cases := []struct {
		name, path, err string
	}{
		{"missing", filepath.Join(dir, "nope"), "no such file"},
		{"a script", write("script", []byte("#!/bin/sh\n")), "not an ELF"},
		{"arm64", write("arm64", minimalELF(nil, elf.EM_AARCH64, elf.ET_EXEC)), "want x86-64"},
		{"dynamically linked", write("dynamic", dynamic), "dynamically linked"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := BuildInitramfs(tc.path, "", true); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err %v, want one about %q", err, tc.err)
			}
		})
	}
}
