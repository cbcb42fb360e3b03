package a2a

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/agent/nullclaw/nullclawtest"
)

// The client against the stand-in gateway: requests as nullclaw reads them,
// the task methods, and requests refused before anything is sent. Whole
// turns, events mapped, are tested in package nullclaw.

const testToken = "tok-0123456789abcdef"

func newStandIn(t *testing.T) (*nullclawtest.Server, *Client) {
	t.Helper()
	srv := nullclawtest.New(t, testToken)
	t.Cleanup(func() {
		for _, v := range srv.Violations() {
			t.Errorf("stand-in saw a bad request: %s", v)
		}
	})
	return srv, NewClient(srv.URL, nil, testToken)
}

// streamTurn runs one message/stream call to its final event.
func streamTurn(t *testing.T, c *Client, ctxID, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Stream(ctx, ctxID, text, func(Event) error { return nil }); err != nil {
		t.Fatalf("Stream: %v", err)
	}
}

func TestCancelDirect(t *testing.T) {
	srv, c := newStandIn(t)
	srv.Enqueue(func(tn *nullclawtest.Turn) { tn.Chunk("done"); tn.Complete() })
	streamTurn(t, c, "sess-1", "x")
	ctx := context.Background()

	err := c.Cancel(ctx, "task-1")
	if !IsNotCancelable(err) {
		t.Errorf("cancel of a completed task: %v", err)
	}
	if err := c.Cancel(ctx, "task-99"); !IsNotCancelable(err) {
		t.Errorf("cancel of an unknown task: %v", err)
	}
	if err := c.Cancel(ctx, "bad\nid"); !errors.Is(err, ErrRequest) {
		t.Errorf("cancel with a bad id: %v", err)
	}
	task, err := c.GetTask(ctx, "task-1")
	if err != nil {
		t.Fatal(err)
	}
	if task.Status.State != StateCompleted || len(task.Artifacts) != 1 || partsText(task.Artifacts[0].Parts) != "done" ||
		len(task.History) != 2 || task.History[0].Text() != "x" {
		t.Errorf("task %+v", task)
	}
	if err := c.Health(ctx); err != nil {
		t.Errorf("health: %v", err)
	}
}

func TestTextReachesNullclawWithFewestEscapes(t *testing.T) {
	srv, c := newStandIn(t)
	text := `if a < b && c > d { print("x") }` + "\nnext line ✓"
	streamTurn(t, c, "sess-1", text)
	tn := srv.Turns()[0]
	if tn.Text != text {
		t.Errorf("decoded text %q", tn.Text)
	}
	// nullclaw does not unescape: only what JSON requires is escaped.
	want := `if a < b && c > d { print(\"x\") }\nnext line ✓`
	if tn.RawText != want {
		t.Errorf("nullclaw would see %q, want %q", tn.RawText, want)
	}
}

func TestRequestValidation(t *testing.T) {
	srv, c := newStandIn(t)
	ctx := context.Background()
	on := func(Event) error { return nil }
	if err := c.Stream(ctx, "bad context id", "hi", on); !errors.Is(err, ErrRequest) {
		t.Errorf("bad context id: %v", err)
	}
	if err := c.Stream(ctx, "ok", "", on); !errors.Is(err, ErrRequest) {
		t.Errorf("empty text: %v", err)
	}
	if err := c.Stream(ctx, "ok", "bad \xff utf8", on); !errors.Is(err, ErrRequest) {
		t.Errorf("invalid UTF-8: %v", err)
	}
	if err := c.Stream(ctx, "ok", strings.Repeat("x", 70<<10), on); !errors.Is(err, ErrRequest) {
		t.Errorf("oversized: %v", err)
	}
	if n := len(srv.Requests()); n != 0 {
		t.Errorf("%d requests sent", n)
	}
	for _, u := range []string{"", "ftp://x", "http://", "http://h/?q=1", "://bad"} {
		if err := NewClient(u, nil, "").Stream(ctx, "", "hi", on); !errors.Is(err, ErrRequest) {
			t.Errorf("base URL %q: %v", u, err)
		}
	}
	if got := NewClient("http://127.0.0.1:3000/", nil, "").Endpoint(); got != "http://127.0.0.1:3000/a2a" {
		t.Errorf("endpoint %q", got)
	}
	if got := NewClient("http://127.0.0.1:3000/a2a", nil, "").Endpoint(); got != "http://127.0.0.1:3000/a2a" {
		t.Errorf("endpoint %q", got)
	}
}
