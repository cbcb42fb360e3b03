package api

import (
	"net/http"
	"regexp"

	"github.com/execlaw/execlaw/internal/session"
)

// validID matches session ids as the manager makes them; anything else is
// answered 404 without touching the store.
var validID = regexp.MustCompile(`^s_[0-9a-f]{24}$`)

func sessionID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !validID.MatchString(id) {
		return "", session.ErrNotFound
	}
	return id, nil
}

func (s *Server) handleListSessions(w http.ResponseWriter, r *http.Request) error {
	views, err := s.sessions.List(r.Context(), userFrom(r.Context()))
	if err != nil {
		return err
	}
	if views == nil {
		views = []session.View{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": views})
	return nil
}

func (s *Server) handleCreateSession(w http.ResponseWriter, r *http.Request) error {
	var req session.CreateRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.EmailOnIdle {
		req.EmailTo = s.idleRecipient(userFrom(r.Context()))
	}
	v, err := s.sessions.Create(r.Context(), userFrom(r.Context()), req)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/sessions/"+v.ID+"/status")
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func (s *Server) handleSessionStatus(w http.ResponseWriter, r *http.Request) error {
	id, err := sessionID(r)
	if err != nil {
		return err
	}
	v, err := s.sessions.View(r.Context(), userFrom(r.Context()), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// renameRequest is the body of PATCH /api/sessions/{id}.
type renameRequest struct {
	Name *string `json:"name"`
}

func (s *Server) handleRenameSession(w http.ResponseWriter, r *http.Request) error {
	id, err := sessionID(r)
	if err != nil {
		return err
	}
	var req renameRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Name == nil {
		return errorf(http.StatusBadRequest, `body must be {"name": "..."}`)
	}
	v, err := s.sessions.Rename(r.Context(), userFrom(r.Context()), id, *req.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

type inputRequest struct {
	Message string `json:"message"`
}

func (s *Server) handleInput(w http.ResponseWriter, r *http.Request) error {
	id, err := sessionID(r)
	if err != nil {
		return err
	}
	var req inputRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := s.sessions.Input(r.Context(), userFrom(r.Context()), id, req.Message); err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, okBody)
	return nil
}

func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) error {
	id, err := sessionID(r)
	if err != nil {
		return err
	}
	cancelled, err := s.sessions.Cancel(r.Context(), userFrom(r.Context()), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true, "cancelled": cancelled})
	return nil
}

func (s *Server) handleDeleteSession(w http.ResponseWriter, r *http.Request) error {
	id, err := sessionID(r)
	if err != nil {
		return err
	}
	if err := s.sessions.Delete(r.Context(), userFrom(r.Context()), id); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, okBody)
	return nil
}
