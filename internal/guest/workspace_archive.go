package guest

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Tarballs of the workspace: built here with archive/tar from the
// workspace's descriptor (nothing is shelled out), streamed as they are
// made. Symlinks are stored as symlinks and never followed; FIFOs, sockets
// and devices are left out. The walk is bounded by entries, bytes and time;
// past a bound the archive ends with a note saying why, and is still a valid
// archive.

func (s *Server) handleWSTar(w http.ResponseWriter, r *http.Request) {
	var req WSTarRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	t := &tarWalk{maxEntries: DefaultTarMaxEntries, maxBytes: DefaultTarMaxBytes}
	if req.MaxEntries > 0 {
		t.maxEntries = min(req.MaxEntries, DefaultTarMaxEntries)
	}
	if req.MaxBytes > 0 {
		t.maxBytes = min(req.MaxBytes, DefaultTarMaxBytes)
	}
	root, err := s.openWS()
	if err != nil {
		writeError(w, err)
		return
	}
	fd, err := root.open(".", unix.O_RDONLY|unix.O_DIRECTORY, 0, false)
	root.Close()
	if err != nil {
		writeError(w, err)
		return
	}
	dir := os.NewFile(uintptr(fd), ".")
	defer dir.Close()

	w.Header().Set("Content-Type", ContentGzip)
	w.WriteHeader(http.StatusOK)
	ctx, cancel := context.WithTimeout(r.Context(), TarTimeLimit)
	defer cancel()
	gz, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	t.ctx, t.tw = ctx, tar.NewWriter(gz)
	now := time.Now()
	if t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: TarPrefix, Mode: 0o755, ModTime: now}) != nil {
		return
	}
	t.walk(dir, "", 0)
	if t.failed {
		return // the host went away
	}
	if t.stopped != "" {
		note := fmt.Sprintf("This archive of the workspace is incomplete: %s.\n\nIt holds %d entries and %d bytes of file content; "+
			"%d special files (FIFOs, sockets, devices) and %d unreadable entries were left out.\n",
			t.stopped, t.entries, t.bytes, t.skipped, t.unreadable)
		if t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: TarPrefix + TarNoteName, Mode: 0o644, Size: int64(len(note)), ModTime: now}) == nil {
			t.tw.Write([]byte(note))
		}
	}
	if t.tw.Close() == nil {
		gz.Close()
	}
}

type tarWalk struct {
	ctx                 context.Context
	tw                  *tar.Writer
	maxEntries          int
	maxBytes            int64
	entries             int
	bytes               int64
	skipped, unreadable int
	stopped             string // why the archive ends early
	failed              bool   // writing failed: the host is gone
}

func (t *tarWalk) done() bool {
	switch {
	case t.failed || t.stopped != "":
	case t.ctx.Err() != nil:
		if errors.Is(t.ctx.Err(), context.DeadlineExceeded) {
			t.stopped = fmt.Sprintf("making it took longer than %s", TarTimeLimit)
		} else {
			t.failed = true
		}
	case t.entries >= t.maxEntries:
		t.stopped = fmt.Sprintf("the workspace has more than %d entries", t.maxEntries)
	default:
		return false
	}
	return true
}

func (t *tarWalk) header(h *tar.Header) bool {
	if err := t.tw.WriteHeader(h); err != nil {
		t.failed = true
		return false
	}
	t.entries++
	return true
}

// walk adds what dir (rel, "" or ending in "/") holds, in name order.
func (t *tarWalk) walk(dir *os.File, rel string, depth int) {
	var names []string
	for len(names) <= t.maxEntries-t.entries {
		batch, err := dir.Readdirnames(1024)
		names = append(names, batch...)
		if err != nil {
			break
		}
	}
	sort.Strings(names)
	dfd := int(dir.Fd())
	for _, name := range names {
		if t.done() {
			return
		}
		var st unix.Stat_t
		if unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			continue
		}
		p := rel + name
		h := &tar.Header{Name: TarPrefix + p, Mode: int64(st.Mode & 0o777), ModTime: statTime(st.Mtim)}
		switch fileType(st.Mode) {
		case WSDir:
			if depth >= TarMaxDepth {
				t.stopped = fmt.Sprintf("%s is more than %d directories deep", p, TarMaxDepth)
				return
			}
			fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				t.unreadable++
				continue
			}
			sub := os.NewFile(uintptr(fd), p)
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
			if t.header(h) {
				t.walk(sub, p+"/", depth+1)
			}
			sub.Close()
		case WSSymlink:
			target, err := readlinkat(dfd, name)
			if err != nil {
				t.unreadable++
				continue
			}
			h.Typeflag, h.Linkname = tar.TypeSymlink, target
			t.header(h)
		case WSFile:
			t.file(dfd, name, h)
		default:
			t.skipped++
		}
	}
}

func (t *tarWalk) file(dfd int, name string, h *tar.Header) {
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.unreadable++
		return
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || fileType(st.Mode) != WSFile {
		t.unreadable++
		return
	}
	if t.bytes+st.Size > t.maxBytes {
		t.stopped = fmt.Sprintf("its files hold more than %d bytes", t.maxBytes)
		return
	}
	h.Typeflag, h.Size = tar.TypeReg, st.Size
	if !t.header(h) {
		return
	}
	n, err := io.CopyN(t.tw, ctxReader{t.ctx, f}, st.Size)
	t.bytes += st.Size
	if err == nil {
		return
	}
	if t.ctx.Err() != nil && !errors.Is(t.ctx.Err(), context.DeadlineExceeded) {
		t.failed = true
		return
	}
	// The file shrank while it was read, or time ran out: the entry keeps
	// its size (tar needs it), filled with zeros, and the note says so.
	if _, werr := io.CopyN(t.tw, zeros{}, st.Size-n); werr != nil {
		t.failed = true
		return
	}
	if t.ctx.Err() != nil {
		t.stopped = fmt.Sprintf("making it took longer than %s (%s is cut short, padded with zeros)", TarTimeLimit, strings.TrimPrefix(h.Name, TarPrefix))
	} else {
		t.stopped = fmt.Sprintf("%s changed while it was read (its end is zeros)", strings.TrimPrefix(h.Name, TarPrefix))
	}
}

func readlinkat(dfd int, name string) (string, error) {
	buf := make([]byte, MaxWSPathBytes+1)
	n, err := unix.Readlinkat(dfd, name, buf)
	if err != nil {
		return "", err
	}
	if n > MaxWSPathBytes {
		return "", unix.ENAMETOOLONG
	}
	return string(buf[:n]), nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// ctxReader fails once ctx ends, so a long copy honours the time limit.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Unpacking an archive into the workspace (a new session's uploaded
// .tar.gz, .tar or .zip). The archive is kept on the guest's own disk while
// it is read twice: first every entry is checked (names confined to the
// workspace, counts and sizes within bounds) before anything is written,
// then it is unpacked. Nothing is followed through a symlink (the archive's
// own or one already there); a symlink's target must stay inside the
// workspace; hard links are unpacked as copies of their (earlier, confined)
// target; devices and FIFOs are left out. A single top-level directory
// holding every entry is unpacked as the workspace itself. The bytes
// unpacked are counted as they are written, whatever the archive claims.

func (s *Server) handleWSUnpack(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	lim := unpackLimits{maxBytes: DefaultUnpackMaxBytes, maxEntries: DefaultUnpackMaxEntries, maxArchive: MaxUnpackArchiveBytes}
	for _, p := range []struct {
		name string
		v    *int64
	}{{"maxBytes", &lim.maxBytes}, {"maxArchive", &lim.maxArchive}} {
		if v := q.Get(p.name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				writeError(w, invalidf("%s must be a positive number", p.name))
				return
			}
			*p.v = min(n, *p.v)
		}
	}
	if v := q.Get("maxEntries"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			writeError(w, invalidf("maxEntries must be a positive number"))
			return
		}
		lim.maxEntries = min(n, lim.maxEntries)
	}
	ctx, cancel := context.WithTimeout(r.Context(), UnpackTimeLimit)
	defer cancel()
	res, err := s.unpack(ctx, r.Body, lim)
	if err != nil {
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = invalidf("unpacking took longer than %s", UnpackTimeLimit)
		}
		writeError(w, err)
		return
	}
	s.syncDisk()
	writeJSON(w, http.StatusOK, res)
}

type unpackLimits struct {
	maxBytes, maxArchive int64
	maxEntries           int
}

func tooLarge(format string, args ...any) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: fmt.Sprintf(format, args...)}
}

func (s *Server) unpack(ctx context.Context, body io.Reader, lim unpackLimits) (WSUnpackResult, error) {
	// Kept beside the workspace (the guest's disk; for the process
	// sandbox, its own directory), never inside it.
	spool, err := os.CreateTemp(filepath.Dir(s.ws), ".execlaw-archive-*")
	if err != nil {
		if spool, err = os.CreateTemp("", ".execlaw-archive-*"); err != nil {
			return WSUnpackResult{}, err
		}
	}
	defer func() {
		spool.Close()
		os.Remove(spool.Name())
	}()
	n, err := io.Copy(spool, io.LimitReader(ctxReader{ctx, body}, lim.maxArchive+1))
	if err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return WSUnpackResult{}, tooLarge("the sandbox's disk is full")
		}
		return WSUnpackResult{}, invalidf("the archive was cut short: %v", err)
	}
	if n > lim.maxArchive {
		return WSUnpackResult{}, tooLarge("the archive is larger than %d bytes", lim.maxArchive)
	}
	head := make([]byte, 512)
	m, _ := spool.ReadAt(head, 0)
	head = head[:m]
	var a archiveReader
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		a = &tarArchive{f: spool, gz: true}
	case bytes.HasPrefix(head, []byte("PK\x03\x04")), bytes.HasPrefix(head, []byte("PK\x05\x06")):
		zr, err := zip.NewReader(spool, n)
		if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
			return WSUnpackResult{}, invalidf("not a readable zip archive: %v", err)
		}
		a = &zipArchive{r: zr}
	case len(head) >= 262 && string(head[257:262]) == "ustar":
		a = &tarArchive{f: spool}
	default:
		return WSUnpackResult{}, invalidf("not a .tar.gz, .tar or .zip archive")
	}
	u := &unpacker{ctx: ctx, lim: lim, res: WSUnpackResult{Format: a.format()}}
	if err := u.check(a); err != nil {
		return WSUnpackResult{}, err
	}
	root, err := s.openWS()
	if err != nil {
		return WSUnpackResult{}, err
	}
	defer root.Close()
	u.root = root
	if err := u.extract(a); err != nil {
		return WSUnpackResult{}, err
	}
	return u.res, nil
}

// archEntry is one entry of an archive, as both formats give it.
type archEntry struct {
	name  string
	kind  byte // 'f' file, 'd' directory, 'l' symlink, 'h' hard link, 's' skipped
	link  string
	mode  int64
	size  int64 // as the archive claims it
	mtime time.Time
	open  func() (io.Reader, error)
}

type archiveReader interface {
	format() string
	// each calls fn for every entry, in order, until fn fails.
	each(fn func(e *archEntry) error) error
}

type tarArchive struct {
	f  *os.File
	gz bool
}

func (t *tarArchive) format() string {
	if t.gz {
		return "tar.gz"
	}
	return "tar"
}

func (t *tarArchive) each(fn func(*archEntry) error) error {
	var r io.Reader = bufio.NewReaderSize(io.NewSectionReader(t.f, 0, 1<<62), 64<<10)
	if t.gz {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return invalidf("not a readable .tar.gz archive: %v", err)
		}
		defer zr.Close()
		r = zr
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return invalidf("the archive is damaged: %v", err)
		}
		e := &archEntry{name: h.Name, link: h.Linkname, mode: h.Mode, size: h.Size, mtime: h.ModTime,
			open: func() (io.Reader, error) { return tr, nil }}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
			e.kind = 'f'
		case tar.TypeDir:
			e.kind = 'd'
		case tar.TypeSymlink:
			e.kind = 'l'
		case tar.TypeLink:
			e.kind = 'h'
		case tar.TypeXGlobalHeader, tar.TypeXHeader:
			continue // metadata, not entries
		default:
			e.kind = 's'
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

type zipArchive struct{ r *zip.Reader }

func (z *zipArchive) format() string { return "zip" }

func (z *zipArchive) each(fn func(*archEntry) error) error {
	for _, f := range z.r.File {
		mode := f.Mode()
		e := &archEntry{name: f.Name, mode: int64(mode.Perm()), size: int64(min(f.UncompressedSize64, 1<<62)), mtime: f.Modified,
			open: func() (io.Reader, error) { return f.Open() }}
		switch {
		case strings.HasPrefix(f.Name, "__MACOSX/"):
			e.kind = 's' // resource forks macOS adds: not the user's files
		case mode.IsDir() || strings.HasSuffix(f.Name, "/"):
			e.kind = 'd'
		case mode&os.ModeSymlink != 0:
			e.kind = 'l'
		case mode.IsRegular():
			e.kind = 'f'
		default:
			e.kind = 's'
		}
		if e.kind == 'l' {
			rc, err := f.Open()
			if err != nil {
				return invalidf("zip entry %q: %v", f.Name, err)
			}
			b, err := io.ReadAll(io.LimitReader(rc, MaxWSPathBytes+1))
			rc.Close()
			if err != nil {
				return invalidf("zip entry %q: %v", f.Name, err)
			}
			if len(b) > MaxWSPathBytes {
				return invalidf("zip entry %q: a symbolic link's target longer than %d bytes", f.Name, MaxWSPathBytes)
			}
			e.link = string(b)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

type unpacker struct {
	ctx     context.Context
	lim     unpackLimits
	root    *wsRoot
	res     WSUnpackResult
	strip   string // the top-level directory every entry is in, with its "/"
	written int64
}

// entryName cleans an entry's name into a path relative to the workspace,
// refusing what leads out of it; "" is the archive's root.
func entryName(name string) (string, error) {
	if name == "" || strings.IndexByte(name, 0) >= 0 {
		return "", invalidf("an entry has an empty name or one with a NUL byte")
	}
	if strings.HasPrefix(name, "/") {
		return "", invalidf("entry %q: absolute paths are not allowed", name)
	}
	for part := range strings.SplitSeq(name, "/") {
		if part == ".." {
			return "", invalidf("entry %q: \"..\" is not allowed", name)
		}
		if len(part) > MaxWSNameBytes {
			return "", invalidf("entry %q: a name longer than %d bytes", name, MaxWSNameBytes)
		}
	}
	if len(name) > MaxWSPathBytes {
		return "", invalidf("entry %q: a path longer than %d bytes", name, MaxWSPathBytes)
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	return c, nil
}

// linkInside checks that a symlink at rel pointing to target stays inside
// the workspace (relative, and not climbing out).
func linkInside(rel, target string) error {
	if target == "" || strings.IndexByte(target, 0) >= 0 || len(target) > MaxWSPathBytes {
		return invalidf("entry %q: an invalid symbolic link target", rel)
	}
	if strings.HasPrefix(target, "/") {
		return invalidf("entry %q: a symbolic link to an absolute path (%q) would lead outside the workspace", rel, target)
	}
	if c := path.Clean(path.Join(path.Dir(rel), target)); c == ".." || strings.HasPrefix(c, "../") {
		return invalidf("entry %q: a symbolic link to %q would lead outside the workspace", rel, target)
	}
	return nil
}

// check reads every entry without writing anything: names, links, counts
// and the sizes the archive claims, and the top-level directory to strip.
func (u *unpacker) check(a archiveReader) error {
	var entries int
	var claimed int64
	top, common, deeper := "", true, false
	err := a.each(func(e *archEntry) error {
		if err := u.ctx.Err(); err != nil {
			return err
		}
		entries++
		if entries > u.lim.maxEntries {
			return tooLarge("the archive has more than %d entries", u.lim.maxEntries)
		}
		if e.kind == 's' {
			return nil
		}
		rel, err := entryName(e.name)
		if err != nil || rel == "" {
			return err
		}
		switch e.kind {
		case 'f':
			if claimed += max(e.size, 0); claimed > u.lim.maxBytes {
				return tooLarge("the archive unpacks to more than %d bytes", u.lim.maxBytes)
			}
		case 'l':
			if err := linkInside(rel, e.link); err != nil {
				return err
			}
		case 'h':
			if _, err := entryName(e.link); err != nil {
				return err
			}
		}
		first, rest, nested := strings.Cut(rel, "/")
		switch {
		case top == "":
			top = first
		case first != top:
			common = false
		}
		if nested && rest != "" {
			deeper = true
		} else if e.kind != 'd' {
			common = false // a file at the top
		}
		return nil
	})
	if err != nil {
		return err
	}
	if common && deeper && top != "" {
		u.strip = top + "/"
		u.res.Stripped = top
	}
	return nil
}

// place is an entry's path once the top-level directory is stripped; "" for
// that directory itself.
func (u *unpacker) place(name string) string {
	rel, _ := entryName(name) // checked already
	if u.strip == "" {
		return rel
	}
	return strings.TrimPrefix(strings.TrimPrefix(rel+"/", u.strip), "/")
}

func (u *unpacker) extract(a archiveReader) error {
	return a.each(func(e *archEntry) error {
		if err := u.ctx.Err(); err != nil {
			return err
		}
		if e.kind == 's' {
			u.res.Skipped++
			return nil
		}
		rel := strings.TrimSuffix(u.place(e.name), "/")
		if rel == "" {
			return nil
		}
		switch e.kind {
		case 'd':
			fd, err := u.root.mkdirAll(rel, true)
			if err != nil {
				return err
			}
			unix.Close(fd)
			u.res.Dirs++
			return nil
		case 'l':
			return u.symlink(rel, e.link)
		case 'h':
			target := strings.TrimSuffix(u.place(e.link), "/")
			f, _, err := u.root.openRegularNoSymlinks(target)
			if err != nil {
				return invalidf("entry %q: a hard link to %q, which is not a file unpacked before it", e.name, e.link)
			}
			defer f.Close()
			return u.file(rel, f, e)
		}
		r, err := e.open()
		if err != nil {
			return invalidf("entry %q: %v", e.name, err)
		}
		if c, ok := r.(io.Closer); ok {
			defer c.Close()
		}
		return u.file(rel, r, e)
	})
}

func (u *unpacker) file(rel string, content io.Reader, e *archEntry) error {
	parent, err := u.root.mkdirAll(path.Dir(rel), true)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	perm := uint32(0o644)
	if e.mode&0o111 != 0 {
		perm = 0o755
	}
	left := u.lim.maxBytes - u.written
	n, err := replaceFile(parent, rel, ctxReader{u.ctx, content}, left, perm, e.mtime)
	if err != nil {
		if ge, ok := errors.AsType[*Error](err); ok && ge.Code == CodeTooLarge && !strings.Contains(ge.Message, "disk") {
			return tooLarge("the archive unpacks to more than %d bytes", u.lim.maxBytes)
		}
		return err
	}
	u.written += n
	u.res.Files++
	u.res.Bytes = u.written
	return nil
}

func (u *unpacker) symlink(rel, target string) error {
	if err := linkInside(rel, target); err != nil {
		return err
	}
	parent, err := u.root.mkdirAll(path.Dir(rel), true)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	name := path.Base(rel)
	var st unix.Stat_t
	if unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		if fileType(st.Mode) == WSDir {
			return invalidf("entry %q: a symbolic link in place of a directory", rel)
		}
		if err := unix.Unlinkat(parent, name, 0); err != nil {
			return &os.PathError{Op: "remove", Path: rel, Err: err}
		}
	}
	if err := unix.Symlinkat(target, parent, name); err != nil {
		return &os.PathError{Op: "symlink", Path: rel, Err: err}
	}
	u.res.Symlinks++
	return nil
}

// openRegularNoSymlinks is openRegular through no symlink at all.
func (root *wsRoot) openRegularNoSymlinks(rel string) (*os.File, int64, error) {
	fd, err := root.open(rel, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0, true)
	if err != nil {
		return nil, 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || fileType(st.Mode) != WSFile {
		unix.Close(fd)
		return nil, 0, invalidf("%s is not a regular file", rel)
	}
	return os.NewFile(uintptr(fd), rel), st.Size, nil
}
