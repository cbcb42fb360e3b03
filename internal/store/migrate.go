package store

import (
	"context"
	"fmt"
)

// migrations are applied in order, each once, each in its own transaction.
// Never edit one that has shipped: append a new one.
var migrations = []string{
	// 1: users, sessions, events, conversation history.
	`
CREATE TABLE users (
	id         TEXT PRIMARY KEY,
	email      TEXT NOT NULL DEFAULT '',
	created_at TEXT NOT NULL
);
CREATE TABLE sessions (
	id               TEXT PRIMARY KEY,
	user_id          TEXT NOT NULL REFERENCES users(id),
	name             TEXT NOT NULL,
	state            TEXT NOT NULL,
	provider         TEXT NOT NULL,
	model            TEXT NOT NULL,
	agent            TEXT NOT NULL,
	sandbox          TEXT NOT NULL,
	isolated         INTEGER NOT NULL,
	config           TEXT NOT NULL,
	created_at       TEXT NOT NULL,
	last_activity    TEXT NOT NULL,
	ended_at         TEXT,
	idle_timeout_min INTEGER NOT NULL,
	input_tokens     INTEGER NOT NULL DEFAULT 0,
	output_tokens    INTEGER NOT NULL DEFAULT 0,
	cost_usd         REAL NOT NULL DEFAULT 0,
	error            TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user ON sessions(user_id, created_at);
CREATE INDEX sessions_state ON sessions(state);
CREATE TABLE events (
	session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
	seq        INTEGER NOT NULL,
	type       TEXT NOT NULL,
	data       TEXT NOT NULL,
	created_at TEXT NOT NULL,
	PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE TABLE messages (
	session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
	idx        INTEGER NOT NULL,
	message    TEXT NOT NULL,
	PRIMARY KEY (session_id, idx)
) WITHOUT ROWID;
`,
	// 2: browser logins (--auth token): only a SHA-256 of the random cookie
	// value is kept, with a fingerprint of the access token it was issued
	// under, so changing the token ends every login.
	`
CREATE TABLE logins (
	hash       TEXT PRIMARY KEY,
	token_fp   TEXT NOT NULL,
	created_at TEXT NOT NULL,
	last_seen  TEXT NOT NULL,
	expires_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX logins_created ON logins(created_at);
`,
	// 3: paused sessions: how a session resumes (JSON, nothing secret) and,
	// with a key store, its API key sealed with the operator's key.
	`
ALTER TABLE sessions ADD COLUMN resume TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN sealed_key BLOB;
`,
}

func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx,
		`CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	// The version is read inside the same (immediate, so exclusive) write
	// transaction that applies the migration: two processes opening a new
	// database at once cannot both apply it.
	for {
		done, err := s.migrateOne(ctx)
		if err != nil || done {
			return err
		}
	}
}

// migrateOne applies the next migration, if any; done reports that the schema
// is current.
func (s *Store) migrateOne(ctx context.Context) (done bool, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return false, fmt.Errorf("read schema version: %w", err)
	}
	if current > len(migrations) {
		return false, fmt.Errorf("database schema version %d is newer than this binary knows (%d): refusing to run an older execlaw on it", current, len(migrations))
	}
	if current == len(migrations) {
		return true, nil
	}
	v := current + 1
	if _, err := tx.ExecContext(ctx, migrations[v-1]); err != nil {
		return false, fmt.Errorf("apply migration %d: %w", v, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, v, now()); err != nil {
		return false, fmt.Errorf("record migration %d: %w", v, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("commit migration %d: %w", v, err)
	}
	return false, nil
}
