package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Event is one entry of a session's append-only log. Seq starts at 1 and
// increases by one per event within a session.
type Event struct {
	SessionID string
	Seq       int64
	Type      string
	Data      json.RawMessage
	Time      time.Time
}

// AppendEvent writes one event. The caller assigns Seq; a duplicate Seq is an
// error, never an overwrite, so a bug cannot rewrite history.
func (s *Store) AppendEvent(ctx context.Context, e Event) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO events (session_id, seq, type, data, created_at) VALUES (?, ?, ?, ?, ?)`,
		e.SessionID, e.Seq, e.Type, string(e.Data), formatTime(e.Time))
	if err != nil {
		return fmt.Errorf("append event %d to %s: %w", e.Seq, e.SessionID, err)
	}
	return nil
}

// Events returns up to limit events of a session with Seq > after, in order.
// limit <= 0 means all of them.
func (s *Store) Events(ctx context.Context, sessionID string, after int64, limit int) ([]Event, error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	rows, err := s.db.QueryContext(ctx,
		`SELECT seq, type, data, created_at FROM events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?`,
		sessionID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		e := Event{SessionID: sessionID}
		var data, created string
		if err := rows.Scan(&e.Seq, &e.Type, &data, &created); err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		e.Data = json.RawMessage(data)
		e.Time = parseTime(created)
		out = append(out, e)
	}
	return out, rows.Err()
}

// LastSeq returns the highest event sequence of a session, 0 when it has none.
func (s *Store) LastSeq(ctx context.Context, sessionID string) (int64, error) {
	var seq int64
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events WHERE session_id = ?`, sessionID).Scan(&seq)
	if err != nil {
		return 0, fmt.Errorf("read last event: %w", err)
	}
	return seq, nil
}

// AppendMessages stores conversation messages (the model-facing history, as
// JSON) at positions first, first+1, ... in one transaction.
func (s *Store) AppendMessages(ctx context.Context, sessionID string, first int, msgs []json.RawMessage) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("append messages: %w", err)
	}
	defer tx.Rollback()
	for i, m := range msgs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO messages (session_id, idx, message) VALUES (?, ?, ?)`,
			sessionID, first+i, string(m)); err != nil {
			return fmt.Errorf("append message %d: %w", first+i, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("append messages: %w", err)
	}
	return nil
}

// Messages returns a session's conversation history in order.
func (s *Store) Messages(ctx context.Context, sessionID string) ([]json.RawMessage, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT message FROM messages WHERE session_id = ? ORDER BY idx`, sessionID)
	if err != nil {
		return nil, fmt.Errorf("read messages: %w", err)
	}
	defer rows.Close()
	var out []json.RawMessage
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return nil, fmt.Errorf("read messages: %w", err)
		}
		out = append(out, json.RawMessage(m))
	}
	return out, rows.Err()
}

// EventBytes is the bytes of event data a session's log holds.
func (s *Store) EventBytes(ctx context.Context, sessionID string) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(LENGTH(CAST(data AS BLOB))), 0) FROM events WHERE session_id = ?`, sessionID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("measure the event log: %w", err)
	}
	return n, nil
}
