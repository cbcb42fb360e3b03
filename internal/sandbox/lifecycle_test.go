package sandbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestExit(t *testing.T) {
	boom := errors.New("boom")
	stop := func(e *Exit, shutdown func() error) {
		if err := e.Stop(t.Context(), "test sandbox", shutdown); err != nil {
			t.Errorf("Stop = %v", err)
		}
	}
	for _, tc := range []struct {
		name   string
		run    func(e *Exit)
		want   string // Err, as fmt.Sprint gives it
		reason ExitReason
	}{
		{"crash", func(e *Exit) { e.Exited(boom) }, "boom", 0},
		{"crash described as nothing", func(e *Exit) { e.Exited(nil) }, "sandbox exited", 0},
		{"only the first exit counts", func(e *Exit) { e.Exited(boom); e.Exited(errors.New("again")) }, "boom", 0},
		{"stop", func(e *Exit) {
			stop(e, func() error { e.Exited(boom); return nil })
		}, "<nil>", ExitStop},
		{"crash, then stop", func(e *Exit) {
			e.Exited(boom)
			stop(e, func() error { return nil })
		}, "<nil>", ExitStop},
		{"pause", func(e *Exit) { e.Expect(ExitPause); e.Exited(boom) }, "<nil>", ExitPause},
		{"stop while pausing", func(e *Exit) {
			e.Expect(ExitPause)
			stop(e, func() error { e.Exited(boom); return nil })
		}, "<nil>", ExitPause},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e Exit
			if err := e.Err(); err != nil {
				t.Errorf("Err before the exit = %v", err)
			}
			tc.run(&e)
			select {
			case <-e.Done():
			default:
				t.Fatal("Done not closed")
			}
			if got := fmt.Sprint(e.Err()); got != tc.want {
				t.Errorf("Err = %s, want %s", got, tc.want)
			}
			r, ok := e.Expected()
			if r != tc.reason || ok != (tc.reason != 0) {
				t.Errorf("Expected = %v, %v, want %v", r, ok, tc.reason)
			}
		})
	}
}

// Until the sandbox is gone there is no exit error, even when one is
// expected.
func TestExitErrWaitsForExit(t *testing.T) {
	var e Exit
	e.Expect(ExitStop)
	if err := e.Err(); err != nil {
		t.Errorf("Err = %v", err)
	}
	select {
	case <-e.Done():
		t.Fatal("Done closed before Exited")
	default:
	}
}

func TestExitStop(t *testing.T) {
	var e Exit
	var runs atomic.Int32
	release := make(chan struct{})
	boom := errors.New("boom")
	shutdown := func() error {
		runs.Add(1)
		<-release
		e.Exited(errors.New("killed"))
		return boom
	}

	// A Stop whose ctx ends returns then, naming the sandbox; the exit is
	// already expected and the shutdown runs on.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := e.Stop(ctx, "test sandbox", shutdown); !errors.Is(err, context.DeadlineExceeded) || err.Error() != "test sandbox: stop: "+context.DeadlineExceeded.Error() {
		t.Fatalf("Stop with an expiring ctx = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stop with an expiring ctx took %s", d)
	}
	if r, ok := e.Expected(); !ok || r != ExitStop {
		t.Errorf("Expected after Stop = %v, %v", r, ok)
	}
	select {
	case <-e.Done():
		t.Fatal("Done closed while the shutdown is held up")
	default:
	}

	// Running the shutdown once for every caller is Stopper's (stop_test.go).
	close(release)
	if err := e.Stop(t.Context(), "test sandbox", shutdown); err != boom {
		t.Errorf("later Stop = %v, want the shutdown's error", err)
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("shutdown ran %d times", n)
	}
	<-e.Done()
	if err := e.Err(); err != nil {
		t.Errorf("Err after Stop = %v", err)
	}
}

// Exits reported from several goroutines close Done once, whichever comes
// first, while others read the latch.
func TestExitConcurrent(t *testing.T) {
	var e Exit
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { e.Exited(fmt.Errorf("exit %d", i)) })
		wg.Go(func() { <-e.Done(); e.Err(); e.Expected() })
	}
	wg.Wait()
	if e.Err() == nil {
		t.Error("no crash reported")
	}
}
