package nullclaw

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/agent/agenttest"
	"github.com/execlaw/execlaw/internal/agent/nullclaw/a2a"
	"github.com/execlaw/execlaw/internal/agent/nullclaw/nullclawtest"
)

const testToken = "tok-0123456789abcdef"

func newStandIn(t *testing.T) (*nullclawtest.Server, *a2a.Client) {
	t.Helper()
	srv := nullclawtest.New(t, testToken)
	t.Cleanup(func() {
		for _, v := range srv.Violations() {
			t.Errorf("stand-in saw a bad request: %s", v)
		}
	})
	return srv, a2a.NewClient(srv.URL, nil, testToken)
}

func mustRunTurn(t *testing.T, c *a2a.Client, rec *agenttest.Recorder, ctxID, text string) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := runTurn(ctx, c, rec, ctxID, text, turnOptions{})
	if err != nil {
		t.Fatalf("runTurn: %v", err)
	}
	return out
}

func TestStreamedTextBecomesDeltasAndMessage(t *testing.T) {
	srv, c := newStandIn(t)
	srv.Enqueue(func(tn *nullclawtest.Turn) {
		tn.Chunk("Hel")
		tn.Chunk("lo, ")
		tn.Chunk("wörld")
		tn.Complete()
	})
	rec := agenttest.NewRecorder(t)
	out := mustRunTurn(t, c, rec, "sess-1", "say hello")

	eqStrings(t, summary(rec.Events()), []string{
		"message_delta:Hel", "message_delta:lo, ", "message_delta:wörld", "message:Hello, wörld",
	})
	checkPairing(t, rec.Events())
	if out.State != a2a.StateCompleted || out.Err != nil || out.TaskID != "task-1" || out.ContextID != "sess-1" {
		t.Errorf("outcome %+v", out)
	}

	// The request, as the stand-in saw it.
	reqs := srv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	r := reqs[0]
	if r.RPCMethod != "message/stream" || r.Auth != "Bearer "+testToken || r.Path != "/a2a" {
		t.Errorf("request %s %s auth %q", r.RPCMethod, r.Path, r.Auth)
	}
	var p struct {
		Message struct {
			Kind, MessageID, Role, ContextID string
			Parts                            []struct{ Kind, Text string }
		}
	}
	if err := json.Unmarshal(r.Params, &p); err != nil {
		t.Fatal(err)
	}
	m := p.Message
	if m.Kind != "message" || m.Role != "user" || m.MessageID == "" || m.ContextID != "sess-1" ||
		len(m.Parts) != 1 || m.Parts[0].Kind != "text" || m.Parts[0].Text != "say hello" {
		t.Errorf("message %+v", m)
	}
	if st, _ := srv.TaskState("task-1"); st != "completed" {
		t.Errorf("stand-in task state %q", st)
	}
}

func TestToolHintsBecomeToolCallsWithResults(t *testing.T) {
	srv, c := newStandIn(t)
	srv.Enqueue(func(tn *nullclawtest.Turn) {
		tn.Chunk("Let me look.")
		tn.ToolHint("shell")
		tn.ToolHint("file_read")
		tn.Chunk("Found ")
		tn.Chunk("it.")
		tn.Complete()
	})
	rec := agenttest.NewRecorder(t)
	out := mustRunTurn(t, c, rec, "sess-1", "find it")

	eqStrings(t, summary(rec.Events()), []string{
		"message_delta:Let me look.", "message:Let me look.",
		"tool_call:shell", "tool_result:shell",
		"tool_call:file_read", "tool_result:file_read",
		"message_delta:Found ", "message_delta:it.", "message:Found it.",
	})
	checkPairing(t, rec.Events())
	evs := rec.Events()
	call, res := evs[2].Data, evs[3].Data
	if call["id"] != res["id"] || res["output"] != toolResultUnreported || res["isError"] != false {
		t.Errorf("tool call %v result %v", call, res)
	}
	if in, _ := json.Marshal(call["input"]); string(in) != "{}" {
		t.Errorf("tool input %s", in)
	}
	// Text blocks on either side of the tools are distinct messages.
	if evs[0].Data["messageId"] == evs[6].Data["messageId"] {
		t.Error("text after a tool call reused the message id")
	}
	if out.State != a2a.StateCompleted {
		t.Errorf("outcome %+v", out)
	}
}

func TestFailedTurnReportsError(t *testing.T) {
	srv, c := newStandIn(t)
	srv.Enqueue(func(tn *nullclawtest.Turn) {
		tn.Chunk("Working on")
		tn.ToolHint("shell")
		tn.Fail()
	})
	rec := agenttest.NewRecorder(t)
	out := mustRunTurn(t, c, rec, "sess-1", "do it")

	eqStrings(t, summary(rec.Events()), []string{
		"message_delta:Working on", "message:Working on",
		"tool_call:shell", "tool_result:shell!",
		"error_event:nullclaw: Agent processing failed (JSON-RPC error -32603)",
	})
	checkPairing(t, rec.Events())
	var re *a2a.RPCError
	if !errors.As(out.Err, &re) || re.Code != a2a.CodeInternalError {
		t.Errorf("outcome err %v", out.Err)
	}
	if st, _ := srv.TaskState("task-1"); st != "failed" {
		t.Errorf("stand-in task state %q", st)
	}
}

func TestCancelEndsTheTurn(t *testing.T) {
	srv, c := newStandIn(t)
	started := make(chan struct{})
	srv.Enqueue(func(tn *nullclawtest.Turn) {
		tn.Chunk("Starting a long job")
		tn.ToolHint("shell")
		close(started)
		if !tn.WaitCanceled(10 * time.Second) {
			t.Error("tasks/cancel never came")
		}
		// The interrupted turn returns; nullclaw keeps the task canceled and
		// says so in the final event.
		tn.Complete()
	})
	rec := agenttest.NewRecorder(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	out, err := runTurn(ctx, c, rec, "sess-1", "run forever", turnOptions{CancelGrace: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	eqStrings(t, summary(rec.Events()), []string{
		"message_delta:Starting a long job", "message:Starting a long job",
		"tool_call:shell", "tool_result:shell!",
	})
	checkPairing(t, rec.Events())
	if out.State != a2a.StateCanceled || out.Err != nil {
		t.Errorf("outcome %+v", out)
	}
	var cancelReq *nullclawtest.Request
	for _, r := range srv.Requests() {
		if r.RPCMethod == "tasks/cancel" {
			cancelReq = &r
		}
	}
	if cancelReq == nil {
		t.Fatal("no tasks/cancel request")
	}
	if string(cancelReq.Params) != `{"id":"task-1"}` || cancelReq.Auth != "Bearer "+testToken {
		t.Errorf("cancel params %s auth %q", cancelReq.Params, cancelReq.Auth)
	}
	if st, _ := srv.TaskState("task-1"); st != "canceled" {
		t.Errorf("stand-in task state %q", st)
	}
}

func TestCancelWithoutConfirmationGivesUp(t *testing.T) {
	srv, c := newStandIn(t)
	started := make(chan struct{})
	srv.Enqueue(func(tn *nullclawtest.Turn) {
		tn.Chunk("stuck")
		close(started)
		tn.WaitCanceled(10 * time.Second)
		// An agent that never returns: no final event until the client leaves.
		select {
		case <-tn.Gone():
		case <-tn.Stopped():
		}
	})
	rec := agenttest.NewRecorder(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	begin := time.Now()
	out, err := runTurn(ctx, c, rec, "sess-1", "hang", turnOptions{CancelGrace: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("gave up after %v", d)
	}
	// No error_event: the caller cancelled and reports it.
	eqStrings(t, summary(rec.Events()), []string{"message_delta:stuck", "message:stuck"})
	if out.State != a2a.StateWorking || out.Err != nil {
		t.Errorf("outcome %+v", out)
	}
}

func TestConversationKeepsContext(t *testing.T) {
	srv, c := newStandIn(t)
	rec := agenttest.NewRecorder(t)
	mustRunTurn(t, c, rec, "sess-7", "one")
	mustRunTurn(t, c, rec, "sess-7", "two")
	turns := srv.Turns()
	if len(turns) != 2 || turns[0].ContextID != "sess-7" || turns[1].ContextID != "sess-7" || turns[0].TaskID == turns[1].TaskID {
		t.Errorf("turns %+v %+v", turns[0], turns[1])
	}
	checkPairing(t, rec.Events())
}

func TestUnauthorized(t *testing.T) {
	srv := nullclawtest.New(t, testToken)
	c := a2a.NewClient(srv.URL, nil, "wrong-token-0000000")
	rec := agenttest.NewRecorder(t)
	out := mustRunTurn(t, c, rec, "sess-1", "hi")
	var he *a2a.HTTPError
	if !errors.As(out.Err, &he) || he.StatusCode != 401 || he.Message != "unauthorized" {
		t.Errorf("err %v", out.Err)
	}
	eqStrings(t, summary(rec.Events()), []string{"error_event:nullclaw gateway: HTTP 401: unauthorized"})
	if out.TaskID != "" {
		t.Errorf("outcome %+v", out)
	}
}

func TestEmitFailureStopsTheTurn(t *testing.T) {
	srv, c := newStandIn(t)
	srv.Enqueue(func(tn *nullclawtest.Turn) {
		for range 20 {
			tn.Chunk("x")
		}
		tn.Complete()
	})
	rec := agenttest.NewRecorder(t)
	rec.FailAt = 3
	out, err := runTurn(context.Background(), c, rec, "sess-1", "hi", turnOptions{})
	if !errors.Is(err, agenttest.ErrEmit) {
		t.Errorf("err %v, outcome %+v", err, out)
	}
	if n := len(rec.Events()); n != 2 {
		t.Errorf("%d events recorded", n)
	}
}

func TestIdleTimeout(t *testing.T) {
	srv, c := newStandIn(t)
	srv.Enqueue(func(tn *nullclawtest.Turn) {
		tn.Chunk("then silence")
		select {
		case <-tn.Gone():
		case <-tn.Stopped():
		}
	})
	c.IdleTimeout = 200 * time.Millisecond
	rec := agenttest.NewRecorder(t)
	out := mustRunTurn(t, c, rec, "sess-1", "hi")
	if !errors.Is(out.Err, a2a.ErrIdle) {
		t.Errorf("err %v", out.Err)
	}
	eqStrings(t, summary(rec.Events()), []string{
		"message_delta:then silence", "message:then silence",
		"error_event:nullclaw: no output for too long; the turn was abandoned",
	})
}

func TestAgentCard(t *testing.T) {
	// The stand-in answers discovery as nullclaw does (handleAgentCard).
	srv, _ := newStandIn(t)
	resp, err := http.Get(srv.URL + "/.well-known/agent-card.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var card struct {
		ProtocolVersion string `json:"protocolVersion"`
		Capabilities    struct{ Streaming bool }
	}
	if err := json.NewDecoder(resp.Body).Decode(&card); err != nil || card.ProtocolVersion != "0.3.0" || !card.Capabilities.Streaming {
		t.Errorf("card %+v (%v)", card, err)
	}
}

func TestUnstreamedReplyIsFetched(t *testing.T) {
	srv, c := newStandIn(t)
	srv.Enqueue(func(tn *nullclawtest.Turn) {
		tn.ToolHint("shell")
		tn.SetReply("the whole answer")
		tn.Complete()
	})
	rec := agenttest.NewRecorder(t)
	out := mustRunTurn(t, c, rec, "sess-1", "hi")
	eqStrings(t, summary(rec.Events()), []string{"tool_call:shell", "tool_result:shell",
		"message_delta:the whole answer", "message:the whole answer"})
	checkPairing(t, rec.Events())
	if out.State != a2a.StateCompleted || out.Err != nil {
		t.Errorf("outcome %+v", out)
	}
	last := srv.Requests()[len(srv.Requests())-1]
	if last.RPCMethod != "tasks/get" || string(last.Params) != `{"id":"task-1"}` {
		t.Errorf("last request %s %s", last.RPCMethod, last.Params)
	}
}

// What the stand-in executable sets: its own bearer check (paired token
// hashes) and a2a.enabled off.
func TestStandInOptions(t *testing.T) {
	serve := func(s *nullclawtest.Server) string {
		ts := httptest.NewServer(s)
		t.Cleanup(ts.Close)
		t.Cleanup(s.Close)
		return ts.URL
	}
	srv := nullclawtest.NewHandler("")
	told := make(chan string, 8)
	srv.OnViolation = func(v string) { told <- v }
	srv.Authorize = func(auth string) bool { return auth == "Bearer "+testToken }
	url := serve(srv)

	rec := agenttest.NewRecorder(t)
	mustRunTurn(t, a2a.NewClient(url, nil, testToken), rec, "sess-1", "hi")
	eqStrings(t, summary(rec.Events()), []string{"message_delta:ok", "message:ok"})

	rec = agenttest.NewRecorder(t)
	mustRunTurn(t, a2a.NewClient(url, nil, "other-token-000000"), rec, "sess-1", "hi")
	eqStrings(t, summary(rec.Events()), []string{"error_event:nullclaw gateway: HTTP 401: unauthorized"})
	select {
	case v := <-told:
		if !strings.Contains(v, "bearer token") || len(srv.Violations()) != 1 {
			t.Errorf("violation told %q, recorded %q", v, srv.Violations())
		}
	default:
		t.Error("the violation was not told")
	}

	off := nullclawtest.NewHandler(testToken)
	off.A2ADisabled = true
	rec = agenttest.NewRecorder(t)
	mustRunTurn(t, a2a.NewClient(serve(off), nil, testToken), rec, "sess-1", "hi")
	eqStrings(t, summary(rec.Events()), []string{"error_event:nullclaw gateway: HTTP 404: a2a not enabled"})
}
