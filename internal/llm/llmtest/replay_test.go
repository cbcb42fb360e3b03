package llmtest

import (
	"path/filepath"
	"strings"
	"testing"

	"charm.land/fantasy"
)

// TestReplay streams every recorded interaction through fantasy and gets
// back what was recorded.
func TestReplay(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(recordedDir, "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no cassettes")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			c, err := loadCassette(f)
			if err != nil {
				t.Fatal(err)
			}
			s, err := NewReplay(f)
			if err != nil {
				t.Fatal(err)
			}
			s.Attach(t)
			pc := providers[0]
			if strings.HasPrefix(filepath.Base(f), "TestOpenAI") {
				pc = providers[1]
			}
			m := pc.model(t, s)
			for i, in := range c.Interactions {
				want := recordedTurn(t, pc.name, parseSSE(t, in.Response.Body))
				r := collect(t, m, t.Context(), userCall("replay"))
				if r.err != nil {
					t.Fatalf("interaction %d: %v", i, r.err)
				}
				if r.text != want.Text || r.reasoning != want.Thinking || r.signature != want.Signature {
					t.Errorf("interaction %d: text %q reasoning %q signature %q\nwant %+v", i, r.text, r.reasoning, r.signature, want)
				}
				if len(r.calls) != len(want.ToolCalls) {
					t.Fatalf("interaction %d: %d tool calls, want %d", i, len(r.calls), len(want.ToolCalls))
				}
				for j, c := range r.calls {
					w := want.ToolCalls[j]
					if c.ID != w.ID || c.ToolCallName != w.Name || c.ToolCallInput != w.Input {
						t.Errorf("interaction %d call %d: %s %s %s, want %+v", i, j, c.ID, c.ToolCallName, c.ToolCallInput, w)
					}
				}
				wantFinish := fantasy.FinishReasonStop
				if len(want.ToolCalls) > 0 {
					wantFinish = fantasy.FinishReasonToolCalls
				}
				if r.finish == nil || r.finish.FinishReason != wantFinish || r.finish.Usage.OutputTokens != want.OutputTokens {
					t.Errorf("interaction %d: finish %+v, want %s with %d output tokens", i, r.finish, wantFinish, want.OutputTokens)
				}
			}
			// Past the recording, scripted turns take over.
			s.Enqueue(Turn{Text: "scripted"})
			if r := collect(t, m, t.Context(), userCall("more")); r.err != nil || r.text != "scripted" {
				t.Errorf("after the recording: %+v", r)
			}
		})
	}
}

func TestReplayErrors(t *testing.T) {
	if _, err := NewReplay(filepath.Join(recordedDir, "missing.yaml")); err == nil {
		t.Error("missing cassette accepted")
	}
	if _, err := NewReplay(filepath.Join(recordedDir, "README.md")); err == nil {
		t.Error("non-cassette accepted")
	}
}
