package nullclaw

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/agent/agenttest"
	"github.com/execlaw/execlaw/internal/agent/nullclaw/a2a"
)

func evTask(state a2a.TaskState, arts ...a2a.Artifact) a2a.Event {
	return a2a.Event{Kind: a2a.KindTask, Task: &a2a.Task{Kind: "task", ID: "t1", ContextID: "c1", Status: a2a.TaskStatus{State: state}, Artifacts: arts}}
}

func evArt(id, text string, appendTo, last bool) a2a.Event {
	return a2a.Event{Kind: a2a.KindArtifactUpdate, ArtifactUpdate: &a2a.TaskArtifactUpdateEvent{
		TaskID: "t1", ContextID: "c1", Append: appendTo, LastChunk: last,
		Artifact: a2a.Artifact{ArtifactID: id, Parts: []a2a.Part{{Kind: "text", Text: text}}},
	}}
}

func evStatus(state a2a.TaskState, msg string, final bool) a2a.Event {
	s := a2a.TaskStatus{State: state}
	if msg != "" {
		s.Message = &a2a.Message{Role: "agent", Parts: []a2a.Part{{Kind: "text", Text: msg}}}
	}
	return a2a.Event{Kind: a2a.KindStatusUpdate, StatusUpdate: &a2a.TaskStatusUpdateEvent{TaskID: "t1", ContextID: "c1", Status: s, Final: final}}
}

func mapAll(t *testing.T, lim mapperLimits, evs ...a2a.Event) (*agenttest.Recorder, outcome) {
	t.Helper()
	rec := agenttest.NewRecorder(t)
	m := newMapper(rec, lim)
	for _, ev := range evs {
		if err := m.Handle(ev); err != nil {
			t.Fatal(err)
		}
	}
	out, err := m.Finish(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	checkPairing(t, rec.Events())
	return rec, out
}

func TestMapTextSemantics(t *testing.T) {
	done := evStatus(a2a.StateCompleted, "", true)
	cases := []struct {
		name string
		evs  []a2a.Event
		want []string
	}{
		{"appended chunks", []a2a.Event{evTask(a2a.StateSubmitted), evArt("a", "ab", true, false), evArt("a", "cd", true, false), done},
			[]string{"message_delta:ab", "message_delta:cd", "message:abcd"}},
		{"cumulative re-sends give suffixes", []a2a.Event{evTask(a2a.StateSubmitted), evArt("a", "He", false, false), evArt("a", "Hello", false, false), evArt("a", "Hello!", false, false), done},
			[]string{"message_delta:He", "message_delta:llo", "message_delta:!", "message:Hello!"}},
		{"replacement starts a new block", []a2a.Event{evTask(a2a.StateSubmitted), evArt("a", "draft", false, false), evArt("a", "final", false, false), done},
			[]string{"message_delta:draft", "message:draft", "message_delta:final", "message:final"}},
		{"identical re-send is nothing", []a2a.Event{evTask(a2a.StateSubmitted), evArt("a", "same", false, false), evArt("a", "same", false, false), done},
			[]string{"message_delta:same", "message:same"}},
		{"lastChunk closes the block", []a2a.Event{evTask(a2a.StateSubmitted), evArt("a", "one", true, true), evArt("b", "two", true, true), done},
			[]string{"message_delta:one", "message:one", "message_delta:two", "message:two"}},
		{"empty chunks ignored", []a2a.Event{evTask(a2a.StateSubmitted), evArt("a", "", true, false), done}, nil},
		{"working status without hint ignored", []a2a.Event{evTask(a2a.StateSubmitted), evStatus(a2a.StateWorking, "thinking hard", false), done}, nil},
		{"finished task carries the reply", []a2a.Event{evTask(a2a.StateCompleted, a2a.Artifact{ArtifactID: "x", Parts: []a2a.Part{{Kind: "text", Text: "all "}, {Kind: "data", Data: []byte(`{}`)}, {Kind: "text", Text: "done"}}})},
			[]string{"message_delta:all done", "message:all done"}},
		{"message result", []a2a.Event{{Kind: a2a.KindMessage, Message: &a2a.Message{MessageID: "m", Role: "agent", Parts: []a2a.Part{{Kind: "text", Text: "direct"}}}}},
			[]string{"message_delta:direct", "message:direct"}},
		{"events after the final are ignored", []a2a.Event{evTask(a2a.StateSubmitted), done, evArt("a", "late", true, false), evStatus(a2a.StateFailed, "late", true)}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec, out := mapAll(t, mapperLimits{}, tc.evs...)
			eqStrings(t, summary(rec.Events()), tc.want)
			if out.State != a2a.StateCompleted || out.Err != nil {
				t.Errorf("outcome %+v", out)
			}
		})
	}
}

func TestMapTerminalStates(t *testing.T) {
	cases := []struct {
		name  string
		last  a2a.Event
		state a2a.TaskState
		want  []string
	}{
		{"failed with reason", evStatus(a2a.StateFailed, "provider said no", true), a2a.StateFailed,
			[]string{"message_delta:x", "message:x", "tool_call:shell", "tool_result:shell!", "error_event:nullclaw: the task failed: provider said no"}},
		{"failed without reason", evStatus(a2a.StateFailed, "", true), a2a.StateFailed,
			[]string{"message_delta:x", "message:x", "tool_call:shell", "tool_result:shell!", "error_event:nullclaw: the task failed"}},
		{"rejected", evStatus(a2a.StateRejected, "nope", true), a2a.StateRejected,
			[]string{"message_delta:x", "message:x", "tool_call:shell", "tool_result:shell!", "error_event:nullclaw rejected the task: nope"}},
		{"input required", evStatus(a2a.StateInputRequired, "which file?", true), a2a.StateInputRequired,
			[]string{"message_delta:x", "message:x", "tool_call:shell", "tool_result:shell!", "error_event:nullclaw stopped in state input-required, which ExeClaw cannot answer: which file?"}},
		{"canceled", evStatus(a2a.StateCanceled, "", true), a2a.StateCanceled,
			[]string{"message_delta:x", "message:x", "tool_call:shell", "tool_result:shell!"}},
		{"final but working", evStatus(a2a.StateWorking, "", true), a2a.StateWorking,
			[]string{"message_delta:x", "message:x", "tool_call:shell", "tool_result:shell!", `error_event:nullclaw: protocol violation: final status update in state "working"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec, out := mapAll(t, mapperLimits{}, evTask(a2a.StateSubmitted), evArt("a", "x", true, false), evStatus(a2a.StateWorking, toolHintPrefix+"shell", false), tc.last)
			eqStrings(t, summary(rec.Events()), tc.want)
			if out.State != tc.state || (out.Err == nil) != (tc.state == a2a.StateCanceled) {
				t.Errorf("outcome %+v", out)
			}
		})
	}
}

func TestMapStreamProblems(t *testing.T) {
	rec := agenttest.NewRecorder(t)
	m := newMapper(rec, mapperLimits{})
	m.Handle(evTask(a2a.StateSubmitted))
	m.Handle(evArt("a", "partial", true, false))
	m.Handle(evStatus(a2a.StateWorking, toolHintPrefix+"shell", false))
	out, err := m.Finish(nil, false) // the stream ended with no final event
	if err != nil {
		t.Fatal(err)
	}
	eqStrings(t, summary(rec.Events()), []string{"message_delta:partial", "message:partial", "tool_call:shell",
		"tool_result:shell!", "error_event:nullclaw: the stream ended before the task finished"})
	if !errors.Is(out.Err, a2a.ErrStreamEnded) || out.State != a2a.StateWorking {
		t.Errorf("outcome %+v", out)
	}

	// Cut short by the caller: closed quietly.
	rec = agenttest.NewRecorder(t)
	m = newMapper(rec, mapperLimits{})
	m.Handle(evTask(a2a.StateSubmitted))
	m.Handle(evArt("a", "partial", true, false))
	out, _ = m.Finish(errors.New("context canceled"), true)
	eqStrings(t, summary(rec.Events()), []string{"message_delta:partial", "message:partial"})
	if out.Err != nil {
		t.Errorf("outcome %+v", out)
	}

	// A failure is reported once even when Finish sees it again.
	rec = agenttest.NewRecorder(t)
	m = newMapper(rec, mapperLimits{})
	m.Handle(evTask(a2a.StateSubmitted))
	m.Handle(evStatus(a2a.StateFailed, "boom", true))
	m.Finish(errors.New("later"), false)
	eqStrings(t, summary(rec.Events()), []string{"error_event:nullclaw: the task failed: boom"})
}

func TestMapBounds(t *testing.T) {
	// Text past the turn's limit is cut on a rune boundary with a marker.
	rec, out := mapAll(t, mapperLimits{MaxTurnTextBytes: 10},
		evTask(a2a.StateSubmitted), evArt("a", "12345678", true, false), evArt("a", "9é€xyz", true, false), evArt("a", "more", true, false), evStatus(a2a.StateCompleted, "", true))
	eqStrings(t, summary(rec.Events()), []string{"message_delta:12345678", "message_delta:9" + truncationMarker, "message:123456789" + truncationMarker})
	if !out.Truncated {
		t.Error("not marked truncated")
	}

	// Tool names are cleaned and bounded; calls beyond the limit dropped.
	hint := func(name string) a2a.Event { return evStatus(a2a.StateWorking, toolHintPrefix+name, false) }
	rec, _ = mapAll(t, mapperLimits{MaxToolCalls: 3, MaxToolNameBytes: 8},
		evTask(a2a.StateSubmitted), hint("  "), hint("a\x1b[31m\nb"), hint(strings.Repeat("n", 50)), hint("dropped"), evStatus(a2a.StateCompleted, "", true))
	eqStrings(t, summary(rec.Events()), []string{"tool_call:unknown", "tool_result:unknown", "tool_call:a[31m b", "tool_result:a[31m b",
		"tool_call:nnnnnnnn…", "tool_result:nnnnnnnn…"})
}

func TestMapToolDuration(t *testing.T) {
	rec := agenttest.NewRecorder(t)
	m := newMapper(rec, mapperLimits{})
	now := time.Unix(1000, 0)
	m.now = func() time.Time { return now }
	m.Handle(evTask(a2a.StateSubmitted))
	m.Handle(evStatus(a2a.StateWorking, toolHintPrefix+"shell", false))
	now = now.Add(1500 * time.Millisecond)
	m.Handle(evArt("a", "done", true, false))
	m.Handle(evStatus(a2a.StateCompleted, "", true))
	m.Finish(nil, false)
	res := rec.Events()[1]
	if res.Data["durationMs"] != float64(1500) {
		t.Errorf("result %v", res.Data)
	}
}

func TestMapEmitFailure(t *testing.T) {
	rec := agenttest.NewRecorder(t)
	rec.FailAt = 2
	m := newMapper(rec, mapperLimits{})
	m.Handle(evTask(a2a.StateSubmitted))
	if err := m.Handle(evArt("a", "x", true, false)); err != nil {
		t.Fatal(err)
	}
	if err := m.Handle(evArt("a", "y", true, false)); !errors.Is(err, agenttest.ErrEmit) {
		t.Fatalf("err %v", err)
	}
	if err := m.Handle(evArt("a", "z", true, false)); !errors.Is(err, agenttest.ErrEmit) {
		t.Fatalf("later err %v", err)
	}
	if _, err := m.Finish(nil, false); !errors.Is(err, agenttest.ErrEmit) {
		t.Fatalf("finish err %v", err)
	}
	if n := len(rec.Events()); n != 1 {
		t.Errorf("%d events", n)
	}
}
