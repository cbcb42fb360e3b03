package api_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/api"
	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/keystore"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/testutil"
)

// A paused session frees its sandbox and keeps its files and transcript;
// input resumes it (the process sandbox resumes cold, and says so) and the
// conversation goes on where it stood.
func TestPauseAndResumeOnInput(t *testing.T) {
	fake := llmtest.NewAnthropic(
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"echo kept > file.txt"}`}}},
		llmtest.Turn{Text: "Wrote it."},
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"cat file.txt"}`}}},
		llmtest.Turn{Text: "It says kept."},
	).Attach(t)
	h := apitest.New(t, apitest.Options{})
	s := h.AnthropicSession(fake, nil)
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "write a file")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	h.WaitState(s.ID, "active")
	dir := filepath.Join(h.DataDir, "sandboxes", s.ID)

	var v session.View
	h.Must(http.StatusOK, "POST", "/api/sessions/"+s.ID+"/pause", nil).JSON(t, &v)
	if v.State != "paused" || v.ResumeKind != event.ResumeCold || v.KeyNeeded {
		t.Fatalf("after pause: %+v", v)
	}
	if procs := testutil.ProcessesWithArgs(dir); len(procs) > 0 {
		t.Fatalf("the sandbox still runs after pause: %v", procs)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "workspace", "file.txt")); err != nil || string(b) != "kept\n" {
		t.Fatalf("the workspace after pause: %q %v", b, err)
	}
	if p := st.WaitType(t, apitest.Wait, event.Paused, 1); p.Field("kind") != event.ResumeCold || !strings.Contains(p.Field("reason"), "cannot save") {
		t.Fatalf("paused event: %s", p.Data)
	}
	// Pausing a paused session changes nothing; cancelling finds no turn.
	h.Must(http.StatusOK, "POST", "/api/sessions/"+s.ID+"/pause", nil).JSON(t, &v)
	if v.State != "paused" {
		t.Fatalf("paused twice: %+v", v)
	}

	h.Input(s.ID, "read it")
	resumed := h.Stream(s.ID, "")
	if e := resumed.WaitType(t, apitest.Wait, event.Resumed, 1); e.Field("kind") != event.ResumeCold {
		t.Fatalf("resumed event: %s", e.Data)
	}
	resumed.WaitType(t, apitest.Wait, event.AgentIdle, 2)
	events := resumed.Events()
	last := indexOf(events, event.ToolResult, indexOf(events, event.Resumed, 0))
	if last < 0 || events[last].Field("output") != "kept\n" {
		t.Fatalf("after resume: %s", testutil.Summary(events))
	}
	// The model was given the whole conversation again.
	reqs := fake.Requests()
	if body := string(reqs[len(reqs)-1].Body); !strings.Contains(body, "write a file") || !strings.Contains(body, "Wrote it.") {
		t.Errorf("the conversation was not carried across the pause: %.300s", body)
	}
	// Nothing in the log is repeated: ids run on from where they stood.
	for i, e := range events {
		if e.ID != int64(i+1) {
			t.Fatalf("event %d has id %d", i+1, e.ID)
		}
	}
}

// A turn in progress refuses a pause; hostile and unknown ids answer 404,
// someone else's too; a resume body is checked.
func TestPauseRefusals(t *testing.T) {
	gate := make(chan struct{})
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "slow", Gate: gate}).Attach(t)
	h := apitest.New(t, apitest.Options{Auth: api.Auth{Mode: api.AuthExeDev}})
	s := h.AnthropicSession(fake, nil)
	h.WaitState(s.ID, "active")
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "talk")
	st.WaitType(t, apitest.Wait, event.MessageDelta, 1)
	if r := h.Do("POST", "/api/sessions/"+s.ID+"/pause", nil, nil); r.Status != http.StatusConflict {
		t.Fatalf("pause during a turn: %d %s", r.Status, r.Body)
	}
	close(gate)
	st.WaitType(t, apitest.Wait, event.AgentIdle, 1)

	for _, path := range []string{"/api/sessions/s_000000000000000000000000/pause", "/api/sessions/..%2f..%2fetc/pause", "/api/sessions/" + strings.Repeat("x", 5000) + "/resume"} {
		if r := h.Do("POST", path, nil, nil); r.Status != http.StatusNotFound {
			t.Errorf("POST %.60s: %d %s", path, r.Status, r.Body)
		}
	}
	other := http.Header{"X-Exedev-Userid": {"mallory"}, "Content-Type": {"application/json"}}
	for _, path := range []string{"/pause", "/resume"} {
		if r := h.Do("POST", "/api/sessions/"+s.ID+path, nil, other); r.Status != http.StatusNotFound {
			t.Errorf("someone else's %s: %d %s", path, r.Status, r.Body)
		}
	}
	for _, body := range []string{`{"apiKey":1}`, `{"apiKey":"k","extra":true}`, `{"apiKey":"` + strings.Repeat("k", 5000) + `"}`, `[`} {
		if r := h.Do("POST", "/api/sessions/"+s.ID+"/resume", body, nil); r.Status != http.StatusBadRequest {
			t.Errorf("resume with %.40s: %d %s", body, r.Status, r.Body)
		}
	}
	if r := h.Do("POST", "/api/sessions/"+s.ID+"/resume", strings.Repeat(" ", 2<<20), nil); r.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("resume with a huge body: %d", r.Status)
	}
	// Pausing and resuming without end is refused after a while.
	limited := false
	for range 40 {
		r := h.Do("POST", "/api/sessions/"+s.ID+"/resume", nil, nil)
		if r.Status == http.StatusTooManyRequests {
			limited = true
			break
		}
	}
	if !limited {
		t.Error("40 resumes in a row were not limited")
	}
}

// Stopping the server pauses its sessions; after a restart they are paused,
// need their key again (keys live in memory only), and resume with it.
func TestRestartPausesSessions(t *testing.T) {
	fake := llmtest.NewAnthropic(
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"echo one > one.txt"}`}}},
		llmtest.Turn{Text: "Done."},
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"cat one.txt"}`}}},
		llmtest.Turn{Text: "Still there."},
	).Attach(t)
	h := apitest.New(t, apitest.Options{PauseOnStop: true})
	s := h.AnthropicSession(fake, nil)
	h.Input(s.ID, "write")
	h.Stream(s.ID, "").WaitType(t, apitest.Wait, event.AgentIdle, 1)
	h.Stop()
	h.Start()

	v := h.WaitState(s.ID, "paused")
	if !v.KeyNeeded {
		t.Fatalf("after a restart without a key store: %+v", v)
	}
	r := h.Do("POST", "/api/sessions/"+s.ID+"/input", map[string]string{"message": "read"}, nil)
	if r.Status != http.StatusConflict || !strings.Contains(string(r.Body), `"keyNeeded":true`) {
		t.Fatalf("input without the key: %d %s", r.Status, r.Body)
	}
	var resumed session.View
	h.Must(http.StatusAccepted, "POST", "/api/sessions/"+s.ID+"/resume", map[string]string{"apiKey": "sk-ant-test"}).JSON(t, &resumed)
	if resumed.State == "paused" || resumed.KeyNeeded {
		t.Fatalf("resume answered %+v", resumed)
	}
	h.WaitState(s.ID, "active")
	h.Input(s.ID, "read")
	st := h.Stream(s.ID, "")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 2)
	if i := indexOf(st.Events(), event.ToolResult, indexOf(st.Events(), event.Resumed, 0)); i < 0 || st.Events()[i].Field("output") != "one\n" {
		t.Fatalf("after the restart: %s", testutil.Summary(st.Events()))
	}
}

// With a key store, a session resumes after a restart without its key
// being asked for again; the key is sealed in the database, never plain.
func TestRestartWithKeyStore(t *testing.T) {
	const apiKey = "sk-ant-keystore-0123456789"
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "after the restart"}).Attach(t)
	fake.RequireKey(apiKey)
	keyFile := filepath.Join(t.TempDir(), "keystore.key")
	if err := keystore.GenerateFile(keyFile); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	ks, err := keystore.Open("file:"+keyFile, dataDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := apitest.New(t, apitest.Options{PauseOnStop: true, Keys: ks, DataDir: dataDir})
	s := h.AnthropicSession(fake, map[string]any{"apiKey": apiKey})
	h.WaitState(s.ID, "active")
	h.Stop()
	filepath.WalkDir(dataDir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if found, _ := testutil.FileContains(path, []byte(apiKey)); found {
				t.Errorf("the key is in plain text in %s", path)
			}
		}
		return nil
	})
	h.Start()
	if v := h.WaitState(s.ID, "paused"); v.KeyNeeded {
		t.Fatalf("a sealed key was not found: %+v", v)
	}
	h.Input(s.ID, "hello again")
	st := h.Stream(s.ID, "")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	if indexOf(st.Events(), event.Message, 0) < 0 {
		t.Fatalf("after the restart: %s", testutil.Summary(st.Events()))
	}
}
