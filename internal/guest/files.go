package guest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
)

func (s *Server) handleRead(w http.ResponseWriter, r *http.Request) {
	var req ReadRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	resp, err := s.read(req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) read(req ReadRequest) (ReadResponse, error) {
	if req.Offset < 0 || req.Limit < 0 {
		return ReadResponse{}, &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: "offset and limit must not be negative"}
	}
	limit := req.Limit
	if limit == 0 || limit > MaxReadBytes {
		limit = MaxReadBytes
	}
	p, err := s.resolve(req.Path)
	if err != nil {
		return ReadResponse{}, err
	}
	// Stat before opening: opening a FIFO would block until a writer appears.
	fi, err := os.Stat(p)
	if err != nil {
		return ReadResponse{}, err
	}
	if fi.IsDir() {
		return ReadResponse{}, &Error{Status: http.StatusBadRequest, Code: CodeIsDir, Message: p + " is a directory"}
	}
	if !fi.Mode().IsRegular() {
		return ReadResponse{}, &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: p + " is not a regular file"}
	}
	f, err := os.Open(p)
	if err != nil {
		return ReadResponse{}, err
	}
	defer f.Close()
	if req.Offset > 0 {
		if _, err := f.Seek(req.Offset, io.SeekStart); err != nil {
			return ReadResponse{}, err
		}
	}
	// One byte past the limit tells whether the file goes on; Size alone is
	// not enough for files like those in /proc that report size 0.
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return ReadResponse{}, err
	}
	eof := int64(len(data)) <= limit
	if !eof {
		data = data[:limit]
	}
	return ReadResponse{Data: data, Size: fi.Size(), EOF: eof}, nil
}

func (s *Server) handleWrite(w http.ResponseWriter, r *http.Request) {
	var req WriteRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := s.write(req); err != nil {
		writeError(w, err)
		return
	}
	s.syncDisk()
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

func (s *Server) write(req WriteRequest) error {
	if req.Mode&^0o7777 != 0 {
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: fmt.Sprintf("mode %#o has bits outside 07777", req.Mode)}
	}
	p, err := s.resolve(req.Path)
	if err != nil {
		return err
	}
	// Write through a symlink rather than replacing the link itself.
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if t, err := filepath.EvalSymlinks(p); err == nil {
			p = t
		}
	}
	existing, statErr := os.Stat(p)
	if statErr == nil {
		if existing.IsDir() {
			return &Error{Status: http.StatusBadRequest, Code: CodeIsDir, Message: p + " is a directory"}
		}
		if !existing.Mode().IsRegular() {
			return &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: p + " is not a regular file"}
		}
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}

	perm := fileMode(req.Mode)
	if req.Mode == 0 {
		perm = 0o644
		// Rewriting an existing file keeps its mode, so editing a script does
		// not silently drop its executable bit.
		if statErr == nil {
			perm = existing.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		}
	}

	if req.Append {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, perm)
		if err != nil {
			return err
		}
		if _, err := f.Write(req.Data); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}

	// Replace atomically: readers see the old or the new content, never half.
	tmp, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".tmp-*")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(req.Data); err != nil {
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return err
	}
	ok = true
	return nil
}

// fileMode converts Unix permission bits to an fs.FileMode, whose special
// bits are not at their Unix positions.
func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

func (s *Server) handleStat(w http.ResponseWriter, r *http.Request) {
	var req PathRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	p, err := s.resolve(req.Path)
	if err != nil {
		writeError(w, err)
		return
	}
	fi, err := os.Stat(p)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, fileInfo(p, fi))
}

func fileInfo(p string, fi fs.FileInfo) FileInfo {
	return FileInfo{
		Name:    fi.Name(),
		Path:    p,
		Size:    fi.Size(),
		Mode:    fi.Mode().String(),
		IsDir:   fi.IsDir(),
		ModTime: fi.ModTime().UTC(),
	}
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	var req ListRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Limit < 0 {
		writeError(w, &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: "limit must not be negative"})
		return
	}
	limit := req.Limit
	if limit == 0 || limit > MaxListEntries {
		limit = MaxListEntries
	}
	root := s.ws
	if req.Path != "" {
		var err error
		if root, err = s.resolve(req.Path); err != nil {
			writeError(w, err)
			return
		}
	}
	fi, err := os.Stat(root)
	if err != nil {
		writeError(w, err)
		return
	}
	if !fi.IsDir() {
		writeError(w, &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: root + " is not a directory"})
		return
	}
	resp, err := list(r, root, req.Recursive, limit)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// list walks depth-first reading directories in batches, so neither a huge
// directory nor a huge tree costs more than limit entries of memory. Which
// entries survive truncation is unspecified; the answer is sorted by path.
// Unreadable subdirectories are skipped rather than failing the listing.
func list(r *http.Request, root string, recursive bool, limit int) (ListResponse, error) {
	resp := ListResponse{Entries: []FileInfo{}}
	stack := []string{root}
	for len(stack) > 0 && !resp.Truncated {
		if err := r.Context().Err(); err != nil {
			return ListResponse{}, err
		}
		dir := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		f, err := os.Open(dir)
		if err != nil {
			if dir == root {
				return ListResponse{}, err
			}
			continue
		}
		for !resp.Truncated {
			ents, rerr := f.ReadDir(256)
			for _, e := range ents {
				if len(resp.Entries) == limit {
					resp.Truncated = true
					break
				}
				info, err := e.Info()
				if err != nil {
					continue // removed while we looked
				}
				p := filepath.Join(dir, e.Name())
				resp.Entries = append(resp.Entries, fileInfo(p, info))
				if recursive && e.IsDir() { // DirEntry.IsDir is false for symlinks: links are not followed
					stack = append(stack, p)
				}
			}
			if rerr != nil {
				if !errors.Is(rerr, io.EOF) && dir == root {
					f.Close()
					return ListResponse{}, rerr
				}
				break
			}
		}
		f.Close()
	}
	sort.Slice(resp.Entries, func(i, j int) bool { return resp.Entries[i].Path < resp.Entries[j].Path })
	return resp, nil
}
