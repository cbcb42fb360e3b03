package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"sync"
	"time"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/workspace"
)

// The workspace in the user's hands: list, download and upload files of a
// running session's workspace, download all of it as a tarball, see what
// changed since the session began, and hand a new session the archive it
// starts from. Everything goes through the guest, which confines it to the
// workspace with its own view of the file system; the host checks paths
// before they go and listings when they come back, and streams contents
// both ways without holding them.
//
// What comes out of a workspace is the agent's: a download is always
// application/octet-stream, an attachment, under a CSP that runs nothing,
// so it is never rendered as a page of this origin.

// FilesOptions bound the workspace routes; zero fields take the defaults.
type FilesOptions struct {
	// MaxUploadBytes bounds one uploaded file or archive (default 100 MiB,
	// --max-upload-mib).
	MaxUploadBytes int64
	// MaxTransfers is how many uploads and downloads one user may have
	// going at once (default 4).
	MaxTransfers int
	// UploadTimeout bounds reading one upload (default 15 minutes; the
	// server's read timeout would cut it at 30 s).
	UploadTimeout time.Duration
}

// Defaults of FilesOptions, and the rate of listings and changes.
const (
	DefaultMaxUploadMiB  = 100
	defaultMaxTransfers  = 4
	defaultUploadTimeout = 15 * time.Minute
	// One user may list directories and ask for changes queryBurst times
	// in a row, then one every queryRefill.
	queryBurst  = 60
	queryRefill = 250 * time.Millisecond
	// downloadTimeout bounds a file or tarball download.
	downloadTimeout = guest.TarTimeLimit + time.Minute
)

func (o FilesOptions) withDefaults() FilesOptions {
	if o.MaxUploadBytes <= 0 {
		o.MaxUploadBytes = DefaultMaxUploadMiB << 20
	}
	if o.MaxTransfers <= 0 {
		o.MaxTransfers = defaultMaxTransfers
	}
	if o.UploadTimeout <= 0 {
		o.UploadTimeout = defaultUploadTimeout
	}
	return o
}

// filesState is the per-user bookkeeping of the workspace routes.
type filesState struct {
	opts    FilesOptions
	queries *failureLimiter[string]

	mu        sync.Mutex
	transfers map[string]int
}

func newFilesState(o FilesOptions) *filesState {
	return &filesState{opts: o.withDefaults(), queries: newFailureLimiter[string](queryBurst, queryRefill, maxLimitedClients),
		transfers: map[string]int{}}
}

// query spends one of the user's listings (429 when none is left).
func (f *filesState) query(user string) error {
	if retry, blocked := f.queries.blocked(user); blocked {
		return errorf(http.StatusTooManyRequests, "too many listings; try again in %s", retry.Round(100*time.Millisecond))
	}
	f.queries.fail(user)
	return nil
}

// transfer takes one of the user's transfer slots (429 when all are taken);
// call the release it returns when done.
func (f *filesState) transfer(user string) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.transfers[user] >= f.opts.MaxTransfers {
		return nil, errorf(http.StatusTooManyRequests, "you have %d uploads and downloads going already; wait for one to finish", f.opts.MaxTransfers)
	}
	f.transfers[user]++
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.transfers[user]--; f.transfers[user] <= 0 {
			delete(f.transfers, user)
		}
	}, nil
}

// sameOriginGet refuses a GET that another site's page (or another origin
// of this site: a live preview) made: such a request could start a download
// or time one, and has no business here. Requests without Sec-Fetch-Site
// (curl, scripts) and the user's own navigation ("none") pass.
func sameOriginGet(r *http.Request) error {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
		return nil
	}
	return errorf(http.StatusForbidden, "cross-origin request refused: the workspace is read from this server's own pages")
}

// workspaceAt looks up the session (404), then checks the path (400), then
// that its workspace can be reached (409): the order the contract gives.
func (s *Server) workspaceAt(r *http.Request, needFile bool) (session.Workspace, string, error) {
	id, err := sessionID(r)
	if err != nil {
		return session.Workspace{}, "", err
	}
	if err := sameOriginGet(r); (r.Method == http.MethodGet || r.Method == http.MethodHead) && err != nil {
		return session.Workspace{}, "", err
	}
	ws, wsErr := s.sessions.Workspace(r.Context(), userFrom(r.Context()), id)
	if wsErr != nil && !errors.Is(wsErr, session.ErrNoWorkspace) {
		return session.Workspace{}, "", wsErr
	}
	rel, err := workspace.Rel(ws.Root, r.URL.Query().Get("path"))
	if err != nil {
		return session.Workspace{}, "", errorf(http.StatusBadRequest, "%v", err)
	}
	if needFile && rel == "" {
		return session.Workspace{}, "", errorf(http.StatusBadRequest, "path must name a file in the workspace")
	}
	if wsErr != nil {
		return session.Workspace{}, "", errorf(http.StatusConflict, "%v", wsErr)
	}
	return ws, rel, nil
}

// transferSlot takes one of the user's concurrent transfers for a request
// on a session; release gives it back. A malformed id is 404 before it
// counts against anything.
func (s *Server) transferSlot(r *http.Request) (release func(), err error) {
	if _, err := sessionID(r); err != nil {
		return nil, err
	}
	return s.files.transfer(userFrom(r.Context()).ID)
}

// queryTurn is transferSlot for listings and changes: the user's rate of
// them, not a slot.
func (s *Server) queryTurn(r *http.Request) error {
	if _, err := sessionID(r); err != nil {
		return err
	}
	return s.files.query(userFrom(r.Context()).ID)
}

// guestFailure turns what the guest answered into the client's status.
func guestFailure(err error) error {
	if ge, ok := errors.AsType[*guest.Error](err); ok {
		switch ge.Code {
		case guest.CodeNotFound:
			return errorf(http.StatusNotFound, "%s", ge.Message)
		case guest.CodeInvalid, guest.CodeIsDir:
			return errorf(http.StatusBadRequest, "%s", ge.Message)
		case guest.CodeTooLarge:
			return errorf(http.StatusRequestEntityTooLarge, "%s", ge.Message)
		case guest.CodePermission:
			return errorf(http.StatusForbidden, "%s", ge.Message)
		case guest.CodeTooOld:
			return errorf(http.StatusNotImplemented, "%s", ge.Message)
		}
		return errorf(http.StatusBadGateway, "the sandbox failed: %s", ge.Message)
	}
	var ie *workspace.InvalidError
	if errors.As(err, &ie) {
		return errorf(http.StatusBadRequest, "%s", ie.Error())
	}
	return errorf(http.StatusBadGateway, "the sandbox did not answer: %v", err)
}

// GET /api/sessions/{id}/files?path=DIR → {"path", "entries", "truncated"?}
func (s *Server) handleFiles(w http.ResponseWriter, r *http.Request) error {
	if err := s.queryTurn(r); err != nil {
		return err
	}
	ws, rel, err := s.workspaceAt(r, false)
	if err != nil {
		return err
	}
	l, err := ws.Guest.WSList(r.Context(), rel)
	if err != nil {
		return guestFailure(err)
	}
	entries, dropped := workspace.Entries(l.Entries)
	if dropped > 0 {
		s.log.Warn("listing: the guest gave names that cannot be names", "session", r.PathValue("id"), "dropped", dropped)
	}
	writeJSON(w, http.StatusOK, struct {
		Path      string            `json:"path"`
		Entries   []workspace.Entry `json:"entries"`
		Truncated bool              `json:"truncated,omitempty"`
	}{rel, entries, l.Truncated})
	return nil
}

// GET /api/sessions/{id}/files/content?path=FILE → the file's bytes.
func (s *Server) handleFileDownload(w http.ResponseWriter, r *http.Request) error {
	release, err := s.transferSlot(r)
	if err != nil {
		return err
	}
	defer release()
	ws, rel, err := s.workspaceAt(r, true)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), downloadTimeout)
	defer cancel()
	body, size, err := ws.Guest.WSRead(ctx, rel)
	if err != nil {
		return guestFailure(err)
	}
	defer body.Close()
	untrustedDownload(w, path.Base(rel), guest.ContentOctets)
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, body); err != nil {
		s.log.Warn("file download cut short", "session", r.PathValue("id"), "err", err)
	}
	return nil
}

// untrustedDownload sets the headers of content from the workspace: a file
// to save, never a page (no sniffing, nothing runs, no caching).
func untrustedDownload(w http.ResponseWriter, name, contentType string) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Disposition", workspace.Disposition(name))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox; frame-ancestors 'none'")
	h.Set("Cache-Control", "no-store")
}

// countingBody remembers why reading an upload failed.
type countingBody struct {
	r   io.Reader
	err error
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// uploadBody bounds an upload: refused at once when it says it is too
// large, cut off past the limit, given time to arrive.
func (s *Server) uploadBody(w http.ResponseWriter, r *http.Request) (*countingBody, error) {
	limit := s.files.opts.MaxUploadBytes
	if r.ContentLength > limit {
		return nil, errorf(http.StatusRequestEntityTooLarge, "the upload is larger than %d bytes (--max-upload-mib)", limit)
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.files.opts.UploadTimeout))
	return &countingBody{r: http.MaxBytesReader(w, r.Body, limit)}, nil
}

// uploadFailure prefers why the body failed (too large, cut short) over what
// that did to the guest.
func (s *Server) uploadFailure(body *countingBody, err error) error {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(body.err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, "the upload is larger than %d bytes (--max-upload-mib)", mbe.Limit)
	case body.err != nil:
		return errorf(http.StatusBadRequest, "the upload was cut short: %v", body.err)
	}
	return guestFailure(err)
}

// PUT /api/sessions/{id}/files/content?path=FILE with the bytes → {"path", "size"}
func (s *Server) handleFileUpload(w http.ResponseWriter, r *http.Request) error {
	release, err := s.transferSlot(r)
	if err != nil {
		return err
	}
	defer release()
	ws, rel, err := s.workspaceAt(r, true)
	if err != nil {
		return err
	}
	body, err := s.uploadBody(w, r)
	if err != nil {
		return err
	}
	res, err := ws.Guest.WSWrite(r.Context(), rel, body, s.files.opts.MaxUploadBytes)
	if err != nil {
		return s.uploadFailure(body, err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"path": res.Path, "size": res.Size})
	return nil
}

// GET /api/sessions/{id}/workspace.tar.gz → the workspace, streamed.
func (s *Server) handleWorkspaceTar(w http.ResponseWriter, r *http.Request) error {
	release, err := s.transferSlot(r)
	if err != nil {
		return err
	}
	defer release()
	ws, _, err := s.workspaceAt(r, false)
	if err != nil {
		return err
	}
	name := unsafeFileChars.ReplaceAllString(ws.Name, "-") + "-workspace.tar.gz"
	if r.Method == http.MethodHead { // not worth making the archive for
		untrustedDownload(w, name, guest.ContentGzip)
		w.WriteHeader(http.StatusOK)
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), downloadTimeout)
	defer cancel()
	body, err := ws.Guest.WSTar(ctx, guest.WSTarRequest{})
	if err != nil {
		return guestFailure(err)
	}
	defer body.Close()
	untrustedDownload(w, name, guest.ContentGzip)
	w.WriteHeader(http.StatusOK)
	// The guest bounds its archive; a guest that does not is cut off past
	// what it may send (content plus tar's overhead, compressed or not).
	limit := guest.DefaultTarMaxBytes + int64(guest.DefaultTarMaxEntries)*2048 + 1<<20
	n, err := io.Copy(w, io.LimitReader(body, limit))
	if err == nil && n == limit {
		err = fmt.Errorf("the guest sent more than %d bytes", limit)
	}
	if err != nil {
		s.log.Warn("workspace download cut short", "session", r.PathValue("id"), "err", err)
	}
	return nil
}

// GET /api/sessions/{id}/changes → workspace.Changes
func (s *Server) handleChanges(w http.ResponseWriter, r *http.Request) error {
	if err := s.queryTurn(r); err != nil {
		return err
	}
	id := r.PathValue("id")
	if err := sameOriginGet(r); err != nil {
		return err
	}
	c, err := s.sessions.Changes(r.Context(), userFrom(r.Context()), id)
	if err != nil {
		if errors.Is(err, session.ErrNoWorkspace) {
			return errorf(http.StatusConflict, "%v", err)
		}
		if errors.Is(err, session.ErrNotFound) {
			return err
		}
		return guestFailure(err)
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

// PUT /api/sessions/{id}/archive with a .tar.gz, .tar or .zip → what was
// unpacked. Only for a session created with "archiveUpload": true, once,
// before it is ready; the request waits for its sandbox to be up.
func (s *Server) handleArchiveUpload(w http.ResponseWriter, r *http.Request) error {
	release, err := s.transferSlot(r)
	if err != nil {
		return err
	}
	defer release()
	id := r.PathValue("id")
	if _, err := s.sessions.View(r.Context(), userFrom(r.Context()), id); err != nil {
		return err
	}
	body, err := s.uploadBody(w, r)
	if err != nil {
		return err
	}
	res, err := s.sessions.UploadArchive(r.Context(), userFrom(r.Context()), id, body,
		guest.UnpackLimits{MaxArchive: s.files.opts.MaxUploadBytes})
	if err != nil {
		switch {
		case errors.Is(err, session.ErrNoArchive), errors.Is(err, session.ErrEnded):
			return errorf(http.StatusConflict, "%v", err)
		case errors.Is(err, session.ErrNotFound):
			return err
		}
		return s.uploadFailure(body, err)
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}
