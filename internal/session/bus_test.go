package session

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/store"
)

func newTestBus(t *testing.T) (*Bus, *store.Store) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.EnsureUser(ctx, "u", ""); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateSession(ctx, store.Session{ID: "s1", UserID: "u", Name: "n", State: "active", Config: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	return NewBus(st, "s1", 0), st
}

// A reader that stops reading is cut off once it is SubscriberBuffer behind;
// the writer never blocks and the other readers get everything. The cut
// reader catches up from the store without a gap.
func TestBusCutsSlowSubscriber(t *testing.T) {
	bus, st := newTestBus(t)
	ctx := context.Background()
	slow := bus.Subscribe()
	fast := bus.Subscribe()
	var got []int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range fast.C() {
			got = append(got, e.Seq)
		}
	}()
	total := SubscriberBuffer + 10
	for i := range total {
		if err := bus.Emit(ctx, event.MessageDelta, event.DeltaData{MessageID: "m", Text: string(rune('a' + i%26))}); err != nil {
			t.Fatal(err)
		}
	}
	// The slow reader's channel holds what it got before the cut, then closes.
	n := 0
	for range slow.C() {
		n++
	}
	if !slow.Dropped() || n != SubscriberBuffer {
		t.Fatalf("slow reader: dropped=%v after %d events, want cut after %d", slow.Dropped(), n, SubscriberBuffer)
	}
	fast.Close()
	<-done
	if len(got) != total {
		t.Fatalf("fast reader got %d of %d events", len(got), total)
	}
	for i, seq := range got {
		if seq != int64(i+1) {
			t.Fatalf("event %d has seq %d", i, seq)
		}
	}
	rest, err := st.Events(ctx, "s1", int64(n), 0)
	if err != nil || len(rest) != total-n || rest[0].Seq != int64(n+1) {
		t.Fatalf("catch-up from the store: %d events, err %v", len(rest), err)
	}
}

// Concurrent writers get distinct, gapless sequence numbers, and every live
// reader sees them in order.
func TestBusConcurrentEmit(t *testing.T) {
	bus, st := newTestBus(t)
	ctx := context.Background()
	sub := bus.Subscribe()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for range 50 {
				if err := bus.Emit(ctx, event.Status, event.StatusData{State: "active", Phase: string(rune('a' + w))}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	sub.Close()
	var last int64
	for e := range sub.C() {
		if e.Seq != last+1 {
			t.Fatalf("live order broken: %d after %d", e.Seq, last)
		}
		last = e.Seq
	}
	if last != 400 || bus.LastSeq() != 400 {
		t.Fatalf("got up to %d, bus at %d, want 400", last, bus.LastSeq())
	}
	stored, _ := st.Events(ctx, "s1", 0, 0)
	if len(stored) != 400 {
		t.Fatalf("stored %d events", len(stored))
	}
}

// A subscriber that arrives after the log is complete gets a closed channel
// and the position up to which the store has everything.
func TestBusSubscribeAfterClose(t *testing.T) {
	bus, _ := newTestBus(t)
	ctx := context.Background()
	bus.Emit(ctx, event.Exit, event.ExitData{Reason: "done"})
	bus.CloseAll()
	sub := bus.Subscribe()
	if _, ok := <-sub.C(); ok || sub.From != 1 || sub.Dropped() {
		t.Fatalf("late subscriber: from %d, dropped %v", sub.From, sub.Dropped())
	}
}

// An event the store refuses is not delivered live either, and does not use
// up a sequence number.
func TestBusStoreFailure(t *testing.T) {
	bus, st := newTestBus(t)
	ctx := context.Background()
	sub := bus.Subscribe()
	bus.Emit(ctx, event.AgentBusy, event.Empty{})
	st.Close()
	if err := bus.Emit(ctx, event.AgentIdle, event.Empty{}); err == nil {
		t.Fatal("emit succeeded with the store closed")
	}
	if bus.LastSeq() != 1 {
		t.Fatalf("seq advanced to %d on a failed write", bus.LastSeq())
	}
	sub.Close()
	n := 0
	for range sub.C() {
		n++
	}
	if n != 1 {
		t.Fatalf("live reader got %d events, want only the stored one", n)
	}
}

// Past its quota the log takes one error_event saying so, then only
// lifecycle events; onFull is told once; nothing stored before is touched.
func TestBusQuota(t *testing.T) {
	bus, st := newTestBus(t)
	ctx := context.Background()
	full := 0
	bus.SetQuota(1000, 0, func() { full++ })
	text := event.DeltaData{MessageID: "m", Text: strings.Repeat("a", 290)} // 320 bytes as JSON
	for range 3 {
		if err := bus.Emit(ctx, event.MessageDelta, text); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := bus.Emit(ctx, event.MessageDelta, text); !errors.Is(err, ErrLogFull) {
			t.Fatalf("emit past the quota: %v", err)
		}
	}
	if err := bus.Emit(ctx, event.Error, event.ErrorData{Message: "later"}); !errors.Is(err, ErrLogFull) {
		t.Fatalf("error event past the quota: %v", err)
	}
	for _, typ := range []string{event.AgentIdle, event.Status, event.Exit} {
		if err := bus.Emit(ctx, typ, event.Empty{}); err != nil {
			t.Fatalf("lifecycle event %s refused: %v", typ, err)
		}
	}
	if full != 1 || !bus.Full() {
		t.Fatalf("onFull called %d times, Full %v", full, bus.Full())
	}
	events, err := st.Events(ctx, "s1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for i, e := range events {
		if e.Seq != int64(i+1) {
			t.Fatalf("gap at %d", e.Seq)
		}
		types = append(types, e.Type)
	}
	want := []string{event.MessageDelta, event.MessageDelta, event.MessageDelta, event.Error, event.AgentIdle, event.Status, event.Exit}
	if !slices.Equal(types, want) {
		t.Fatalf("stored %q, want %q", types, want)
	}
}
