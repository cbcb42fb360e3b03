package store

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// Logins are found by hash, touched, deleted one by one, swept when made
// under another token or expired, and never more than the cap.
func TestLogins(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	login := func(hash, fp string, created time.Time) Login {
		return Login{Hash: hash, TokenFP: fp, Created: created, LastSeen: created, Expires: created.Add(30 * 24 * time.Hour)}
	}
	if _, err := s.GetLogin(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing login: %v", err)
	}
	a := login("hash-a", "fp1", t0)
	if err := s.CreateLogin(ctx, a, 10); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetLogin(ctx, "hash-a")
	if err != nil || got.TokenFP != "fp1" || !got.Created.Equal(t0) || !got.Expires.Equal(a.Expires) || !got.LastSeen.Equal(t0) {
		t.Fatalf("get: %+v %v", got, err)
	}
	if err := s.CreateLogin(ctx, a, 10); err == nil {
		t.Fatal("the same hash stored twice")
	}
	seen := t0.Add(time.Hour)
	if err := s.TouchLogin(ctx, "hash-a", seen); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetLogin(ctx, "hash-a"); !got.LastSeen.Equal(seen) {
		t.Fatalf("last seen %v, want %v", got.LastSeen, seen)
	}
	if err := s.DeleteLogin(ctx, "hash-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetLogin(ctx, "hash-a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if err := s.DeleteLogin(ctx, "hash-a"); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}

	// The cap: the oldest go first, the newest stay.
	for i := range 8 {
		if err := s.CreateLogin(ctx, login(fmt.Sprintf("cap-%d", i), "fp1", t0.Add(time.Duration(i)*time.Minute)), 5); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM logins`).Scan(&n); err != nil || n != 5 {
		t.Fatalf("%d logins kept (%v), want 5", n, err)
	}
	for i := range 8 {
		_, err := s.GetLogin(ctx, fmt.Sprintf("cap-%d", i))
		if kept := err == nil; kept != (i >= 3) {
			t.Errorf("cap-%d kept=%v", i, kept)
		}
	}

	// A new login sweeps expired ones; a token change sweeps the others.
	old := login("old", "fp1", t0.Add(-31*24*time.Hour))
	old.Expires = t0.Add(-time.Hour)
	if err := s.CreateLogin(ctx, old, 100); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateLogin(ctx, login("other-token", "fp2", t0.Add(time.Hour)), 100); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetLogin(ctx, "old"); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired login kept: %v", err)
	}
	removed, err := s.DeleteStaleLogins(ctx, "fp2", t0.Add(2*time.Hour))
	if err != nil || removed != 5 {
		t.Fatalf("stale logins removed: %d %v, want 5", removed, err)
	}
	if _, err := s.GetLogin(ctx, "other-token"); err != nil {
		t.Errorf("current token's login removed: %v", err)
	}
	if removed, _ := s.DeleteStaleLogins(ctx, "fp2", t0.Add(40*24*time.Hour)); removed != 1 {
		t.Errorf("expired login not swept: %d", removed)
	}
}
