package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Usage is a running total of tokens and cost.
type Usage struct {
	InputTokens  int64   `json:"inputTokens"`
	OutputTokens int64   `json:"outputTokens"`
	CostUSD      float64 `json:"costUsd"`
}

// Add returns u plus v.
func (u Usage) Add(v Usage) Usage {
	return Usage{u.InputTokens + v.InputTokens, u.OutputTokens + v.OutputTokens, u.CostUSD + v.CostUSD}
}

// Session is a session's durable record. Config holds the settings that are
// not columns of their own, as JSON; it never holds a secret.
type Session struct {
	ID             string
	UserID         string
	Name           string
	State          string
	Provider       string
	Model          string
	Agent          string
	Sandbox        string
	Isolated       bool
	Config         json.RawMessage
	CreatedAt      time.Time
	LastActivity   time.Time
	EndedAt        time.Time // zero while the session runs
	IdleTimeoutMin int
	Usage          Usage
	Error          string
	// Resume says how a paused session goes on (JSON, the session
	// package's); empty for one that was never paused.
	Resume json.RawMessage
}

// EnsureUser records a user the first time it is seen and keeps its email current.
func (s *Store) EnsureUser(ctx context.Context, id, email string) error {
	_, err := s.db.ExecContext(ctx, `
INSERT INTO users (id, email, created_at) VALUES (?, ?, ?)
ON CONFLICT(id) DO UPDATE SET email = excluded.email WHERE excluded.email != ''`,
		id, email, now())
	if err != nil {
		return fmt.Errorf("ensure user: %w", err)
	}
	return nil
}

// CreateSession inserts a new session.
func (s *Store) CreateSession(ctx context.Context, ss Session) error {
	_, err := s.db.ExecContext(ctx, `
INSERT INTO sessions (id, user_id, name, state, provider, model, agent, sandbox, isolated, config,
	created_at, last_activity, idle_timeout_min)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		ss.ID, ss.UserID, ss.Name, ss.State, ss.Provider, ss.Model, ss.Agent, ss.Sandbox, ss.Isolated,
		string(ss.Config), formatTime(ss.CreatedAt), formatTime(ss.LastActivity), ss.IdleTimeoutMin)
	if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	return nil
}

const sessionColumns = `id, user_id, name, state, provider, model, agent, sandbox, isolated, config,
	created_at, last_activity, COALESCE(ended_at, ''), idle_timeout_min, input_tokens, output_tokens, cost_usd, error, resume`

func scanSession(row interface{ Scan(...any) error }) (Session, error) {
	var ss Session
	var config, created, last, ended, resume string
	err := row.Scan(&ss.ID, &ss.UserID, &ss.Name, &ss.State, &ss.Provider, &ss.Model, &ss.Agent, &ss.Sandbox,
		&ss.Isolated, &config, &created, &last, &ended, &ss.IdleTimeoutMin,
		&ss.Usage.InputTokens, &ss.Usage.OutputTokens, &ss.Usage.CostUSD, &ss.Error, &resume)
	if err != nil {
		return Session{}, err
	}
	ss.Config = json.RawMessage(config)
	if resume != "" {
		ss.Resume = json.RawMessage(resume)
	}
	ss.CreatedAt = parseTime(created)
	ss.LastActivity = parseTime(last)
	ss.EndedAt = parseTime(ended)
	return ss, nil
}

// GetSession returns one session.
func (s *Store) GetSession(ctx context.Context, id string) (Session, error) {
	ss, err := scanSession(s.db.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, ErrNotFound
	}
	if err != nil {
		return Session{}, fmt.Errorf("get session: %w", err)
	}
	return ss, nil
}

// ListSessions returns a user's sessions, newest first.
func (s *Store) ListSessions(ctx context.Context, userID string) ([]Session, error) {
	return s.querySessions(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE user_id = ? ORDER BY created_at DESC, id`, userID)
}

// ListUnfinished returns every session not yet stopped or failed, whoever owns it.
func (s *Store) ListUnfinished(ctx context.Context) ([]Session, error) {
	return s.querySessions(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE state NOT IN ('stopped', 'error') ORDER BY created_at`)
}

// ListSessionIDs returns the id of every session.
func (s *Store) ListSessionIDs(ctx context.Context) (map[string]bool, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM sessions`)
	if err != nil {
		return nil, fmt.Errorf("list session ids: %w", err)
	}
	defer rows.Close()
	ids := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids[id] = true
	}
	return ids, rows.Err()
}

func (s *Store) querySessions(ctx context.Context, query string, args ...any) ([]Session, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	defer rows.Close()
	var out []Session
	for rows.Next() {
		ss, err := scanSession(rows)
		if err != nil {
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		out = append(out, ss)
	}
	return out, rows.Err()
}

// SetState records a session's state. A final state (stopped, error) also
// records when it ended; errMsg is kept only when non-empty.
func (s *Store) SetState(ctx context.Context, id, state, errMsg string) error {
	var ended any
	if state == "stopped" || state == "error" {
		ended = now()
	}
	_, err := s.db.ExecContext(ctx, `
UPDATE sessions SET state = ?, ended_at = COALESCE(?, ended_at),
	error = CASE WHEN ? != '' THEN ? ELSE error END
WHERE id = ?`, state, ended, errMsg, errMsg, id)
	if err != nil {
		return fmt.Errorf("set session state: %w", err)
	}
	return nil
}

// Touch records activity on a session.
func (s *Store) Touch(ctx context.Context, id string, at time.Time) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE sessions SET last_activity = ? WHERE id = ?`, formatTime(at), id); err != nil {
		return fmt.Errorf("touch session: %w", err)
	}
	return nil
}

// SetUsage records a session's usage totals.
func (s *Store) SetUsage(ctx context.Context, id string, u Usage) error {
	_, err := s.db.ExecContext(ctx, `UPDATE sessions SET input_tokens = ?, output_tokens = ?, cost_usd = ? WHERE id = ?`,
		u.InputTokens, u.OutputTokens, u.CostUSD, id)
	if err != nil {
		return fmt.Errorf("set session usage: %w", err)
	}
	return nil
}

// Rename changes a session's display name.
func (s *Store) Rename(ctx context.Context, id, name string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE sessions SET name = ? WHERE id = ?`, name, id); err != nil {
		return fmt.Errorf("rename session: %w", err)
	}
	return nil
}

func now() string { return formatTime(time.Now()) }

// timeFormat is RFC 3339 with a fixed nine-digit fraction, so that stored
// times sort as strings in time order (ORDER BY created_at). RFC3339Nano drops
// trailing zeros, which sorts "…:05Z" after "…:05.1Z" and ".1Z" after ".12Z".
const timeFormat = "2006-01-02T15:04:05.000000000Z07:00"

func formatTime(t time.Time) string { return t.UTC().Format(timeFormat) }

func parseTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// CountByState counts every session by its stored state.
func (s *Store) CountByState(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT state, COUNT(*) FROM sessions GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count sessions: %w", err)
	}
	defer rows.Close()
	counts := map[string]int{}
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			return nil, err
		}
		counts[state] = n
	}
	return counts, rows.Err()
}

// ListPaused returns every paused session, whoever owns it, oldest first.
func (s *Store) ListPaused(ctx context.Context) ([]Session, error) {
	return s.querySessions(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE state = 'paused' ORDER BY last_activity`)
}

// SetResume records how a paused session goes on.
func (s *Store) SetResume(ctx context.Context, id string, resume json.RawMessage) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE sessions SET resume = ? WHERE id = ?`, string(resume), id); err != nil {
		return fmt.Errorf("record how the session resumes: %w", err)
	}
	return nil
}

// SetSealedKey keeps a session's API key, sealed by the key store (nil
// forgets it).
func (s *Store) SetSealedKey(ctx context.Context, id string, sealed []byte) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE sessions SET sealed_key = ? WHERE id = ?`, sealed, id); err != nil {
		return fmt.Errorf("keep the sealed key: %w", err)
	}
	return nil
}

// SealedKey is a session's sealed API key; nil when there is none.
func (s *Store) SealedKey(ctx context.Context, id string) ([]byte, error) {
	var b []byte
	err := s.db.QueryRowContext(ctx, `SELECT sealed_key FROM sessions WHERE id = ?`, id).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read the sealed key: %w", err)
	}
	return b, nil
}
