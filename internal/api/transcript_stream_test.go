package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/session"
)

// Downloads read the log a page at a time: a log of several pages comes out
// whole and in order, in both formats, with nothing repeated.
func TestTranscriptDownloadPages(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{})
	s := h.AnthropicSession(fake, nil)
	h.WaitState(s.ID, "active")
	sess, running, err := h.Mgr.Get(context.Background(), session.User{ID: "owner"}, s.ID)
	if err != nil || !running {
		t.Fatalf("session not running: %v", err)
	}
	const n = 1300 // more than two pages
	for i := range n {
		msg := event.MessageData{MessageID: fmt.Sprintf("m%d", i), Role: "assistant", Content: fmt.Sprintf("line %04d", i)}
		if err := sess.Emit(context.Background(), event.Message, msg); err != nil {
			t.Fatal(err)
		}
	}

	md := string(h.Must(http.StatusOK, "GET", "/api/sessions/"+s.ID+"/transcript", nil).Body)
	last := -1
	for i := range n {
		at := strings.Index(md, fmt.Sprintf("line %04d\n", i))
		if at <= last || strings.Count(md, fmt.Sprintf("line %04d\n", i)) != 1 {
			t.Fatalf("line %d is missing, repeated or out of order in the Markdown", i)
		}
		last = at
	}

	var doc struct {
		Session struct{ ID string }
		Events  []struct {
			ID   int64
			Type string
			Data map[string]any
		}
	}
	h.Must(http.StatusOK, "GET", "/api/sessions/"+s.ID+"/transcript?format=json", nil).JSON(t, &doc)
	if doc.Session.ID != s.ID {
		t.Fatalf("session %q", doc.Session.ID)
	}
	seen := 0
	for i, e := range doc.Events {
		if e.ID != int64(i+1) {
			t.Fatalf("event %d has id %d", i+1, e.ID)
		}
		if e.Type == event.Message {
			if want := fmt.Sprintf("line %04d", seen); e.Data["content"] != want {
				t.Fatalf("message %d is %v, want %q", seen, e.Data["content"], want)
			}
			seen++
		}
	}
	if seen != n {
		t.Fatalf("%d messages in the JSON transcript, want %d", seen, n)
	}
	var raw map[string]json.RawMessage
	h.Must(http.StatusOK, "GET", "/api/sessions/"+s.ID+"/transcript?format=json", nil).JSON(t, &raw)
	if len(raw) != 2 {
		t.Fatalf("JSON transcript keys: %d", len(raw))
	}
}
