package guest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// registerWorkspace adds the workspace file API (wsproto.go) to mux.
func (s *Server) registerWorkspace(mux *http.ServeMux) {
	mux.HandleFunc("POST "+PathWSList, s.handleWSList)
	mux.HandleFunc("POST "+PathWSRead, s.handleWSRead)
	mux.HandleFunc("POST "+PathWSWrite, s.handleWSWrite)
	mux.HandleFunc("POST "+PathWSTar, s.handleWSTar)
	mux.HandleFunc("POST "+PathWSUnpack, s.handleWSUnpack)
}

var errOutside = &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: "the path leads outside the workspace"}

func invalidf(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: fmt.Sprintf(format, args...)}
}

// wsRel turns a request path into a clean path relative to the workspace
// ("." for the workspace itself): relative paths as given, absolute ones
// only inside the workspace. ".." that climbs out is refused here; symlinks
// are the business of wsRoot.open.
func (s *Server) wsRel(p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", invalidf("the path contains a NUL byte")
	}
	if len(p) > MaxWSPathBytes {
		return "", invalidf("the path is longer than %d bytes", MaxWSPathBytes)
	}
	if p == "" {
		return ".", nil
	}
	if strings.HasPrefix(p, "/") {
		c := path.Clean(p)
		switch {
		case c == s.ws:
			return ".", nil
		case s.ws == "/":
			p = c[1:]
		case strings.HasPrefix(c, s.ws+"/"):
			p = c[len(s.ws)+1:]
		default:
			return "", errOutside
		}
	}
	c := path.Clean(p)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", errOutside
	}
	for part := range strings.SplitSeq(c, "/") {
		if len(part) > MaxWSNameBytes {
			return "", invalidf("a name in the path is longer than %d bytes", MaxWSNameBytes)
		}
	}
	return c, nil
}

// relOut is a relative path as answers give it: "" for the workspace.
func relOut(rel string) string {
	if rel == "." {
		return ""
	}
	return rel
}

// wsRoot is the workspace directory, opened for one request. Everything
// below is reached from its descriptor.
type wsRoot struct{ fd int }

func (s *Server) openWS() (*wsRoot, error) {
	fd, err := unix.Open(s.ws, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "open the workspace: " + err.Error()}
	}
	return &wsRoot{fd: fd}, nil
}

func (r *wsRoot) Close() { unix.Close(r.fd) }

// noOpenat2 is set on kernels without openat2 (before 5.6).
var noOpenat2 atomic.Bool

// open opens rel beneath the workspace. Symlinks are followed only as long as
// they stay inside it (RESOLVE_BENEATH: an absolute link, or one whose ".."
// climbs out, fails), never through /proc's magic links, and never onto
// another mount (a bind mount the agent made is no way out either). With
// noSymlinks no symlink is followed at all: what unpacking an archive uses,
// so that an archive's own links cannot redirect its later entries.
func (r *wsRoot) open(rel string, flags int, mode uint32, noSymlinks bool) (int, error) {
	resolve := uint64(unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV)
	if noSymlinks {
		resolve |= unix.RESOLVE_NO_SYMLINKS
	}
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: resolve}
	for try := 0; !noOpenat2.Load(); try++ {
		fd, err := unix.Openat2(r.fd, rel, &how)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.ENOSYS):
			noOpenat2.Store(true)
		case (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) && try < 16:
			// A concurrent rename or mount: the kernel asks to try again.
		default:
			return -1, wsPathError(rel, err, noSymlinks)
		}
	}
	return r.openWalk(rel, flags, mode)
}

// openWalk is open for kernels without openat2: one component at a time,
// following no symlink at all (stricter than RESOLVE_BENEATH, never looser).
func (r *wsRoot) openWalk(rel string, flags int, mode uint32) (int, error) {
	cur, err := unix.Dup(r.fd)
	if err != nil {
		return -1, err
	}
	if rel == "." {
		if flags&unix.O_PATH != 0 {
			return cur, nil
		}
		defer unix.Close(cur)
		fd, err := unix.Openat(cur, ".", flags|unix.O_CLOEXEC, mode)
		return fd, wsPathError(rel, err, true)
	}
	parts := strings.Split(rel, "/")
	for i, part := range parts {
		if i == len(parts)-1 {
			fd, err := unix.Openat(cur, part, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
			unix.Close(cur)
			if err != nil {
				return -1, wsPathError(rel, err, true)
			}
			return fd, nil
		}
		next, err := unix.Openat(cur, part, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(cur)
		if err != nil {
			return -1, wsPathError(rel, err, true)
		}
		cur = next
	}
	return -1, errOutside // unreachable: parts is never empty
}

// wsPathError names the path (relative: the guest's own layout stays out of
// messages) and explains the errors only confinement causes.
func wsPathError(rel string, err error, noSymlinks bool) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, unix.EXDEV):
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: rel + ": the path leads outside the workspace (through a symbolic link, or onto another mount)"}
	case errors.Is(err, unix.ELOOP) && noSymlinks:
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: rel + ": the path goes through a symbolic link"}
	case errors.Is(err, unix.ENOTDIR):
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: rel + ": a part of the path is not a directory"}
	}
	return &os.PathError{Op: "open", Path: rel, Err: err}
}

// mkdirAll makes rel and its parents beneath the workspace and opens it
// (O_PATH).
func (r *wsRoot) mkdirAll(rel string, noSymlinks bool) (int, error) {
	fd, err := r.open(rel, unix.O_PATH|unix.O_DIRECTORY, 0, noSymlinks)
	if err == nil || rel == "." || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	parent, err := r.mkdirAll(path.Dir(rel), noSymlinks)
	if err != nil {
		return -1, err
	}
	err = unix.Mkdirat(parent, path.Base(rel), 0o755)
	unix.Close(parent)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, &os.PathError{Op: "mkdir", Path: rel, Err: err}
	}
	return r.open(rel, unix.O_PATH|unix.O_DIRECTORY, 0, noSymlinks)
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return WSFile
	case unix.S_IFDIR:
		return WSDir
	case unix.S_IFLNK:
		return WSSymlink
	}
	return WSOther
}

// setMTime sets parent/name's times (not a symlink's target's) to mtime,
// when it is set.
func setMTime(parent int, name string, mtime time.Time) {
	if mtime.IsZero() {
		return
	}
	ts := unix.NsecToTimespec(mtime.UnixNano())
	_ = unix.UtimesNanoAt(parent, name, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

func statTime(ts unix.Timespec) time.Time { return time.Unix(ts.Sec, ts.Nsec).UTC() }

func (s *Server) handleWSList(w http.ResponseWriter, r *http.Request) {
	var req WSPathRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	resp, err := s.wsList(req.Path)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) wsList(p string) (WSListResponse, error) {
	rel, err := s.wsRel(p)
	if err != nil {
		return WSListResponse{}, err
	}
	root, err := s.openWS()
	if err != nil {
		return WSListResponse{}, err
	}
	defer root.Close()
	fd, err := root.open(rel, unix.O_RDONLY|unix.O_DIRECTORY, 0, false)
	if err != nil {
		return WSListResponse{}, err
	}
	dir := os.NewFile(uintptr(fd), rel)
	defer dir.Close()
	resp := WSListResponse{Path: relOut(rel), Entries: []WSEntry{}}
	for !resp.Truncated {
		names, rerr := dir.Readdirnames(256)
		for _, name := range names {
			if len(resp.Entries) == MaxWSListEntries {
				resp.Truncated = true
				break
			}
			var st unix.Stat_t
			if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
				continue // removed while we looked
			}
			e := WSEntry{Name: name, Type: fileType(st.Mode), MTime: statTime(st.Mtim)}
			if e.Type != WSDir {
				e.Size = st.Size
			}
			resp.Entries = append(resp.Entries, e)
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				return WSListResponse{}, rerr
			}
			break
		}
	}
	sort.Slice(resp.Entries, func(i, j int) bool { return resp.Entries[i].Name < resp.Entries[j].Name })
	return resp, nil
}

// openRegular opens a regular file beneath the workspace for reading; a
// FIFO is never waited on (O_NONBLOCK), and anything but a regular file is
// refused.
func (root *wsRoot) openRegular(rel string) (*os.File, int64, error) {
	fd, err := root.open(rel, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0, false)
	if err != nil {
		return nil, 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, 0, err
	}
	switch fileType(st.Mode) {
	case WSFile:
	case WSDir:
		unix.Close(fd)
		return nil, 0, &Error{Status: http.StatusBadRequest, Code: CodeIsDir, Message: relOut(rel) + " is a directory"}
	default:
		unix.Close(fd)
		return nil, 0, invalidf("%s is not a regular file", rel)
	}
	return os.NewFile(uintptr(fd), rel), st.Size, nil
}

func (s *Server) handleWSRead(w http.ResponseWriter, r *http.Request) {
	var req WSPathRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	rel, err := s.wsRel(req.Path)
	if err != nil {
		writeError(w, err)
		return
	}
	root, err := s.openWS()
	if err != nil {
		writeError(w, err)
		return
	}
	f, size, err := root.openRegular(rel)
	root.Close()
	if err != nil {
		writeError(w, err)
		return
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", ContentOctets)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	h.Set(HeaderWSSize, strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	// Exactly size bytes: a file that shrank meanwhile ends the answer
	// short of its length, which the host sees as a failure.
	_, _ = io.CopyN(w, f, size)
}

func (s *Server) handleWSWrite(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	rel, err := s.wsRel(q.Get("path"))
	if err != nil {
		writeError(w, err)
		return
	}
	if rel == "." {
		writeError(w, invalidf("the path names the workspace itself, not a file in it"))
		return
	}
	limit := MaxWSWriteBytes
	if v := q.Get("limit"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, invalidf("limit must be a non-negative number"))
			return
		}
		limit = min(n, MaxWSWriteBytes)
	}
	if r.ContentLength > limit {
		writeError(w, &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: fmt.Sprintf("the file is larger than %d bytes", limit)})
		return
	}
	root, err := s.openWS()
	if err != nil {
		writeError(w, err)
		return
	}
	defer root.Close()
	parent, err := root.mkdirAll(path.Dir(rel), false)
	if err != nil {
		writeError(w, err)
		return
	}
	defer unix.Close(parent)
	n, err := replaceFile(parent, rel, r.Body, limit, 0, time.Time{})
	if err != nil {
		writeError(w, err)
		return
	}
	s.syncDisk()
	writeJSON(w, http.StatusOK, WSWriteResponse{Path: rel, Size: n})
}

// errTooLarge is content past the caller's limit.
type errTooLarge struct{ limit int64 }

func (e errTooLarge) Error() string { return fmt.Sprintf("larger than %d bytes", e.limit) }

// replaceFile writes content (at most limit bytes) to a new file beside
// parent/base(rel) and renames it over the old one: readers see the old or
// the new file, never half, and a failed or refused write leaves the old
// file as it was. An existing regular file keeps its permissions; a symlink
// in its place is replaced, not written through. perm 0 means 0644 for a new
// file; mtime, when set, is the new file's.
func replaceFile(parent int, rel string, content io.Reader, limit int64, perm uint32, mtime time.Time) (int64, error) {
	name := path.Base(rel)
	var st unix.Stat_t
	switch err := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil:
		switch fileType(st.Mode) {
		case WSDir:
			return 0, &Error{Status: http.StatusBadRequest, Code: CodeIsDir, Message: rel + " is a directory"}
		case WSFile:
			if perm == 0 {
				perm = st.Mode & 0o777
			}
		case WSOther:
			return 0, invalidf("%s exists and is not a regular file", rel)
		}
	case !errors.Is(err, unix.ENOENT):
		return 0, &os.PathError{Op: "stat", Path: rel, Err: err}
	}
	if perm == 0 {
		perm = 0o644
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := ".execlaw-upload-" + hex.EncodeToString(rnd[:])
	// A new name in a directory we hold: O_EXCL never follows anything.
	fd, err := unix.Openat(parent, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return 0, &os.PathError{Op: "create", Path: rel, Err: err}
	}
	f := os.NewFile(uintptr(fd), tmp)
	done := false
	defer func() {
		if !done {
			f.Close()
			unix.Unlinkat(parent, tmp, 0)
		}
	}()
	n, err := io.Copy(f, io.LimitReader(content, limit+1))
	if err != nil {
		var ge *Error
		if errors.As(err, &ge) {
			return 0, ge
		}
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG) {
			return 0, &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: rel + ": the sandbox's disk is full"}
		}
		return 0, invalidf("%s: the content was cut short: %v", rel, err)
	}
	if n > limit {
		return 0, &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: fmt.Sprintf("%s: larger than %d bytes", rel, limit)}
	}
	if err := f.Chmod(os.FileMode(perm & 0o777)); err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	if err := unix.Renameat(parent, tmp, parent, name); err != nil {
		return 0, &os.PathError{Op: "rename", Path: rel, Err: err}
	}
	done = true
	setMTime(parent, name, mtime)
	return n, nil
}
