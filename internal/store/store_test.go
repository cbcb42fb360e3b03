package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// open opens a fresh database in a test directory and closes it at cleanup.
func open(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "execlaw.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func session(id, user string, created time.Time) Session {
	return Session{
		ID: id, UserID: user, Name: "name of " + id, State: "creating",
		Provider: "anthropic", Model: "claude-sonnet-4-20250514", Agent: "builtin",
		Sandbox: "qemu-tcg", Isolated: true, Config: json.RawMessage(`{"network":"full"}`),
		CreatedAt: created, LastActivity: created, IdleTimeoutMin: 4320,
	}
}

// create records the user (if new) and the session.
func create(t *testing.T, s *Store, ss Session) {
	t.Helper()
	ctx := t.Context()
	if err := s.EnsureUser(ctx, ss.UserID, ss.UserID+"@example.com"); err != nil {
		t.Fatalf("EnsureUser: %v", err)
	}
	if err := s.CreateSession(ctx, ss); err != nil {
		t.Fatalf("CreateSession %s: %v", ss.ID, err)
	}
}

func ev(id string, seq int64, typ, data string) Event {
	return Event{SessionID: id, Seq: seq, Type: typ, Data: json.RawMessage(data), Time: t0.Add(time.Duration(seq) * time.Millisecond)}
}

func seqs(es []Event) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func ids(ss []Session) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.ID
	}
	return out
}

func TestOpenTwiceIsIdempotent(t *testing.T) {
	s, path := open(t)
	ctx := t.Context()
	create(t, s, session("s1", "u1", t0))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for i := 0; i < 2; i++ {
		s2, err := Open(ctx, path)
		if err != nil {
			t.Fatalf("reopen %d: %v", i, err)
		}
		var versions int
		if err := s2.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&versions); err != nil {
			t.Fatal(err)
		}
		if versions != len(migrations) {
			t.Errorf("reopen %d: %d migrations recorded, want %d (each applied once)", i, versions, len(migrations))
		}
		if _, err := s2.GetSession(ctx, "s1"); err != nil {
			t.Errorf("reopen %d: session lost: %v", i, err)
		}
		s2.Close()
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	s, path := open(t)
	ctx := t.Context()
	future := len(migrations) + 5
	if _, err := s.db.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, future, now()); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s2, err := Open(ctx, path)
	if err == nil {
		s2.Close()
		t.Fatal("Open accepted a database with a newer schema than it knows")
	}
	for _, want := range []string{"newer", fmt.Sprint(future), fmt.Sprint(len(migrations))} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestDatabaseFilesArePrivate(t *testing.T) {
	s, path := open(t)
	ctx := t.Context()
	// Write something so SQLite has created its WAL and shared-memory files.
	create(t, s, session("s1", "u1", t0))
	if err := s.AppendEvent(ctx, ev("s1", 1, "status", `{"state":"creating"}`)); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) && p != path {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		checked++
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s has mode %v; want no access for group or others (0600)", filepath.Base(p), perm)
		}
	}
	if checked < 2 {
		t.Errorf("expected a WAL file next to the database in WAL mode; checked %d files", checked)
	}
	// A directory Open has to create is private too.
	nested := filepath.Join(t.TempDir(), "data", "db", "execlaw.db")
	s2, err := Open(ctx, nested)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
	fi, err := os.Stat(filepath.Dir(nested))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("created database directory has mode %v, want 0700", perm)
	}
}

func TestEventsAppendAndReadBack(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	create(t, s, session("s1", "u1", t0))
	create(t, s, session("s2", "u1", t0))

	for seq := int64(1); seq <= 10; seq++ {
		if err := s.AppendEvent(ctx, ev("s1", seq, "message_delta", fmt.Sprintf(`{"text":"part %d"}`, seq))); err != nil {
			t.Fatalf("append %d: %v", seq, err)
		}
	}
	// Another session's events never show up in s1's log.
	if err := s.AppendEvent(ctx, ev("s2", 1, "status", `{}`)); err != nil {
		t.Fatal(err)
	}

	all, err := s.Events(ctx, "s1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(seqs(all)); got != "[1 2 3 4 5 6 7 8 9 10]" {
		t.Fatalf("all events: seqs %s", got)
	}
	e := all[2]
	if e.SessionID != "s1" || e.Type != "message_delta" || string(e.Data) != `{"text":"part 3"}` ||
		!e.Time.Equal(t0.Add(3*time.Millisecond)) {
		t.Errorf("event 3 read back as %+v", e)
	}

	cases := []struct {
		after int64
		limit int
		want  string
	}{
		{0, 3, "[1 2 3]"},
		{3, 3, "[4 5 6]"},
		{8, 5, "[9 10]"},
		{7, -1, "[8 9 10]"},
		{10, 0, "[]"},
		{99, 0, "[]"},
	}
	for _, c := range cases {
		got, err := s.Events(ctx, "s1", c.after, c.limit)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(seqs(got)) != c.want {
			t.Errorf("Events(after=%d, limit=%d) = %v, want %s", c.after, c.limit, seqs(got), c.want)
		}
	}

	last, err := s.LastSeq(ctx, "s1")
	if err != nil || last != 10 {
		t.Errorf("LastSeq(s1) = %d, %v; want 10", last, err)
	}
	if last, err := s.LastSeq(ctx, "nobody"); err != nil || last != 0 {
		t.Errorf("LastSeq(unknown) = %d, %v; want 0", last, err)
	}
}

func TestDuplicateSeqIsRefusedNotOverwritten(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	create(t, s, session("s1", "u1", t0))
	if err := s.AppendEvent(ctx, ev("s1", 1, "user_message", `{"content":"original"}`)); err != nil {
		t.Fatal(err)
	}
	err := s.AppendEvent(ctx, ev("s1", 1, "user_message", `{"content":"rewritten"}`))
	if err == nil {
		t.Fatal("a second event with the same seq was accepted")
	}
	got, err := s.Events(ctx, "s1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || string(got[0].Data) != `{"content":"original"}` {
		t.Errorf("log after the refused duplicate: %+v", got)
	}
}

func TestEventsNeedAnExistingSession(t *testing.T) {
	s, _ := open(t)
	if err := s.AppendEvent(t.Context(), ev("ghost", 1, "status", `{}`)); err == nil {
		t.Error("an event for a session that does not exist was accepted (foreign keys off?)")
	}
}

func TestSessionsCreateGetList(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	a := session("a", "alice", t0)
	create(t, s, a)
	create(t, s, session("b", "bob", t0.Add(time.Second)))
	create(t, s, session("c", "alice", t0.Add(2*time.Second)))

	got, err := s.GetSession(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != a.ID || got.UserID != a.UserID || got.Name != a.Name || got.State != a.State ||
		got.Provider != a.Provider || got.Model != a.Model || got.Agent != a.Agent || got.Sandbox != a.Sandbox ||
		got.Isolated != a.Isolated || string(got.Config) != string(a.Config) || !got.CreatedAt.Equal(a.CreatedAt) ||
		!got.LastActivity.Equal(a.LastActivity) || !got.EndedAt.IsZero() || got.IdleTimeoutMin != a.IdleTimeoutMin ||
		got.Usage != (Usage{}) || got.Error != "" {
		t.Errorf("GetSession = %+v\nwant       %+v", got, a)
	}

	if _, err := s.GetSession(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetSession(unknown) error = %v, want ErrNotFound", err)
	}
	if err := s.CreateSession(ctx, session("a", "alice", t0)); err == nil {
		t.Error("a second session with the same id was accepted")
	}

	alice, err := s.ListSessions(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ids(alice)) != "[c a]" {
		t.Errorf("alice's sessions = %v, want [c a] (her own, newest first)", ids(alice))
	}
	if none, err := s.ListSessions(ctx, "carol"); err != nil || len(none) != 0 {
		t.Errorf("carol's sessions = %v, %v; want none", ids(none), err)
	}

	all, err := s.ListSessionIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || !all["a"] || !all["b"] || !all["c"] {
		t.Errorf("ListSessionIDs = %v", all)
	}
}

// Sessions created within the same second must still list newest first;
// stored times have to sort as strings the way they sort as times.
func TestListSessionsOrdersWithinOneSecond(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	offsets := []time.Duration{0, 100 * time.Millisecond, 120 * time.Millisecond, 500 * time.Millisecond, 999 * time.Millisecond}
	for i, d := range offsets {
		create(t, s, session(fmt.Sprintf("s%d", i), "u", t0.Add(d)))
	}
	list, err := s.ListSessions(ctx, "u")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ids(list)); got != "[s4 s3 s2 s1 s0]" {
		t.Errorf("ListSessions = %s, want [s4 s3 s2 s1 s0] (newest first)", got)
	}
	unfinished, err := s.ListUnfinished(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ids(unfinished)); got != "[s0 s1 s2 s3 s4]" {
		t.Errorf("ListUnfinished = %s, want [s0 s1 s2 s3 s4] (oldest first)", got)
	}
}

func TestSetStateAndListUnfinished(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	for i, id := range []string{"creating", "active", "busy", "stopped", "failed"} {
		create(t, s, session(id, "u", t0.Add(time.Duration(i)*time.Second)))
	}
	set := func(id, state, msg string) {
		t.Helper()
		if err := s.SetState(ctx, id, state, msg); err != nil {
			t.Fatal(err)
		}
	}
	get := func(id string) Session {
		t.Helper()
		ss, err := s.GetSession(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return ss
	}

	set("active", "active", "")
	set("busy", "busy", "")
	before := time.Now().Add(-time.Second)
	set("stopped", "stopped", "")
	set("failed", "error", "VM did not boot")

	if a := get("active"); a.State != "active" || !a.EndedAt.IsZero() || a.Error != "" {
		t.Errorf("active session: state %q, endedAt %v, error %q", a.State, a.EndedAt, a.Error)
	}
	st := get("stopped")
	if st.State != "stopped" || st.EndedAt.Before(before) || st.EndedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("stopped session: state %q, endedAt %v (want about now)", st.State, st.EndedAt)
	}
	f := get("failed")
	if f.State != "error" || f.EndedAt.IsZero() || f.Error != "VM did not boot" {
		t.Errorf("failed session: state %q, endedAt %v, error %q", f.State, f.EndedAt, f.Error)
	}

	// A later state change without a message keeps the error already recorded.
	set("failed", "error", "")
	if f := get("failed"); f.Error != "VM did not boot" {
		t.Errorf("error message after a second SetState without one: %q", f.Error)
	}
	// An error on a running session is kept without ending it.
	set("busy", "active", "rate limited, retrying")
	if b := get("busy"); b.State != "active" || !b.EndedAt.IsZero() || b.Error != "rate limited, retrying" {
		t.Errorf("non-final state with a message: %+v", b)
	}

	unfinished, err := s.ListUnfinished(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ids(unfinished)); got != "[creating active busy]" {
		t.Errorf("ListUnfinished = %s, want [creating active busy]", got)
	}

	if err := s.Touch(ctx, "active", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if a := get("active"); !a.LastActivity.Equal(t0.Add(time.Hour)) {
		t.Errorf("LastActivity after Touch = %v", a.LastActivity)
	}
	if err := s.Rename(ctx, "active", "renamed"); err != nil {
		t.Fatal(err)
	}
	if a := get("active"); a.Name != "renamed" {
		t.Errorf("name after Rename = %q", a.Name)
	}
}

func TestUsage(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	create(t, s, session("s1", "u", t0))

	total := Usage{}.Add(Usage{100, 20, 0.001}).Add(Usage{50, 5, 0.0005})
	if total.InputTokens != 150 || total.OutputTokens != 25 || total.CostUSD < 0.00149 || total.CostUSD > 0.00151 {
		t.Errorf("Add = %+v", total)
	}
	if err := s.SetUsage(ctx, "s1", total); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSession(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Usage != total {
		t.Errorf("usage read back = %+v, want %+v", got.Usage, total)
	}
}

func TestMessages(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	create(t, s, session("s1", "u", t0))
	create(t, s, session("s2", "u", t0))

	if err := s.AppendMessages(ctx, "s1", 0, []json.RawMessage{
		json.RawMessage(`{"role":"user","content":"hi"}`),
		json.RawMessage(`{"role":"assistant","content":"hello"}`),
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendMessages(ctx, "s1", 2, []json.RawMessage{json.RawMessage(`{"role":"user","content":"again"}`)}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendMessages(ctx, "s2", 0, []json.RawMessage{json.RawMessage(`{"other":true}`)}); err != nil {
		t.Fatal(err)
	}

	// Overlapping positions fail as a whole: the new message at 3 is not kept either.
	err := s.AppendMessages(ctx, "s1", 2, []json.RawMessage{json.RawMessage(`{"dup":1}`), json.RawMessage(`{"dup":2}`)})
	if err == nil {
		t.Error("messages at positions already taken were accepted")
	}

	got, err := s.Messages(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`{"role":"user","content":"hi"}`, `{"role":"assistant","content":"hello"}`, `{"role":"user","content":"again"}`}
	if len(got) != len(want) {
		t.Fatalf("Messages = %s, want %d messages", got, len(want))
	}
	for i := range want {
		if string(got[i]) != want[i] {
			t.Errorf("message %d = %s, want %s", i, got[i], want[i])
		}
	}
	if none, err := s.Messages(ctx, "nobody"); err != nil || len(none) != 0 {
		t.Errorf("Messages(unknown) = %s, %v", none, err)
	}
}

func TestConcurrentAppendEvent(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	const sessions, perSession = 8, 50
	for i := 0; i < sessions; i++ {
		create(t, s, session(fmt.Sprintf("s%d", i), "u", t0))
	}

	var wg sync.WaitGroup
	errs := make(chan error, sessions*perSession)
	for i := 0; i < sessions; i++ {
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			for seq := int64(1); seq <= perSession; seq++ {
				if err := s.AppendEvent(ctx, ev(id, seq, "message_delta", fmt.Sprintf(`{"text":"%s-%d"}`, id, seq))); err != nil {
					errs <- err
					return
				}
				if seq%10 == 0 { // readers run alongside the writers
					if _, err := s.Events(ctx, id, seq-10, 0); err != nil {
						errs <- err
						return
					}
				}
			}
		}(fmt.Sprintf("s%d", i))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	for i := 0; i < sessions; i++ {
		id := fmt.Sprintf("s%d", i)
		got, err := s.Events(ctx, id, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != perSession {
			t.Fatalf("%s has %d events, want %d", id, len(got), perSession)
		}
		for j, e := range got {
			if e.Seq != int64(j+1) || string(e.Data) != fmt.Sprintf(`{"text":"%s-%d"}`, id, j+1) {
				t.Fatalf("%s event %d = seq %d %s", id, j, e.Seq, e.Data)
			}
		}
	}
}

func TestDataSurvivesReopen(t *testing.T) {
	s, path := open(t)
	ctx := context.Background()
	create(t, s, session("s1", "u", t0))
	if err := s.AppendEvent(ctx, ev("s1", 1, "user_message", `{"content":"persist me"}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendMessages(ctx, "s1", 0, []json.RawMessage{json.RawMessage(`{"m":1}`)}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUsage(ctx, "s1", Usage{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetState(ctx, "s1", "stopped", "bye"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	ss, err := s2.GetSession(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if ss.State != "stopped" || ss.Error != "bye" || ss.Usage != (Usage{1, 2, 3}) || ss.EndedAt.IsZero() {
		t.Errorf("session after reopen: %+v", ss)
	}
	evs, err := s2.Events(ctx, "s1", 0, 0)
	if err != nil || len(evs) != 1 || string(evs[0].Data) != `{"content":"persist me"}` {
		t.Errorf("events after reopen: %+v, %v", evs, err)
	}
	msgs, err := s2.Messages(ctx, "s1")
	if err != nil || len(msgs) != 1 || string(msgs[0]) != `{"m":1}` {
		t.Errorf("messages after reopen: %s, %v", msgs, err)
	}
}

func TestEnsureUserKeepsEmailCurrent(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	email := func() string {
		var e string
		if err := s.db.QueryRowContext(ctx, `SELECT email FROM users WHERE id = 'u'`).Scan(&e); err != nil {
			t.Fatal(err)
		}
		return e
	}
	for _, step := range []struct{ in, want string }{
		{"old@example.com", "old@example.com"},
		{"new@example.com", "new@example.com"},
		{"", "new@example.com"}, // an unknown email does not erase the known one
	} {
		if err := s.EnsureUser(ctx, "u", step.in); err != nil {
			t.Fatal(err)
		}
		if got := email(); got != step.want {
			t.Errorf("after EnsureUser(%q): email %q, want %q", step.in, got, step.want)
		}
	}
}
