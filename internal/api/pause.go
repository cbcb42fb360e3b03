package api

import (
	"net/http"
	"time"
)

// handlePause saves one of the user's sessions and frees its sandbox's
// memory → 200 Session (state paused). No body.
func (s *Server) handlePause(w http.ResponseWriter, r *http.Request) error {
	id, err := sessionID(r)
	if err != nil {
		return err
	}
	if err := s.lifecycleAllowed(r); err != nil {
		return err
	}
	v, err := s.sessions.Pause(r.Context(), userFrom(r.Context()), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// resumeRequest is the optional body of a resume: the API key, when the
// server no longer holds it.
type resumeRequest struct {
	APIKey string `json:"apiKey,omitempty"`
}

// handleResume starts a paused session again → 202 Session (state
// resuming; a running one as it is). The body is optional.
func (s *Server) handleResume(w http.ResponseWriter, r *http.Request) error {
	id, err := sessionID(r)
	if err != nil {
		return err
	}
	var req resumeRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(w, r, &req); err != nil {
			return err
		}
	}
	if err := s.lifecycleAllowed(r); err != nil {
		return err
	}
	v, err := s.sessions.Resume(r.Context(), userFrom(r.Context()), id, req.APIKey)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, v)
	return nil
}

// lifecycleAllowed spends one of the user's pauses and resumes: each saves
// or restores a VM, which one user must not do without end.
func (s *Server) lifecycleAllowed(r *http.Request) error {
	user := userFrom(r.Context()).ID
	if retry, blocked := s.lifecycle.blocked(user); blocked {
		return errorf(http.StatusTooManyRequests, "too many pauses and resumes; try again in %s", retry.Round(time.Second))
	}
	s.lifecycle.fail(user)
	return nil
}
