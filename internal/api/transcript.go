package api

import (
	"bufio"
	"context"
	"encoding/json"
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
	user := userFrom(r.Context())
	view, err := s.sessions.View(r.Context(), user, id)
	if err != nil {
		return err
	}
	// The log is read a page at a time and written as it is read: a long
	// session's transcript never sits in memory whole. Once the answer has
	// begun, a failure can only cut it short (and is logged).
	events := s.eventsOf(r.Context(), user, id)
	filename := unsafeFileChars.ReplaceAllString(view.Name, "-") + "-" + id + "." + format
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s"`, filename))
	w.Header().Set("Cache-Control", "no-store")
	if format == "json" {
		err = writeJSONTranscript(w, view, events)
	} else {
		w.Header().Set("Content-Type", "text/markdown; charset=utf-8")
		err = transcript.Write(w, transcriptHeader(view), events)
	}
	if err != nil {
		s.log.Warn("transcript download cut short", "session", id, "err", err)
	}
	return nil
}

// writeJSONTranscript writes {"session": view, "events": [...]} event by event.
func writeJSONTranscript(w http.ResponseWriter, view session.View, events transcript.Events) error {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	head, err := json.Marshal(view)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	fmt.Fprintf(bw, `{"session":%s,"events":[`, head)
	first := true
	for e, err := range events {
		if err != nil {
			return err
		}
		line, err := json.Marshal(transcriptEvent{ID: e.Seq, Type: e.Type, Data: e.Data, Time: e.Time})
		if err != nil {
			return err
		}
		if !first {
			bw.WriteByte(',')
		}
		first = false
		if _, err := bw.Write(line); err != nil {
			return err
		}
	}
	bw.WriteString("]}\n")
	return bw.Flush()
}

func transcriptHeader(view session.View) transcript.Header {
	return transcript.Header{
		ID: view.ID, Name: view.Name, Provider: view.Provider, Model: view.Model, Sandbox: view.Sandbox,
		CreatedAt: view.CreatedAt, Usage: view.Usage,
	}
}

// transcriptPage is how many events a transcript reads from the store at once.
const transcriptPage = 512

// eventsOf yields the events of one of user's sessions, a page at a time.
func (s *Server) eventsOf(ctx context.Context, user session.User, id string) transcript.Events {
	return func(yield func(store.Event, error) bool) {
		var after int64
		for {
			page, err := s.sessions.Events(ctx, user, id, after, transcriptPage)
			if err != nil {
				yield(store.Event{}, err)
				return
			}
			for _, e := range page {
				if !yield(e, nil) {
					return
				}
				after = e.Seq
			}
			if len(page) < transcriptPage {
				return
			}
		}
	}
}
