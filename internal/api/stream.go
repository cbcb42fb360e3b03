package api

import (
	"bufio"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/execlaw/execlaw/internal/store"
)

const (
	replayPage        = 500
	streamWriteWindow = 30 * time.Second
)

// handleStream serves a session's events as Server-Sent Events: everything
// after Last-Event-ID (or ?after=, or from the start) from the store, then
// live events as they happen, each once and in order. The stream ends when the
// session has ended and everything is sent, when the client goes away, or when
// the client falls so far behind that it is cut off (it then reconnects with
// Last-Event-ID and loses nothing).
func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) error {
	id, err := sessionID(r)
	if err != nil {
		return err
	}
	after, err := streamStart(r)
	if err != nil {
		return err
	}
	sess, running, err := s.sessions.Get(r.Context(), userFrom(r.Context()), id)
	if err != nil {
		return err
	}

	upTo := int64(math.MaxInt64)
	var live <-chan store.Event
	if running {
		sub := sess.Subscribe()
		defer sub.Close()
		upTo, live = sub.From, sub.C()
	}

	s.metrics.StreamOpened()
	defer s.metrics.StreamClosed()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	bw := bufio.NewWriterSize(w, 32<<10)
	flush := func() error {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteWindow))
		if err := bw.Flush(); err != nil {
			return err
		}
		return rc.Flush()
	}
	fmt.Fprintf(bw, "retry: 1000\n\n")
	// Send the headers now: a client resuming at the newest event would
	// otherwise wait for the next event or heartbeat to learn it is connected.
	if err := flush(); err != nil {
		return nil
	}

	last := after
	for last < upTo {
		page, err := s.sessions.Events(r.Context(), userFrom(r.Context()), id, last, replayPage)
		if err != nil {
			s.log.Error("replay events", "session", id, "err", err)
			return nil // headers are sent; the client reconnects
		}
		for _, e := range page {
			if e.Seq > upTo {
				break
			}
			writeEvent(bw, e)
			last = e.Seq
		}
		if err := flush(); err != nil {
			return nil
		}
		if len(page) < replayPage {
			break
		}
	}
	if live == nil {
		return nil
	}

	heartbeat := time.NewTicker(s.heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case e, ok := <-live:
			if !ok {
				return nil // session ended, or this client fell behind
			}
			if e.Seq <= last {
				continue
			}
			writeEvent(bw, e)
			last = e.Seq
			// Send what has queued up in one write, then flush.
			for drained := false; !drained; {
				select {
				case e, ok := <-live:
					if !ok {
						_ = flush()
						return nil
					}
					if e.Seq > last {
						writeEvent(bw, e)
						last = e.Seq
					}
				default:
					drained = true
				}
			}
			if err := flush(); err != nil {
				return nil
			}
		case <-heartbeat.C:
			fmt.Fprintf(bw, ": keep-alive\n\n")
			if err := flush(); err != nil {
				return nil
			}
		case <-r.Context().Done():
			return nil
		case <-s.streams.Done():
			return nil
		}
	}
}

// writeEvent writes one event. Data is stored as compact JSON, so it is one line.
func writeEvent(w *bufio.Writer, e store.Event) {
	fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Type, e.Data)
}

// streamStart reads where a client wants to resume: Last-Event-ID wins over ?after=.
func streamStart(r *http.Request) (int64, error) {
	raw := r.Header.Get("Last-Event-ID")
	name := "Last-Event-ID"
	if raw == "" {
		raw, name = r.URL.Query().Get("after"), "after"
	}
	if raw == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || n < 0 {
		return 0, errorf(http.StatusBadRequest, "%s must be a non-negative event id", name)
	}
	return n, nil
}
