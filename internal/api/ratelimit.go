package api

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// Failed sign-ins (a wrong token on POST /login or in Authorization: Bearer)
// are limited per client: each client has a bucket of loginBurst failures
// that refills one every loginRefill (10 a minute). A client whose bucket is
// empty is answered 429 before its credentials are even looked at, so it
// learns nothing more until the bucket refills. Successful sign-ins cost
// nothing, and other clients are unaffected.
const (
	loginBurst  = 10
	loginRefill = 6 * time.Second
	// maxLimitedClients caps the table: a flood of distinct addresses
	// cannot grow it without bound.
	maxLimitedClients = 4096
)

// failureLimiter is a token bucket per key: a client address for failed
// sign-ins, a user for pausing and resuming sessions.
type failureLimiter[K comparable] struct {
	mu      sync.Mutex
	burst   float64
	refill  time.Duration
	max     int
	now     func() time.Time
	clients map[K]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newFailureLimiter[K comparable](burst int, refill time.Duration, max int) *failureLimiter[K] {
	return &failureLimiter[K]{burst: float64(burst), refill: refill, max: max, now: time.Now, clients: map[K]*bucket{}}
}

// clientKey is the address a request came from: the peer's IP address, with
// an IPv6 address widened to its /64 (one host usually holds a whole /64, and
// could otherwise take a new address for every try). An address that does
// not parse shares one bucket with every other such address.
func clientKey(remoteAddr string) netip.Addr {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	a = a.WithZone("").Unmap()
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

// level refills b up to now and returns its tokens.
func (l *failureLimiter[K]) level(b *bucket, now time.Time) float64 {
	if el := now.Sub(b.at); el > 0 {
		b.tokens = min(l.burst, b.tokens+float64(el)/float64(l.refill))
		b.at = now
	}
	return b.tokens
}

// blocked reports whether the client has no failures left, and when it may
// try again.
func (l *failureLimiter[K]) blocked(key K) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.clients[key]
	if b == nil {
		return 0, false
	}
	tokens := l.level(b, l.now())
	if tokens >= 1 {
		return 0, false
	}
	return time.Duration((1 - tokens) * float64(l.refill)), true
}

// fail spends one of the client's failures.
func (l *failureLimiter[K]) fail(key K) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.clients[key]
	if b == nil {
		if len(l.clients) >= l.max {
			l.makeRoom(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.clients[key] = b
	}
	l.level(b, now)
	b.tokens = max(0, b.tokens-1)
}

// makeRoom drops clients whose bucket is full again (they are as if never
// seen); when none is, it drops the one with the most failures left: a
// flood of new addresses with a failure or two each pushes out its own
// entries before those of a client that used up its failures.
func (l *failureLimiter[K]) makeRoom(now time.Time) {
	var fullest K
	best := -1.0
	for k, b := range l.clients {
		t := l.level(b, now)
		if t >= l.burst {
			delete(l.clients, k)
			continue
		}
		if t > best {
			fullest, best = k, t
		}
	}
	if len(l.clients) >= l.max {
		delete(l.clients, fullest)
	}
}

func (l *failureLimiter[K]) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}

// Pausing and resuming cost a VM's save or restore: one user may do either
// lifecycleBurst times in a row, then one every lifecycleRefill.
const (
	lifecycleBurst  = 20
	lifecycleRefill = 3 * time.Second
)
