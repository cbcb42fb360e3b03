package credproxy

import (
	"context"
	"sync"
)

// inflight counts the requests being relayed, so an agent's turn can wait
// for the usage of its last model call before it reports the turn over: the
// agent sees the answer's last byte before the proxy has counted it.
type inflight struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed while n == 0
}

func (f *inflight) begin() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		f.idle = make(chan struct{})
	}
	f.n++
}

func (f *inflight) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.n == 0 {
		close(f.idle)
	}
}

// wait returns once no request is being relayed, or with ctx's error.
func (f *inflight) wait(ctx context.Context) error {
	f.mu.Lock()
	idle := f.idle
	n := f.n
	f.mu.Unlock()
	if n == 0 {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Settle waits until no request is being relayed, so that the usage of every
// finished model call has been reported through OnUsage, or until ctx ends.
func (p *Proxy) Settle(ctx context.Context) error { return p.inflight.wait(ctx) }
