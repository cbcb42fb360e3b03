package api

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"time"

	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/store"
	"github.com/execlaw/execlaw/internal/transcript"
)

// transcriptEvent is one event in the JSON transcript.
type transcriptEvent struct {
	ID   int64     `json:"id"`
	Type string    `json:"type"`
	Data any       `json:"data"`
	Time time.Time `json:"time"`
}

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func (s *Server) handleTranscript(w http.ResponseWriter, r *http.Request) error {
	id, err := sessionID(r)
	if err != nil {
		return err
	}
	format := r.URL.Query().Get("format")
	if format == "" {
		format = "md"
	}
	if format != "md" && format != "json" {
		return errorf(http.StatusBadRequest, `format must be "md" or "json"`)
	}
	view, err := s.sessions.View(r.Context(), userFrom(r.Context()), id)
	if err != nil {
		return err
	}
	events, err := s.sessions.Events(r.Context(), userFrom(r.Context()), id, 0, 0)
	if err != nil {
		return err
	}
	filename := unsafeFileChars.ReplaceAllString(view.Name, "-") + "-" + id + "." + format
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s"`, filename))

	if format == "json" {
		out := make([]transcriptEvent, 0, len(events))
		for _, e := range events {
			out = append(out, transcriptEvent{ID: e.Seq, Type: e.Type, Data: e.Data, Time: e.Time})
		}
		writeJSON(w, http.StatusOK, map[string]any{"session": view, "events": out})
		return nil
	}
	md := transcript.Markdown(transcriptHeader(view), events)
	w.Header().Set("Content-Type", "text/markdown; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, err = w.Write([]byte(md))
	return err
}

func transcriptHeader(view session.View) transcript.Header {
	return transcript.Header{
		ID: view.ID, Name: view.Name, Provider: view.Provider, Model: view.Model, Sandbox: view.Sandbox,
		CreatedAt: view.CreatedAt, Usage: view.Usage,
	}
}

// transcriptOf reads what a transcript of one of user's sessions is made of.
func (s *Server) transcriptOf(ctx context.Context, user session.User, view session.View) (transcript.Header, []store.Event, error) {
	events, err := s.sessions.Events(ctx, user, view.ID, 0, 0)
	if err != nil {
		return transcript.Header{}, nil, err
	}
	return transcriptHeader(view), events, nil
}
