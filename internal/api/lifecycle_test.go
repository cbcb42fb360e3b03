package api_test

import (
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/testutil"
)

// guestPIDs lists host processes whose command line mentions dir: the
// sandboxes of one harness.
func guestPIDs(dir string) []int {
	var pids []int
	entries, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range entries {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), dir) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			pids = append(pids, pid)
		}
	}
	return pids
}

// assertNothingLeft checks that no sandbox process or directory of this
// harness remains.
func (h *harness) assertNothingLeft() {
	h.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		pids := guestPIDs(h.dataDir)
		entries, _ := os.ReadDir(filepath.Join(h.dataDir, "sandboxes"))
		if len(pids) == 0 && len(entries) == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("left behind: processes %v, sandbox directories %d", pids, len(entries))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIdleReaper(t *testing.T) {
	gate := make(chan struct{})
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "working on it", Gate: gate}).Attach(t)
	h := newHarness(t, harnessOptions{})
	idle := h.anthropicSession(fake, map[string]any{"idleTimeoutMin": 5})
	busy := h.anthropicSession(fake, map[string]any{"idleTimeoutMin": 5})
	h.waitState(idle.ID, "active")
	h.waitState(busy.ID, "active")
	bst := h.stream(busy.ID, "")
	h.input(busy.ID, "long job")
	bst.WaitType(t, wait, event.MessageDelta, 1)

	h.mgr.ReapIdle(time.Now().Add(4 * time.Minute))
	if v := h.waitState(idle.ID, "active"); v.State != "active" {
		t.Fatal("reaped before its timeout")
	}
	st := h.stream(idle.ID, "")
	h.mgr.ReapIdle(time.Now().Add(6 * time.Minute))
	exit := st.WaitType(t, wait, event.Exit, 1)
	if !strings.Contains(exit.Field("reason"), "idle timeout") {
		t.Fatalf("exit reason: %s", exit.Data)
	}
	h.waitState(idle.ID, "stopped")
	// A session in the middle of a turn is not idle.
	if v := h.waitState(busy.ID, "busy"); v.State != "busy" {
		t.Fatal("busy session was reaped")
	}
	close(gate)
	bst.WaitType(t, wait, event.AgentIdle, 1)
}

func TestSessionLimits(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := newHarness(t, harnessOptions{maxSessions: 2})
	a := h.anthropicSession(fake, nil)
	h.anthropicSession(fake, nil)
	r := h.do("POST", "/api/sessions", map[string]any{"provider": "anthropic", "apiKey": "k", "model": "claude-sonnet-4-20250514"}, nil)
	if r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "at most 2 sessions") {
		t.Fatalf("third session: %d %s", r.status, r.body)
	}
	h.must(http.StatusOK, "DELETE", "/api/sessions/"+a.ID, nil)
	h.anthropicSession(fake, nil)

	// Memory: with the limit set below what the host already uses, a new
	// session is refused with the figures in the message.
	m := newHarness(t, harnessOptions{memPercent: 0.1})
	r = m.do("POST", "/api/sessions", map[string]any{"provider": "anthropic", "apiKey": "k", "model": "claude-sonnet-4-20250514"}, nil)
	if r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "not enough host memory") || !strings.Contains(string(r.body), "MiB") {
		t.Fatalf("memory gate: %d %s", r.status, r.body)
	}
}

// A sandbox that dies on its own turns the session into an error, with an
// exit event, and everything it held is freed.
func TestSandboxCrash(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := newHarness(t, harnessOptions{})
	s := h.anthropicSession(fake, nil)
	h.waitState(s.ID, "active")
	st := h.stream(s.ID, "")
	pids := guestPIDs(filepath.Join(h.dataDir, "sandboxes", s.ID))
	if len(pids) == 0 {
		t.Fatal("no guest process found")
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	exit := st.WaitType(t, wait, event.Exit, 1)
	if exit.Field("code") == "0" || !strings.Contains(exit.Field("reason"), "unexpectedly") {
		t.Fatalf("exit after crash: %s", exit.Data)
	}
	v := h.waitState(s.ID, "error")
	if !strings.Contains(v.Error, "unexpectedly") {
		t.Errorf("error field: %q", v.Error)
	}
	st.WaitEnd(t, wait)
	h.assertNothingLeft()
	if r := h.do("POST", "/api/sessions/"+s.ID+"/input", map[string]string{"message": "hi"}, nil); r.status != http.StatusConflict {
		t.Fatalf("input to a crashed session: %d %s", r.status, r.body)
	}
}

// DELETE in the middle of a turn ends the turn, stops the sandbox and
// removes its files; the transcript stays readable.
func TestDeleteDuringTurn(t *testing.T) {
	gate := make(chan struct{})
	defer close(gate)
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "never finished", Gate: gate}).Attach(t)
	h := newHarness(t, harnessOptions{})
	s := h.anthropicSession(fake, nil)
	st := h.stream(s.ID, "")
	h.input(s.ID, "go")
	st.WaitType(t, wait, event.MessageDelta, 1)
	h.must(http.StatusOK, "DELETE", "/api/sessions/"+s.ID, nil)
	st.WaitEnd(t, wait)
	events := st.Events()
	idle, exit := indexOf(events, event.AgentIdle, 0), indexOf(events, event.Exit, 0)
	if idle < 0 || exit < idle || exit != len(events)-1 {
		t.Fatalf("want agent_idle then exit last: %v", types(events))
	}
	if v := h.waitState(s.ID, "stopped"); v.EndedAt == nil {
		t.Fatal("no endedAt")
	}
	h.assertNothingLeft()
	h.must(http.StatusOK, "DELETE", "/api/sessions/"+s.ID, nil) // idempotent
	md := h.must(http.StatusOK, "GET", "/api/sessions/"+s.ID+"/transcript", nil)
	if !strings.Contains(string(md.body), "## User\n\ngo") || !strings.Contains(string(md.body), "ended by the user") {
		t.Fatalf("transcript after delete:\n%s", md.body)
	}
}

// Deleting a session while it boots leaves nothing behind.
func TestDeleteDuringBoot(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := newHarness(t, harnessOptions{})
	for range 5 {
		s := h.anthropicSession(fake, nil)
		h.must(http.StatusOK, "DELETE", "/api/sessions/"+s.ID, nil)
		h.waitState(s.ID, "stopped")
	}
	h.assertNothingLeft()
}

// Create, input, cancel and delete racing each other: no deadlock, no orphan
// process or directory, every session ends in a final state.
func TestConcurrentLifecycle(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	for range 200 {
		fake.Enqueue(llmtest.Turn{Text: "ok", ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"sleep 0.05; echo hi"}`}}},
			llmtest.Turn{Text: "done"})
	}
	h := newHarness(t, harnessOptions{maxSessions: 50})
	var wg sync.WaitGroup
	ids := make(chan string, 100)
	for w := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range 4 {
				var v session.View
				r := h.do("POST", "/api/sessions", map[string]any{"provider": "anthropic", "apiKey": "k",
					"model": "claude-sonnet-4-20250514", "baseUrl": fake.BaseURL()}, nil)
				if r.status != http.StatusCreated {
					t.Errorf("create: %d %s", r.status, r.body)
					return
				}
				r.json(t, &v)
				ids <- v.ID
				path := "/api/sessions/" + v.ID
				for range 3 {
					switch rng.IntN(4) {
					case 0, 1:
						h.do("POST", path+"/input", map[string]string{"message": "hi"}, nil)
					case 2:
						h.do("POST", path+"/cancel", nil, nil)
					case 3:
						h.do("GET", path+"/status", nil, nil)
					}
				}
				if rng.IntN(2) == 0 {
					if r := h.do("DELETE", path, nil, nil); r.status != http.StatusOK {
						t.Errorf("delete: %d %s", r.status, r.body)
					}
				}
			}
		})
	}
	wg.Wait()
	close(ids)
	for id := range ids {
		h.do("DELETE", "/api/sessions/"+id, nil, nil)
		v := h.waitState(id, "stopped")
		if v.EndedAt == nil {
			t.Errorf("%s has no endedAt", id)
		}
		// Every turn that started also ended.
		st := testutil.OpenSSE(t, http.DefaultClient, h.url("/api/sessions/"+id+"/stream"), h.authHeader())
		st.WaitEnd(t, wait)
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
	if n := h.mgr.Running(); n != 0 {
		t.Errorf("%d sessions still running", n)
	}
	h.assertNothingLeft()
}

// Server shutdown stops every sandbox and records the sessions as stopped.
func TestShutdownStopsSessions(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := newHarness(t, harnessOptions{})
	var ids []string
	for range 3 {
		ids = append(ids, h.anthropicSession(fake, nil).ID)
	}
	for _, id := range ids {
		h.waitState(id, "active")
	}
	h.stop()
	h.assertNothingLeft()
	h.start()
	for _, id := range ids {
		v := h.waitState(id, "stopped")
		st := h.stream(id, strconv.FormatInt(v.LastEventID-1, 10))
		st.WaitEnd(t, wait)
		if evs := st.Events(); len(evs) != 1 || evs[0].Type != event.Exit || !strings.Contains(evs[0].Field("reason"), "shutting down") {
			t.Fatalf("last event of %s: %s", id, testutil.Summary(evs))
		}
	}
}

// An idle stream gets comment lines so proxies keep it open.
func TestStreamHeartbeat(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := newHarness(t, harnessOptions{heartbeat: 20 * time.Millisecond})
	s := h.anthropicSession(fake, nil)
	st := h.stream(s.ID, "")
	deadline := time.Now().Add(wait)
	for st.Comments() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat comments")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
