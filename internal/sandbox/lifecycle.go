package sandbox

import (
	"context"
	"errors"
	"sync"
)

// ExitReason is why the host expects a sandbox to exit. An exit the host
// expected is never reported as a crash.
type ExitReason uint8

const (
	// ExitStop: Stop (or a failed Start) is ending the sandbox.
	ExitStop ExitReason = iota + 1
	// ExitPause: the sandbox's state is saved and its VMM let go, to be
	// resumed from that state later.
	ExitPause
)

// Exit is a sandbox's exit latch, what every driver's Sandbox needs to keep
// Done, ExitError and Stop's promises: the driver reports the exit once, when
// the sandbox is gone, and the host marks the exits it asked for so that they
// are not taken for crashes. The zero value is ready to use; it must not be
// copied.
type Exit struct {
	mu       sync.Mutex
	done     chan struct{} // made on first use, closed by Exited
	exited   bool
	expected ExitReason // zero until Expect
	crash    error      // set by Exited

	stopper Stopper
}

// Done is closed once Exited has been called.
func (e *Exit) Done() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.doneLocked()
}

func (e *Exit) doneLocked() chan struct{} {
	if e.done == nil {
		e.done = make(chan struct{})
	}
	return e.done
}

// Expect marks an exit as coming because the host asked for it, before or
// after it happens. The first reason stands: it is what set the exit in
// motion.
func (e *Exit) Expect(r ExitReason) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.expected == 0 {
		e.expected = r
	}
}

// Expected says whether an exit is expected, and why.
func (e *Exit) Expected() (ExitReason, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.expected, e.expected != 0
}

// Exited reports that the sandbox is gone and closes Done. crash is what Err
// gives if the host did not expect the exit, so the driver describes the
// exit whether or not it was expected: Stop may still come after a crash.
// Only the first call counts.
func (e *Exit) Exited(crash error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.exited {
		return
	}
	if crash == nil {
		// A nil Err would say there was no crash.
		crash = errors.New("sandbox exited")
	}
	e.exited, e.crash = true, crash
	close(e.doneLocked())
}

// Err is what Sandbox.ExitError gives: nil until Done is closed, nil when
// the host expected the exit (Expect, Stop) however it came, and otherwise
// the crash Exited reported.
func (e *Exit) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.exited || e.expected != 0 {
		return nil
	}
	return e.crash
}

// Stop is the body of a driver's Sandbox.Stop: it expects the exit (ExitStop)
// and then runs shutdown as Stopper.Stop does, once and to completion, each
// call waiting for it as long as its ctx allows.
func (e *Exit) Stop(ctx context.Context, name string, shutdown func() error) error {
	e.Expect(ExitStop)
	return e.stopper.Stop(ctx, name, shutdown)
}
