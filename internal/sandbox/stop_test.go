package sandbox

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestStopper(t *testing.T) {
	var s Stopper
	var runs atomic.Int32
	release := make(chan struct{})
	boom := errors.New("boom")
	shutdown := func() error {
		runs.Add(1)
		<-release
		return boom
	}

	// A caller whose ctx ends first gets the ctx error, named; the shutdown
	// runs on.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	err := s.Stop(ctx, "test sandbox", shutdown)
	if !errors.Is(err, context.DeadlineExceeded) || err.Error() != "test sandbox: stop: "+context.DeadlineExceeded.Error() {
		t.Fatalf("Stop with an expired ctx = %v", err)
	}

	// Every other caller, concurrent or later, waits for the one shutdown.
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Go(func() { errs[i] = s.Stop(t.Context(), "test sandbox", shutdown) })
	}
	time.Sleep(10 * time.Millisecond)
	close(release)
	wg.Wait()
	for _, err := range errs {
		if err != boom {
			t.Errorf("Stop = %v, want the shutdown's error", err)
		}
	}
	if err := s.Stop(t.Context(), "test sandbox", shutdown); err != boom {
		t.Errorf("later Stop = %v", err)
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("shutdown ran %d times", n)
	}
}

func TestRequestExit(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		exited := make(chan struct{})
		refused := errors.New("refused")
		start := time.Now()
		if err := RequestExit(exited, time.Minute, func(context.Context) error { return refused }); err != refused {
			t.Errorf("RequestExit = %v", err)
		}
		if time.Since(start) > 5*time.Second {
			t.Error("waited after a refused request")
		}
	})
	t.Run("exits", func(t *testing.T) {
		exited := make(chan struct{})
		start := time.Now()
		err := RequestExit(exited, time.Minute, func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				t.Error("request has no deadline")
			}
			time.AfterFunc(10*time.Millisecond, func() { close(exited) })
			return nil
		})
		if err != nil || time.Since(start) > 5*time.Second {
			t.Errorf("RequestExit = %v after %s", err, time.Since(start))
		}
	})
	t.Run("does not exit", func(t *testing.T) {
		exited := make(chan struct{})
		start := time.Now()
		if err := RequestExit(exited, 50*time.Millisecond, func(context.Context) error { return nil }); err != nil {
			t.Errorf("RequestExit = %v", err)
		}
		if d := time.Since(start); d < 50*time.Millisecond || d > 5*time.Second {
			t.Errorf("waited %s, want the timeout", d)
		}
	})
	t.Run("bound covers the request", func(t *testing.T) {
		exited := make(chan struct{})
		start := time.Now()
		err := RequestExit(exited, 50*time.Millisecond, func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		})
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
			t.Errorf("RequestExit = %v after %s", err, time.Since(start))
		}
	})
}
