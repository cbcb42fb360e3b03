package session

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

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

	// observer, when set, is told of every stored event (metrics).
	observer Observer
}

// NewBus opens the log of a session whose last stored event is lastSeq.
func NewBus(st *store.Store, sessionID string, lastSeq int64) *Bus {
	return &Bus{store: st, sessionID: sessionID, seq: lastSeq, subs: map[*Subscription]struct{}{}}
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
	defer b.mu.Unlock()
	e := store.Event{SessionID: b.sessionID, Seq: b.seq + 1, Type: typ, Data: raw, Time: time.Now().UTC()}
	if err := b.store.AppendEvent(ctx, e); err != nil {
		return store.Event{}, err
	}
	b.seq = e.Seq
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
