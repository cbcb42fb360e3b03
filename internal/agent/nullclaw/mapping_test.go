package nullclaw

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/agent/agenttest"
)

func evTask(state TaskState, arts ...Artifact) Event {
	return Event{Kind: KindTask, Task: &Task{Kind: "task", ID: "t1", ContextID: "c1", Status: TaskStatus{State: state}, Artifacts: arts}}
}

func evArt(id, text string, appendTo, last bool) Event {
	return Event{Kind: KindArtifactUpdate, ArtifactUpdate: &TaskArtifactUpdateEvent{
		TaskID: "t1", ContextID: "c1", Append: appendTo, LastChunk: last,
		Artifact: Artifact{ArtifactID: id, Parts: []Part{{Kind: "text", Text: text}}},
	}}
}

func evStatus(state TaskState, msg string, final bool) Event {
	s := TaskStatus{State: state}
	if msg != "" {
		s.Message = &Message{Role: "agent", Parts: []Part{{Kind: "text", Text: msg}}}
	}
	return Event{Kind: KindStatusUpdate, StatusUpdate: &TaskStatusUpdateEvent{TaskID: "t1", ContextID: "c1", Status: s, Final: final}}
}

func mapAll(t *testing.T, lim MapperLimits, evs ...Event) (*agenttest.Recorder, Outcome) {
	t.Helper()
	rec := agenttest.NewRecorder(t)
	m := NewMapper(rec, lim)
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
	done := evStatus(StateCompleted, "", true)
	cases := []struct {
		name string
		evs  []Event
		want []string
	}{
		{"appended chunks", []Event{evTask(StateSubmitted), evArt("a", "ab", true, false), evArt("a", "cd", true, false), done},
			[]string{"message_delta:ab", "message_delta:cd", "message:abcd"}},
		{"cumulative re-sends give suffixes", []Event{evTask(StateSubmitted), evArt("a", "He", false, false), evArt("a", "Hello", false, false), evArt("a", "Hello!", false, false), done},
			[]string{"message_delta:He", "message_delta:llo", "message_delta:!", "message:Hello!"}},
		{"replacement starts a new block", []Event{evTask(StateSubmitted), evArt("a", "draft", false, false), evArt("a", "final", false, false), done},
			[]string{"message_delta:draft", "message:draft", "message_delta:final", "message:final"}},
		{"identical re-send is nothing", []Event{evTask(StateSubmitted), evArt("a", "same", false, false), evArt("a", "same", false, false), done},
			[]string{"message_delta:same", "message:same"}},
		{"lastChunk closes the block", []Event{evTask(StateSubmitted), evArt("a", "one", true, true), evArt("b", "two", true, true), done},
			[]string{"message_delta:one", "message:one", "message_delta:two", "message:two"}},
		{"empty chunks ignored", []Event{evTask(StateSubmitted), evArt("a", "", true, false), done}, nil},
		{"working status without hint ignored", []Event{evTask(StateSubmitted), evStatus(StateWorking, "thinking hard", false), done}, nil},
		{"finished task carries the reply", []Event{evTask(StateCompleted, Artifact{ArtifactID: "x", Parts: []Part{{Kind: "text", Text: "all "}, {Kind: "data", Data: []byte(`{}`)}, {Kind: "text", Text: "done"}}})},
			[]string{"message_delta:all done", "message:all done"}},
		{"message result", []Event{{Kind: KindMessage, Message: &Message{MessageID: "m", Role: "agent", Parts: []Part{{Kind: "text", Text: "direct"}}}}},
			[]string{"message_delta:direct", "message:direct"}},
		{"events after the final are ignored", []Event{evTask(StateSubmitted), done, evArt("a", "late", true, false), evStatus(StateFailed, "late", true)}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec, out := mapAll(t, MapperLimits{}, tc.evs...)
			eqStrings(t, summary(rec.Events()), tc.want)
			if out.State != StateCompleted || out.Err != nil {
				t.Errorf("outcome %+v", out)
			}
		})
	}
}

func TestMapTerminalStates(t *testing.T) {
	cases := []struct {
		name  string
		last  Event
		state TaskState
		want  []string
	}{
		{"failed with reason", evStatus(StateFailed, "provider said no", true), StateFailed,
			[]string{"message_delta:x", "message:x", "tool_call:shell", "tool_result:shell!", "error_event:nullclaw: the task failed: provider said no"}},
		{"failed without reason", evStatus(StateFailed, "", true), StateFailed,
			[]string{"message_delta:x", "message:x", "tool_call:shell", "tool_result:shell!", "error_event:nullclaw: the task failed"}},
		{"rejected", evStatus(StateRejected, "nope", true), StateRejected,
			[]string{"message_delta:x", "message:x", "tool_call:shell", "tool_result:shell!", "error_event:nullclaw rejected the task: nope"}},
		{"input required", evStatus(StateInputRequired, "which file?", true), StateInputRequired,
			[]string{"message_delta:x", "message:x", "tool_call:shell", "tool_result:shell!", "error_event:nullclaw stopped in state input-required, which ExeClaw cannot answer: which file?"}},
		{"canceled", evStatus(StateCanceled, "", true), StateCanceled,
			[]string{"message_delta:x", "message:x", "tool_call:shell", "tool_result:shell!"}},
		{"final but working", evStatus(StateWorking, "", true), StateWorking,
			[]string{"message_delta:x", "message:x", "tool_call:shell", "tool_result:shell!", `error_event:nullclaw: protocol violation: final status update in state "working"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec, out := mapAll(t, MapperLimits{}, evTask(StateSubmitted), evArt("a", "x", true, false), evStatus(StateWorking, ToolHintPrefix+"shell", false), tc.last)
			eqStrings(t, summary(rec.Events()), tc.want)
			if out.State != tc.state || (out.Err == nil) != (tc.state == StateCanceled) {
				t.Errorf("outcome %+v", out)
			}
		})
	}
}

func TestMapStreamProblems(t *testing.T) {
	rec := agenttest.NewRecorder(t)
	m := NewMapper(rec, MapperLimits{})
	m.Handle(evTask(StateSubmitted))
	m.Handle(evArt("a", "partial", true, false))
	m.Handle(evStatus(StateWorking, ToolHintPrefix+"shell", false))
	out, err := m.Finish(nil, false) // the stream ended with no final event
	if err != nil {
		t.Fatal(err)
	}
	eqStrings(t, summary(rec.Events()), []string{"message_delta:partial", "message:partial", "tool_call:shell",
		"tool_result:shell!", "error_event:nullclaw: the stream ended before the task finished"})
	if !errors.Is(out.Err, ErrStreamEnded) || out.State != StateWorking {
		t.Errorf("outcome %+v", out)
	}

	// Cut short by the caller: closed quietly.
	rec = agenttest.NewRecorder(t)
	m = NewMapper(rec, MapperLimits{})
	m.Handle(evTask(StateSubmitted))
	m.Handle(evArt("a", "partial", true, false))
	out, _ = m.Finish(errors.New("context canceled"), true)
	eqStrings(t, summary(rec.Events()), []string{"message_delta:partial", "message:partial"})
	if out.Err != nil {
		t.Errorf("outcome %+v", out)
	}

	// A failure is reported once even when Finish sees it again.
	rec = agenttest.NewRecorder(t)
	m = NewMapper(rec, MapperLimits{})
	m.Handle(evTask(StateSubmitted))
	m.Handle(evStatus(StateFailed, "boom", true))
	m.Finish(errors.New("later"), false)
	eqStrings(t, summary(rec.Events()), []string{"error_event:nullclaw: the task failed: boom"})
}

func TestMapBounds(t *testing.T) {
	// Text past the turn's limit is cut on a rune boundary with a marker.
	rec, out := mapAll(t, MapperLimits{MaxTurnTextBytes: 10},
		evTask(StateSubmitted), evArt("a", "12345678", true, false), evArt("a", "9é€xyz", true, false), evArt("a", "more", true, false), evStatus(StateCompleted, "", true))
	eqStrings(t, summary(rec.Events()), []string{"message_delta:12345678", "message_delta:9" + TruncationMarker, "message:123456789" + TruncationMarker})
	if !out.Truncated {
		t.Error("not marked truncated")
	}

	// Tool names are cleaned and bounded; calls beyond the limit dropped.
	hint := func(name string) Event { return evStatus(StateWorking, ToolHintPrefix+name, false) }
	rec, _ = mapAll(t, MapperLimits{MaxToolCalls: 3, MaxToolNameBytes: 8},
		evTask(StateSubmitted), hint("  "), hint("a\x1b[31m\nb"), hint(strings.Repeat("n", 50)), hint("dropped"), evStatus(StateCompleted, "", true))
	eqStrings(t, summary(rec.Events()), []string{"tool_call:unknown", "tool_result:unknown", "tool_call:a[31m b", "tool_result:a[31m b",
		"tool_call:nnnnnnnn…", "tool_result:nnnnnnnn…"})
}

func TestMapToolDuration(t *testing.T) {
	rec := agenttest.NewRecorder(t)
	m := NewMapper(rec, MapperLimits{})
	now := time.Unix(1000, 0)
	m.now = func() time.Time { return now }
	m.Handle(evTask(StateSubmitted))
	m.Handle(evStatus(StateWorking, ToolHintPrefix+"shell", false))
	now = now.Add(1500 * time.Millisecond)
	m.Handle(evArt("a", "done", true, false))
	m.Handle(evStatus(StateCompleted, "", true))
	m.Finish(nil, false)
	res := rec.Events()[1]
	if res.Data["durationMs"] != float64(1500) {
		t.Errorf("result %v", res.Data)
	}
}

func TestMapEmitFailure(t *testing.T) {
	rec := agenttest.NewRecorder(t)
	rec.FailAt = 2
	m := NewMapper(rec, MapperLimits{})
	m.Handle(evTask(StateSubmitted))
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
