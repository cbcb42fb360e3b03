package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/store"
)

// SubscriberBuffer is how many events a live reader may fall behind before it
// is cut off. A cut reader reconnects with its last event id and catches up
// from the store, so nothing is lost; what is bounded is the memory one slow
// client can hold.
const SubscriberBuffer = 1024

// Bus is one session's event log: every event is written to the store first
// and then handed to live subscribers, in sequence order, under one lock.
// Holding the lock across the write is what makes "replay from the store, then
// continue live" exact: a subscriber registered at sequence S receives every
// event after S live, and every event up to S is already stored.
type Bus struct {
	store     *store.Store
	sessionID string

	mu     sync.Mutex
	seq    int64
	subs   map[*Subscription]struct{}
	closed bool // the log is complete: new subscribers get only what is stored

	// quota bounds the bytes of event data the log may hold (0: no bound);
	// used is what it holds. Once full, only lifecycle events are taken,
	// and onFull (set before use) is called once.
	quota, used int64
	full        bool
	onFull      func()

	// observer, when set, is told of every stored event (metrics).
	observer Observer
}

// NewBus opens the log of a session whose last stored event is lastSeq.
func NewBus(st *store.Store, sessionID string, lastSeq int64) *Bus {
	return &Bus{store: st, sessionID: sessionID, seq: lastSeq, subs: map[*Subscription]struct{}{}}
}

// ErrLogFull is what appending to a log past its quota gives.
var ErrLogFull = errors.New("this session's event log is full; its transcript is kept: start a new session to go on")

// lifecycleEvent types are small, bounded in number by the session's life
// (not by what the agent or the guest produce), and needed to end a turn or
// the session cleanly: the quota never refuses them.
func lifecycleEvent(typ string) bool {
	switch typ {
	case event.Status, event.AgentBusy, event.AgentIdle, event.Exit:
		return true
	}
	return false
}

// SetQuota bounds the log to quota bytes of event data, of which used are
// stored already; onFull is called once, outside the bus's lock, when an
// event is refused for the first time.
func (b *Bus) SetQuota(quota, used int64, onFull func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.quota, b.used, b.onFull = quota, used, onFull
	b.full = quota > 0 && used >= quota
}

// Full reports whether the log has reached its quota.
func (b *Bus) Full() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.full
}

// Emit appends an event. It is safe for concurrent use.
func (b *Bus) Emit(ctx context.Context, typ string, data any) error {
	_, err := b.Append(ctx, typ, data)
	return err
}

// Append appends an event and returns it as stored.
func (b *Bus) Append(ctx context.Context, typ string, data any) (store.Event, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return store.Event{}, fmt.Errorf("encode %s event: %w", typ, err)
	}
	// The event is part of the transcript even if whoever caused it has gone.
	ctx = context.WithoutCancel(ctx)

	b.mu.Lock()
	if !lifecycleEvent(typ) && b.quota > 0 && (b.full || b.used+int64(len(raw)) > b.quota) {
		first := !b.full
		b.full = true
		var err error
		if first {
			// The one event past the quota: what the user reads about it.
			msg, _ := json.Marshal(event.ErrorData{Message: fmt.Sprintf(
				"This session's event log reached its limit of %s, so the turn was ended. Everything before this is kept; start a new session to go on.", sizeWords(b.quota))})
			_, err = b.appendLocked(ctx, event.Error, msg)
		}
		onFull := b.onFull
		b.mu.Unlock()
		if first && onFull != nil {
			onFull()
		}
		return store.Event{}, errors.Join(ErrLogFull, err)
	}
	defer b.mu.Unlock()
	return b.appendLocked(ctx, typ, raw)
}

// appendLocked stores an event and hands it to live subscribers; b.mu is held.
func (b *Bus) appendLocked(ctx context.Context, typ string, raw json.RawMessage) (store.Event, error) {
	e := store.Event{SessionID: b.sessionID, Seq: b.seq + 1, Type: typ, Data: raw, Time: time.Now().UTC()}
	if err := b.store.AppendEvent(ctx, e); err != nil {
		return store.Event{}, err
	}
	b.seq = e.Seq
	b.used += int64(len(raw))
	if b.observer != nil {
		b.observer.Event(typ, raw)
	}
	for s := range b.subs {
		select {
		case s.c <- e:
		default:
			// Too far behind: cut it rather than block the agent and every other reader.
			s.dropped = true
			close(s.c)
			delete(b.subs, s)
		}
	}
	return e, nil
}

// LastSeq is the sequence of the newest event.
func (b *Bus) LastSeq() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seq
}

// Subscription is a live reader. Events after From arrive on C in order; C is
// closed when the reader is cut off (Dropped) or the bus is closed.
type Subscription struct {
	From    int64
	c       chan store.Event
	dropped bool
	bus     *Bus
}

// C is the live channel.
func (s *Subscription) C() <-chan store.Event { return s.c }

// Dropped reports whether the subscription was cut for falling behind. Only
// meaningful after C is closed.
func (s *Subscription) Dropped() bool {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	return s.dropped
}

// Close ends the subscription.
func (s *Subscription) Close() {
	b := s.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		close(s.c)
	}
}

// Subscribe registers a live reader. Everything up to and including the
// returned subscription's From is in the store already.
func (b *Bus) Subscribe() *Subscription {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := &Subscription{From: b.seq, c: make(chan store.Event, SubscriberBuffer), bus: b}
	if b.closed {
		close(s.c)
		return s
	}
	b.subs[s] = struct{}{}
	return s
}

// CloseAll ends every subscription, for a session whose log is complete.
func (b *Bus) CloseAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		close(s.c)
		delete(b.subs, s)
	}
}

// sizeWords writes a byte count for people: MiB when it is whole ones.
func sizeWords(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}
