package api_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/api"
	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/session"
)

// PATCH /api/sessions/{id} renames a session, running or ended; the name is
// kept in the store, checked like a new session's, and only the owner may
// change it.
func TestRenameSession(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{})
	s := h.AnthropicSession(fake, map[string]any{"name": "first"})
	h.WaitState(s.ID, "active")

	var v session.View
	h.Must(http.StatusOK, "PATCH", "/api/sessions/"+s.ID, map[string]string{"name": "  Refactor the parser ✨ "}).JSON(t, &v)
	if v.ID != s.ID || v.Name != "Refactor the parser ✨" || v.State != "active" {
		t.Fatalf("renamed running session: %+v", v)
	}
	h.Must(http.StatusOK, "GET", "/api/sessions/"+s.ID+"/status", nil).JSON(t, &v)
	if v.Name != "Refactor the parser ✨" {
		t.Fatalf("status after rename: name %q", v.Name)
	}
	var list struct{ Sessions []session.View }
	h.Must(http.StatusOK, "GET", "/api/sessions", nil).JSON(t, &list)
	if len(list.Sessions) != 1 || list.Sessions[0].Name != "Refactor the parser ✨" {
		t.Fatalf("list after rename: %+v", list.Sessions)
	}

	// Invalid names are refused and change nothing.
	for _, body := range []string{
		`{"name":""}`,
		`{"name":"   "}`,
		`{"name":"` + strings.Repeat("x", session.MaxNameLen+1) + `"}`,
		`{"name":"bell\u0007"}`,
		`{"name":"line\nbreak"}`,
		`{}`,
		`{"name":null}`,
		`{"name":42}`,
		`{"name":"ok","extra":1}`,
		`not json`,
	} {
		r := h.Do("PATCH", "/api/sessions/"+s.ID, body, nil)
		if r.Status != http.StatusBadRequest || !bytes.Contains(r.Body, []byte(`"error"`)) {
			t.Errorf("PATCH %s: %d %s, want 400 JSON", body, r.Status, r.Body)
		}
	}
	hdr := h.AuthHeader()
	hdr.Set("Content-Type", "text/plain")
	if r := h.Do("PATCH", "/api/sessions/"+s.ID, `{"name":"x"}`, hdr); r.Status != http.StatusUnsupportedMediaType {
		t.Errorf("PATCH as text/plain: %d %s", r.Status, r.Body)
	}
	// Exactly MaxNameLen characters (not bytes) is fine.
	long := strings.Repeat("é", session.MaxNameLen)
	h.Must(http.StatusOK, "PATCH", "/api/sessions/"+s.ID, map[string]string{"name": long}).JSON(t, &v)
	if v.Name != long {
		t.Fatalf("100-character name came back as %q", v.Name)
	}

	// Unknown and malformed ids are 404.
	for _, id := range []string{"s_000000000000000000000000", "nope", "s_" + strings.Repeat("g", 24)} {
		if r := h.Do("PATCH", "/api/sessions/"+id, `{"name":"x"}`, nil); r.Status != http.StatusNotFound {
			t.Errorf("PATCH unknown %s: %d %s", id, r.Status, r.Body)
		}
	}

	// An ended session can still be renamed, and the name survives a restart.
	h.Must(http.StatusOK, "DELETE", "/api/sessions/"+s.ID, nil)
	h.Must(http.StatusOK, "PATCH", "/api/sessions/"+s.ID, map[string]string{"name": "ended one"}).JSON(t, &v)
	if v.Name != "ended one" || v.State != "stopped" {
		t.Fatalf("renamed ended session: %+v", v)
	}
	h.Stop()
	h.Start()
	h.Must(http.StatusOK, "GET", "/api/sessions/"+s.ID+"/status", nil).JSON(t, &v)
	if v.Name != "ended one" {
		t.Fatalf("name after restart: %q", v.Name)
	}
}

func TestRenameOtherUsersSessionIs404(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{Auth: api.Auth{Mode: api.AuthExeDev}})
	s := h.AnthropicSession(fake, map[string]any{"name": "alice's"})
	bob := http.Header{"X-Exedev-Userid": {"bob"}, "Content-Type": {"application/json"}}
	r := h.Do("PATCH", "/api/sessions/"+s.ID, `{"name":"bob was here"}`, bob)
	if r.Status != http.StatusNotFound || !bytes.Contains(r.Body, []byte(`"error"`)) {
		t.Fatalf("bob renames alice's session: %d %s", r.Status, r.Body)
	}
	var v session.View
	h.Must(http.StatusOK, "GET", "/api/sessions/"+s.ID+"/status", nil).JSON(t, &v)
	if v.Name != "alice's" {
		t.Fatalf("alice's session was renamed to %q", v.Name)
	}
	// A rename without a user is refused before anything else.
	if r := h.Do("PATCH", "/api/sessions/"+s.ID, `{"name":"x"}`, http.Header{"Content-Type": {"application/json"}}); r.Status != http.StatusUnauthorized {
		t.Fatalf("anonymous rename: %d", r.Status)
	}
	// So is one from another site riding on the user's credentials.
	cross := h.AuthHeader()
	cross.Set("Content-Type", "application/json")
	cross.Set("Sec-Fetch-Site", "cross-site")
	if r := h.Do("PATCH", "/api/sessions/"+s.ID, `{"name":"x"}`, cross); r.Status != http.StatusForbidden {
		t.Fatalf("cross-site rename: %d %s", r.Status, r.Body)
	}
	h.WaitState(s.ID, "active")
}
