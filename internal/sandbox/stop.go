package sandbox

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Stopper gives a driver's Stop the shape Sandbox.Stop asks for: the
// shutdown runs once, in the background and to completion, however many
// Stop calls ask for it and from however many goroutines; each call waits
// for it only as long as its own ctx allows. The zero value is ready to use.
type Stopper struct {
	once sync.Once
	done chan struct{}
	err  error // written before done is closed
}

// Stop starts shutdown on the first call, then waits until it has returned,
// giving its error, or until ctx ends, giving "<name>: stop: <ctx's error>".
// Later calls only wait, and get the same error.
func (s *Stopper) Stop(ctx context.Context, name string, shutdown func() error) error {
	s.once.Do(func() {
		s.done = make(chan struct{})
		go func() {
			defer close(s.done)
			s.err = shutdown()
		}()
	})
	select {
	case <-s.done:
		return s.err
	case <-ctx.Done():
		return fmt.Errorf("%s: stop: %w", name, ctx.Err())
	}
}

// RequestExit makes one polite request to end a sandbox (such as the guest's
// own shutdown), then waits for exited to close, all within timeout. It
// returns the request's error: the request was not taken, and nothing was
// waited for. Whether the sandbox did exit is for the caller to check.
func RequestExit(exited <-chan struct{}, timeout time.Duration, request func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := request(ctx); err != nil {
		return err
	}
	select {
	case <-exited:
	case <-ctx.Done():
	}
	return nil
}
