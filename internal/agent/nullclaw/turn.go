package nullclaw

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/execlaw/execlaw/internal/agent/nullclaw/a2a"
	"github.com/execlaw/execlaw/internal/event"
)

// This file runs one turn: the stream, the mapper, and the cancel that has
// to reach nullclaw before the stream may be dropped.

// turnOptions tune runTurn.
type turnOptions struct {
	// CancelGrace is how long a cancelled turn waits for the tasks/cancel
	// answer and then for nullclaw's final "canceled" event before the stream
	// is dropped. Default 10s.
	CancelGrace time.Duration
	Limits      mapperLimits
}

// runTurn sends text to nullclaw in conversation contextID and maps the
// streamed task to events on em until the task ends. When ctx is cancelled
// the task is cancelled with tasks/cancel and the turn waits up to
// CancelGrace for nullclaw to confirm. A task that completes without having
// streamed any text gets its reply from tasks/get. The session brackets the
// turn with agent_busy/agent_idle; every failure is reported with
// error_event before runTurn returns (see outcome.Err). The error is an
// Emitter's.
func runTurn(ctx context.Context, c *a2a.Client, em event.Emitter, contextID, text string, opts turnOptions) (outcome, error) {
	grace := opts.CancelGrace
	if grace <= 0 {
		grace = 10 * time.Second
	}
	m := newMapper(em, opts.Limits)

	// The stream outlives ctx by up to the grace, to see the cancellation.
	streamCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()

	var (
		mu        sync.Mutex
		taskID    string
		known     = make(chan struct{})
		abandoned atomic.Bool
		wg        sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
		case <-streamCtx.Done():
			return
		}
		abandoned.Store(true)
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-known:
		case <-timer.C:
			stop()
			return
		case <-streamCtx.Done():
			return
		}
		mu.Lock()
		id := taskID
		mu.Unlock()
		cctx, ccancel := context.WithTimeout(streamCtx, grace)
		err := c.Cancel(cctx, id)
		ccancel()
		if err != nil && !a2a.IsNotCancelable(err) {
			stop()
			return
		}
		select {
		case <-timer.C:
			stop()
		case <-streamCtx.Done():
		}
	}()

	first := true
	err := c.Stream(streamCtx, contextID, text, func(ev a2a.Event) error {
		if first && ev.Kind == a2a.KindTask {
			first = false
			mu.Lock()
			taskID = ev.Task.ID
			mu.Unlock()
			close(known)
		}
		return m.Handle(ev)
	})
	stop()
	wg.Wait()

	// A task that completed without streaming any text (a provider path
	// that does not stream) still has its reply in the task's artifact.
	if err == nil && m.state == a2a.StateCompleted && m.textBytes == 0 && m.emitErr == nil && m.taskID != "" {
		gctx, gcancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
		t, gerr := c.GetTask(gctx, m.taskID)
		gcancel()
		if gerr == nil {
			if err := m.lateReply(t); err != nil {
				return m.Finish(err, false)
			}
		}
	}

	// A stream that ended with nullclaw's own "canceled" is not abandoned:
	// the mapper saw the end of the task.
	cut := abandoned.Load() && !m.done
	return m.Finish(err, cut)
}
