package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"time"

	"github.com/execlaw/execlaw/internal/hostinfo"
	"github.com/execlaw/execlaw/internal/sandbox"
)

// A warm pool keeps VMs booted and idle, so that a new session of the
// default size takes one (Claim: its host name, the time, fresh entropy)
// instead of booting. Pooled VMs are of one size and network: the
// settings a session gets when it asks for none (network full when the
// server has VM networking). Other sessions boot as before. A claimed VM is
// never given back; the pool refills in the background. Pooled VMs count
// against --max-sessions and the memory gate like sessions, and are the
// first to go when a session needs the room, booting ones included. Each
// is started Movable in a directory of its own (p_<hex>) and moved to its
// session's when claimed; its cgroup and network keep the pool name it
// was made with.

// PoolStats is the pool as /api/system and the metrics show it.
type PoolStats struct {
	Size    int   `json:"size"`    // VMs it keeps ready
	Ready   int   `json:"ready"`   // booted and idle now
	Booting int   `json:"booting"` // being booted to refill it
	Hits    int64 `json:"hits"`    // sessions that took a pooled VM
	Misses  int64 `json:"misses"`  // sessions that booted their own while it was on
	// Short says why the pool holds fewer than Size (the limit a refill
	// met, or a failed boot); empty when nothing holds it back.
	Short string `json:"short,omitempty"`
}

// retryAfterFailure is how long the pool waits after a failed boot before
// trying again: a broken image must not become a boot loop.
const retryAfterFailure = 30 * time.Second

type warmPool struct {
	m    *Manager
	size int
	set  settings // what its VMs are; a session must ask for exactly this

	mu       sync.Mutex
	ready    []*pooledVM
	booting  map[*poolBoot]struct{} // boots under way that count against the limits; an evicted one leaves at once
	hits     int64
	misses   int64
	closed   bool
	running  bool // run was started: close waits for it
	failedAt time.Time
	short    string
	wake     chan struct{}
	done     chan struct{}
	boots    sync.WaitGroup
}

// poolBoot is one boot under way: a session that needs its room cancels
// it (evicts it from booting), as it stops a ready VM.
type poolBoot struct {
	cancel context.CancelFunc
}

type pooledVM struct {
	id, dir string
	sb      sandbox.Sandbox
	claimed chan struct{} // closed when a session takes it: its watch ends
}

func newWarmPool(m *Manager, size int, set settings) *warmPool {
	return &warmPool{m: m, size: size, set: set, booting: map[*poolBoot]struct{}{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// stats is the pool now; a nil pool is an empty one.
func (p *warmPool) stats() PoolStats {
	if p == nil {
		return PoolStats{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return PoolStats{Size: p.size, Ready: len(p.ready), Booting: len(p.booting), Hits: p.hits, Misses: p.misses, Short: p.short}
}

// template is what the pool's VMs are; a nil pool's are nothing.
func (p *warmPool) template() settings {
	if p == nil {
		return settings{}
	}
	return p.set
}

// fits reports whether a session of set may take a pooled VM.
func (p *warmPool) fits(set settings) bool {
	return p != nil && p.size > 0 && set.VCPUs == p.set.VCPUs && set.MemoryMiB == p.set.MemoryMiB && set.Network == p.set.Network
}

// take hands out a ready VM for a session of set, or nil (counted as a
// miss while the pool is on). The caller pokes the pool once the session is
// admitted: a refill before would not count it.
func (p *warmPool) take(set settings) *pooledVM {
	if p == nil || p.size == 0 {
		return nil
	}
	defer p.observe()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.fits(set) || len(p.ready) == 0 || p.closed {
		p.misses++
		return nil
	}
	vm := p.ready[len(p.ready)-1]
	p.ready = p.ready[:len(p.ready)-1]
	p.hits++
	close(vm.claimed)
	return vm
}

// observe tells the observer how the pool stands.
func (p *warmPool) observe() {
	if o := p.m.cfg.Observer; o != nil {
		st := p.stats()
		o.PoolChanged(st.Size, st.Ready, st.Booting, st.Hits, st.Misses)
	}
}

// evictOne stops one ready VM to make room for a session, else cancels one
// boot (its room is free at once: it no longer counts); false when there
// is neither.
func (p *warmPool) evictOne() bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	if len(p.ready) == 0 {
		for b := range p.booting {
			delete(p.booting, b)
			p.mu.Unlock()
			b.cancel()
			p.m.log.Info("warm pool: a booting VM gives way to a session")
			p.observe()
			return true
		}
		p.mu.Unlock()
		return false
	}
	vm := p.ready[0]
	p.ready = p.ready[1:]
	close(vm.claimed)
	p.mu.Unlock()
	p.m.log.Info("warm pool: a pooled VM gives way to a session", "vm", vm.id)
	p.discard(vm)
	return true
}

// shrinkUnderPressure gives back one ready VM while the host's memory is
// past the gate's limit (other programs grew): idle VMs go before sessions
// are refused.
func (p *warmPool) shrinkUnderPressure() {
	mem, err := hostinfo.ReadMemory()
	if err != nil {
		return
	}
	if float64(mem.UsedMiB()) > float64(mem.TotalMiB)*p.m.cfg.MemoryLimitPercent/100 {
		if p.evictOne() {
			p.m.log.Warn("warm pool: host memory is past the limit: a pooled VM is stopped", "usedMiB", mem.UsedMiB(), "totalMiB", mem.TotalMiB)
		}
	}
}

// poke asks the refill loop to look again; p.mu may be held.
func (p *warmPool) poke() {
	if p == nil {
		return
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// start runs the refills until close.
func (p *warmPool) start() {
	if p == nil || p.size == 0 {
		return
	}
	p.mu.Lock()
	p.running = true
	p.mu.Unlock()
	go p.run()
}

func (p *warmPool) run() {
	defer close(p.done)
	tick := time.NewTicker(5 * time.Second) // also picks up room that freed up
	defer tick.Stop()
	for {
		p.fill()
		select {
		case <-p.wake:
		case <-tick.C:
			p.shrinkUnderPressure()
		}
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			return
		}
	}
}

// fill starts boots until the pool is (or will be) full, within the limits.
func (p *warmPool) fill() {
	for {
		p.mu.Lock()
		short := p.size - len(p.ready) - len(p.booting)
		wait := !p.failedAt.IsZero() && time.Since(p.failedAt) < retryAfterFailure
		p.mu.Unlock()
		if short <= 0 || wait {
			return
		}
		// The limits are checked, and the boot counted, under the
		// manager's lock: a session and the pool cannot both take the last
		// of the room.
		var b *poolBoot
		var ctx context.Context
		p.m.mu.Lock()
		err := p.m.roomLocked("", p.set)
		if err == nil {
			p.mu.Lock()
			if p.closed {
				err = ErrClosing
			} else {
				p.boots.Add(1)
				b = &poolBoot{}
				ctx, b.cancel = context.WithTimeout(context.Background(), 5*time.Minute)
				p.booting[b] = struct{}{}
			}
			p.mu.Unlock()
		}
		p.m.mu.Unlock()
		p.mu.Lock()
		if err != nil {
			p.short = err.Error()
		} else if p.failedAt.IsZero() {
			p.short = ""
		}
		p.mu.Unlock()
		if err != nil {
			p.m.log.Debug("warm pool: no room for another VM", "err", err)
			p.observe()
			return
		}
		go p.boot(ctx, b)
	}
}

// boot starts one pooled VM, unless b is cancelled meanwhile.
func (p *warmPool) boot(ctx context.Context, b *poolBoot) {
	defer p.boots.Done()
	defer b.cancel()
	id := newPoolID()
	dir := p.m.sandboxDir(id)
	started := time.Now()
	sb, err := p.startVM(ctx, id, dir)
	p.mu.Lock()
	_, counted := p.booting[b]
	delete(p.booting, b)
	evicted := !counted // a session took its room
	if err != nil && (evicted || p.closed) {
		p.mu.Unlock()
		os.RemoveAll(dir)
		p.observe()
		return
	}
	if err != nil {
		p.failedAt = time.Now()
		p.short = "a VM failed to boot: " + err.Error()
		p.mu.Unlock()
		os.RemoveAll(dir)
		p.m.log.Warn("warm pool: a VM failed to boot", "err", err)
		return
	}
	p.failedAt, p.short = time.Time{}, ""
	vm := &pooledVM{id: id, dir: dir, sb: sb, claimed: make(chan struct{})}
	if p.closed || evicted {
		p.mu.Unlock()
		p.discard(vm)
		return
	}
	p.ready = append(p.ready, vm)
	p.mu.Unlock()
	p.observe()
	p.m.log.Info("warm pool: a VM is ready", "vm", id, "boot", time.Since(started).Round(time.Millisecond))
	go p.watch(vm)
}

func (p *warmPool) startVM(ctx context.Context, id, dir string) (sandbox.Sandbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return p.m.driver.Start(ctx, sandbox.Spec{
		SessionID: id, Dir: dir, VCPUs: p.set.VCPUs, MemoryMiB: p.set.MemoryMiB, DiskMiB: p.m.cfg.DiskMiB,
		Network: p.set.Network, Movable: true,
	})
}

// watch replaces a pooled VM that exits while it waits.
func (p *warmPool) watch(vm *pooledVM) {
	select {
	case <-vm.claimed:
		return
	case <-vm.sb.Done():
	}
	p.mu.Lock()
	kept := false
	for i, r := range p.ready {
		if r == vm {
			p.ready = append(p.ready[:i], p.ready[i+1:]...)
			kept = true
			break
		}
	}
	p.mu.Unlock()
	if !kept {
		return // taken meanwhile: it is the session's
	}
	p.m.log.Warn("warm pool: a pooled VM exited", "vm", vm.id, "err", vm.sb.ExitError())
	p.discard(vm)
	p.poke()
}

// discard stops a pooled VM and removes its directory.
func (p *warmPool) discard(vm *pooledVM) {
	ctx, cancel := context.WithTimeout(context.Background(), p.m.cfg.StopTimeout)
	defer cancel()
	if err := vm.sb.Stop(ctx); err != nil {
		p.m.log.Error("warm pool: stop a VM", "vm", vm.id, "err", err)
	}
	if err := os.RemoveAll(vm.dir); err != nil {
		p.m.log.Error("warm pool: remove a VM's directory", "vm", vm.id, "err", err)
	}
	p.observe()
}

// close stops the refills and every pooled VM, cancelling boots under way
// and waiting for them to clean up.
func (p *warmPool) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	ready, running := p.ready, p.running
	p.ready = nil
	for b := range p.booting {
		b.cancel() // a VM half booted is not worth the wait (evicted ones are cancelled already)
	}
	p.mu.Unlock()
	p.poke()
	if running {
		<-p.done
	}
	p.boots.Wait() // a boot that finishes now discards its VM
	for _, vm := range ready {
		close(vm.claimed)
		p.discard(vm)
	}
}

func newPoolID() string {
	var b [12]byte
	rand.Read(b[:])
	return "p_" + hex.EncodeToString(b[:])
}
