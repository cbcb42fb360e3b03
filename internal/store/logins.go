package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Login is a browser's signed-in session (--auth token). Hash is the
// SHA-256 (hex) of the cookie's random value: the value itself is never
// stored. TokenFP fingerprints the access token the login was made with.
type Login struct {
	Hash     string
	TokenFP  string
	Created  time.Time
	LastSeen time.Time
	Expires  time.Time
}

// CreateLogin stores a login, then removes expired logins and, beyond max
// live ones, the oldest, in the same transaction: the table never grows past
// max rows however often someone signs in.
func (s *Store) CreateLogin(ctx context.Context, l Login, max int) error {
	if max < 1 {
		return errors.New("create login: max must be at least 1")
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create login: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO logins (hash, token_fp, created_at, last_seen, expires_at) VALUES (?, ?, ?, ?, ?)`,
		l.Hash, l.TokenFP, formatTime(l.Created), formatTime(l.LastSeen), formatTime(l.Expires)); err != nil {
		return fmt.Errorf("create login: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM logins WHERE expires_at <= ?`, formatTime(l.Created)); err != nil {
		return fmt.Errorf("prune logins: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `
DELETE FROM logins WHERE hash IN (
	SELECT hash FROM logins ORDER BY created_at DESC, hash LIMIT -1 OFFSET ?)`, max); err != nil {
		return fmt.Errorf("prune logins: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("create login: %w", err)
	}
	return nil
}

// GetLogin returns the login with this hash, or ErrNotFound.
func (s *Store) GetLogin(ctx context.Context, hash string) (Login, error) {
	var l Login
	var created, seen, expires string
	err := s.db.QueryRowContext(ctx,
		`SELECT hash, token_fp, created_at, last_seen, expires_at FROM logins WHERE hash = ?`, hash).
		Scan(&l.Hash, &l.TokenFP, &created, &seen, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return Login{}, ErrNotFound
	}
	if err != nil {
		return Login{}, fmt.Errorf("get login: %w", err)
	}
	l.Created, l.LastSeen, l.Expires = parseTime(created), parseTime(seen), parseTime(expires)
	return l, nil
}

// TouchLogin records that a login was used at t.
func (s *Store) TouchLogin(ctx context.Context, hash string, t time.Time) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE logins SET last_seen = ? WHERE hash = ?`, formatTime(t), hash); err != nil {
		return fmt.Errorf("touch login: %w", err)
	}
	return nil
}

// DeleteLogin ends a login; deleting one that does not exist is not an error.
func (s *Store) DeleteLogin(ctx context.Context, hash string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM logins WHERE hash = ?`, hash); err != nil {
		return fmt.Errorf("delete login: %w", err)
	}
	return nil
}

// DeleteStaleLogins removes the logins made under another access token
// than tokenFP, and those expired at now. It returns how many went.
func (s *Store) DeleteStaleLogins(ctx context.Context, tokenFP string, now time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM logins WHERE token_fp != ? OR expires_at <= ?`, tokenFP, formatTime(now))
	if err != nil {
		return 0, fmt.Errorf("delete stale logins: %w", err)
	}
	return res.RowsAffected()
}
