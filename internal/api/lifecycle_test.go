package api_test

import (
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/apitest"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/testutil"
)

func TestIdleReaper(t *testing.T) {
	gate := make(chan struct{})
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "working on it", Gate: gate}).Attach(t)
	h := apitest.New(t, apitest.Options{})
	idle := h.AnthropicSession(fake, map[string]any{"idleTimeoutMin": 5})
	busy := h.AnthropicSession(fake, map[string]any{"idleTimeoutMin": 5})
	h.WaitState(idle.ID, "active")
	h.WaitState(busy.ID, "active")
	bst := h.Stream(busy.ID, "")
	h.Input(busy.ID, "long job")
	bst.WaitType(t, apitest.Wait, event.MessageDelta, 1)

	h.Mgr.ReapIdle(time.Now().Add(4 * time.Minute))
	if v := h.WaitState(idle.ID, "active"); v.State != "active" {
		t.Fatal("reaped before its timeout")
	}
	st := h.Stream(idle.ID, "")
	h.Mgr.ReapIdle(time.Now().Add(6 * time.Minute))
	exit := st.WaitType(t, apitest.Wait, event.Exit, 1)
	if !strings.Contains(exit.Field("reason"), "idle timeout") {
		t.Fatalf("exit reason: %s", exit.Data)
	}
	h.WaitState(idle.ID, "stopped")
	// A session in the middle of a turn is not idle.
	if v := h.WaitState(busy.ID, "busy"); v.State != "busy" {
		t.Fatal("busy session was reaped")
	}
	close(gate)
	bst.WaitType(t, apitest.Wait, event.AgentIdle, 1)
}

func TestSessionLimits(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{MaxSessions: 2})
	a := h.AnthropicSession(fake, nil)
	h.AnthropicSession(fake, nil)
	r := h.Do("POST", "/api/sessions", map[string]any{"provider": "anthropic", "apiKey": "k", "model": "claude-sonnet-4-20250514"}, nil)
	if r.Status != http.StatusServiceUnavailable || !strings.Contains(string(r.Body), "at most 2 sessions") {
		t.Fatalf("third session: %d %s", r.Status, r.Body)
	}
	h.Must(http.StatusOK, "DELETE", "/api/sessions/"+a.ID, nil)
	h.AnthropicSession(fake, nil)

	// Memory: with the limit set below what the host already uses, a new
	// session is refused with the figures in the message.
	m := apitest.New(t, apitest.Options{MemPercent: 0.1})
	r = m.Do("POST", "/api/sessions", map[string]any{"provider": "anthropic", "apiKey": "k", "model": "claude-sonnet-4-20250514"}, nil)
	if r.Status != http.StatusServiceUnavailable || !strings.Contains(string(r.Body), "not enough host memory") || !strings.Contains(string(r.Body), "MiB") {
		t.Fatalf("memory gate: %d %s", r.Status, r.Body)
	}
}

// A sandbox that dies on its own turns the session into an error, with an
// exit event, and everything it held is freed.
func TestSandboxCrash(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{})
	s := h.AnthropicSession(fake, nil)
	h.WaitState(s.ID, "active")
	st := h.Stream(s.ID, "")
	pids := apitest.ProcessesMentioning(filepath.Join(h.DataDir, "sandboxes", s.ID))
	if len(pids) == 0 {
		t.Fatal("no guest process found")
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	exit := st.WaitType(t, apitest.Wait, event.Exit, 1)
	if exit.Field("code") == "0" || !strings.Contains(exit.Field("reason"), "unexpectedly") {
		t.Fatalf("exit after crash: %s", exit.Data)
	}
	v := h.WaitState(s.ID, "error")
	if !strings.Contains(v.Error, "unexpectedly") {
		t.Errorf("error field: %q", v.Error)
	}
	st.WaitEnd(t, apitest.Wait)
	h.AssertNothingLeft()
	if r := h.Do("POST", "/api/sessions/"+s.ID+"/input", map[string]string{"message": "hi"}, nil); r.Status != http.StatusConflict {
		t.Fatalf("input to a crashed session: %d %s", r.Status, r.Body)
	}
}

// DELETE in the middle of a turn ends the turn, stops the sandbox and
// removes its files; the transcript stays readable.
func TestDeleteDuringTurn(t *testing.T) {
	gate := make(chan struct{})
	defer close(gate)
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "never finished", Gate: gate}).Attach(t)
	h := apitest.New(t, apitest.Options{})
	s := h.AnthropicSession(fake, nil)
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "go")
	st.WaitType(t, apitest.Wait, event.MessageDelta, 1)
	h.Must(http.StatusOK, "DELETE", "/api/sessions/"+s.ID, nil)
	st.WaitEnd(t, apitest.Wait)
	events := st.Events()
	idle, exit := indexOf(events, event.AgentIdle, 0), indexOf(events, event.Exit, 0)
	if idle < 0 || exit < idle || exit != len(events)-1 {
		t.Fatalf("want agent_idle then exit last: %v", types(events))
	}
	if v := h.WaitState(s.ID, "stopped"); v.EndedAt == nil {
		t.Fatal("no endedAt")
	}
	h.AssertNothingLeft()
	h.Must(http.StatusOK, "DELETE", "/api/sessions/"+s.ID, nil) // idempotent
	md := h.Must(http.StatusOK, "GET", "/api/sessions/"+s.ID+"/transcript", nil)
	if !strings.Contains(string(md.Body), "## User\n\ngo") || !strings.Contains(string(md.Body), "ended by the user") {
		t.Fatalf("transcript after delete:\n%s", md.Body)
	}
}

// Deleting a session while it boots leaves nothing behind.
func TestDeleteDuringBoot(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{})
	for range 5 {
		s := h.AnthropicSession(fake, nil)
		h.Must(http.StatusOK, "DELETE", "/api/sessions/"+s.ID, nil)
		h.WaitState(s.ID, "stopped")
	}
	h.AssertNothingLeft()
}

// Create, input, cancel and delete racing each other: no deadlock, no orphan
// process or directory, every session ends in a final state.
func TestConcurrentLifecycle(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	for range 200 {
		fake.Enqueue(llmtest.Turn{Text: "ok", ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"sleep 0.05; echo hi"}`}}},
			llmtest.Turn{Text: "done"})
	}
	h := apitest.New(t, apitest.Options{MaxSessions: 50})
	var wg sync.WaitGroup
	ids := make(chan string, 100)
	for w := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range 4 {
				var v session.View
				r := h.Do("POST", "/api/sessions", map[string]any{"provider": "anthropic", "apiKey": "k",
					"model": "claude-sonnet-4-20250514", "baseUrl": fake.BaseURL()}, nil)
				if r.Status != http.StatusCreated {
					t.Errorf("create: %d %s", r.Status, r.Body)
					return
				}
				r.JSON(t, &v)
				ids <- v.ID
				path := "/api/sessions/" + v.ID
				for range 3 {
					switch rng.IntN(4) {
					case 0, 1:
						h.Do("POST", path+"/input", map[string]string{"message": "hi"}, nil)
					case 2:
						h.Do("POST", path+"/cancel", nil, nil)
					case 3:
						h.Do("GET", path+"/status", nil, nil)
					}
				}
				if rng.IntN(2) == 0 {
					if r := h.Do("DELETE", path, nil, nil); r.Status != http.StatusOK {
						t.Errorf("delete: %d %s", r.Status, r.Body)
					}
				}
			}
		})
	}
	wg.Wait()
	close(ids)
	for id := range ids {
		h.Do("DELETE", "/api/sessions/"+id, nil, nil)
		v := h.WaitState(id, "stopped")
		if v.EndedAt == nil {
			t.Errorf("%s has no endedAt", id)
		}
		// Every turn that started also ended.
		st := testutil.OpenSSE(t, http.DefaultClient, h.URL("/api/sessions/"+id+"/stream"), h.AuthHeader())
		st.WaitEnd(t, apitest.Wait)
		busy, idle := 0, 0
		for _, e := range st.Events() {
			switch e.Type {
			case event.AgentBusy:
				busy++
			case event.AgentIdle:
				idle++
			}
		}
		if busy != idle {
			t.Errorf("%s: %d agent_busy but %d agent_idle", id, busy, idle)
		}
	}
	if n := h.Mgr.Running(); n != 0 {
		t.Errorf("%d sessions still running", n)
	}
	h.AssertNothingLeft()
}

// Server shutdown stops every sandbox and records the sessions as stopped.
func TestShutdownStopsSessions(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{})
	var ids []string
	for range 3 {
		ids = append(ids, h.AnthropicSession(fake, nil).ID)
	}
	for _, id := range ids {
		h.WaitState(id, "active")
	}
	h.Stop()
	h.AssertNothingLeft()
	h.Start()
	for _, id := range ids {
		v := h.WaitState(id, "stopped")
		st := h.Stream(id, strconv.FormatInt(v.LastEventID-1, 10))
		st.WaitEnd(t, apitest.Wait)
		if evs := st.Events(); len(evs) != 1 || evs[0].Type != event.Exit || !strings.Contains(evs[0].Field("reason"), "shutting down") {
			t.Fatalf("last event of %s: %s", id, testutil.Summary(evs))
		}
	}
}

// An idle stream gets comment lines so proxies keep it open.
func TestStreamHeartbeat(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{Heartbeat: 20 * time.Millisecond})
	s := h.AnthropicSession(fake, nil)
	st := h.Stream(s.ID, "")
	deadline := time.Now().Add(apitest.Wait)
	for st.Comments() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat comments")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A client resuming at the newest event is answered at once, not at the next
// event or heartbeat (the browser shows "connected" from the headers).
func TestStreamResumeAtNewestAnswersAtOnce(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{Heartbeat: time.Hour})
	s := h.AnthropicSession(fake, nil)
	v := h.WaitState(s.ID, "active")
	client := &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 20 * time.Second}}
	hdr := h.AuthHeader()
	hdr.Set("Last-Event-ID", strconv.FormatInt(v.LastEventID, 10))
	st := testutil.OpenSSE(t, client, h.URL("/api/sessions/"+s.ID+"/stream"), hdr)
	if n := len(st.Events()); n != 0 {
		t.Fatalf("resumed at the newest event but got %d events", n)
	}
}
