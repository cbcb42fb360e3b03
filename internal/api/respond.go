package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"

	"github.com/execlaw/execlaw/internal/session"
)

// handlerFunc is an HTTP handler that returns its failure instead of writing
// it, so every error leaves the server in the same JSON shape.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// httpError is an error with the status and message the client should see.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// maxBodyBytes bounds every request body.
const maxBodyBytes = 1 << 20

func (s *Server) handle(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// writeError maps an error to a status. Errors that are not the client's
// doing are logged and answered without detail.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, "internal error"
	var he *httpError
	var ve *session.ValidationError
	var le *session.LimitError
	var ule *session.UserLimitError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &he):
		status, msg = he.status, he.msg
	case errors.As(err, &ve):
		status, msg = http.StatusBadRequest, ve.Error()
	case errors.As(err, &ule):
		// One user's own limit (--max-sessions-per-user): theirs to wait
		// out, unlike a full server.
		status, msg = http.StatusTooManyRequests, ule.Error()
	case errors.As(err, &le):
		status, msg = http.StatusServiceUnavailable, le.Error()
	case errors.As(err, &mbe):
		status, msg = http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)
	case errors.Is(err, session.ErrNotFound):
		status, msg = http.StatusNotFound, "session not found"
	case errors.Is(err, session.ErrKeyNeeded):
		// keyNeeded tells a client to ask for the key and resume with it.
		writeJSON(w, http.StatusConflict, map[string]any{"error": err.Error(), "keyNeeded": true})
		return
	case errors.Is(err, session.ErrBusy), errors.Is(err, session.ErrEnded), errors.Is(err, session.ErrLogFull),
		errors.Is(err, session.ErrNotPausable):
		status, msg = http.StatusConflict, err.Error()
	case errors.Is(err, session.ErrClosing):
		status, msg = http.StatusServiceUnavailable, err.Error()
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v)
}

var okBody = map[string]bool{"ok": true}

// decodeJSON reads a JSON request body into v: application/json only, bounded,
// one object, no unknown fields.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || ct != "application/json" {
		return errorf(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errorf(http.StatusBadRequest, "invalid JSON body: %v", err)
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "invalid JSON body: more than one value")
	}
	return nil
}
