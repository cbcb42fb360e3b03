package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
)

// slotBits is the size of one session's block: a /29 holds the veth /30
// (.0-.3) and the guest /30 (.4-.7).
const slotBits = 29

// ErrPoolExhausted is returned by Setup when every /29 of the pool is in use.
var ErrPoolExhausted = errors.New("network: address pool exhausted")

// pool hands out /29 blocks of an IPv4 prefix, lowest free first, so a freed
// block is the next one reused (Teardown flushes the block's conntrack
// entries, which is what makes immediate reuse safe).
type pool struct {
	prefix netip.Prefix
	base   uint32
	mu     sync.Mutex
	used   []bool
	inUse  int
}

func newPool(p netip.Prefix) (*pool, error) {
	if !p.IsValid() || !p.Addr().Is4() {
		return nil, fmt.Errorf("network: pool %v: must be an IPv4 prefix", p)
	}
	if p.Bits() > slotBits {
		return nil, fmt.Errorf("network: pool %v: must be /%d or larger", p, slotBits)
	}
	if p.Masked() != p {
		return nil, fmt.Errorf("network: pool %v: host bits set (want %v)", p, p.Masked())
	}
	a := p.Addr().As4()
	return &pool{
		prefix: p,
		base:   binary.BigEndian.Uint32(a[:]),
		used:   make([]bool, 1<<(slotBits-p.Bits())),
	}, nil
}

// alloc reserves the lowest free block and returns its index.
func (p *pool) alloc() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, u := range p.used {
		if !u {
			p.used[i] = true
			p.inUse++
			return i, nil
		}
	}
	return 0, ErrPoolExhausted
}

// free returns a block to the pool. Freeing a free block is a no-op.
func (p *pool) free(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i >= 0 && i < len(p.used) && p.used[i] {
		p.used[i] = false
		p.inUse--
	}
}

// slotAddrs is the addressing plan of one block.
type slotAddrs struct {
	HostVeth netip.Prefix // .1/30, host side of the veth pair
	NSVeth   netip.Prefix // .2/30, session side of the veth pair
	Gateway  netip.Prefix // .5/30, on the TAP: the guest's default gateway
	Guest    netip.Prefix // .6/30, the guest's own address
	GuestNet netip.Prefix // .4/30, routed from the host ns via NSVeth
}

func (p *pool) addrs(i int) slotAddrs {
	n := p.base + uint32(i)<<(32-slotBits)
	at := func(off uint32) netip.Addr {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], n+off)
		return netip.AddrFrom4(b)
	}
	return slotAddrs{
		HostVeth: netip.PrefixFrom(at(1), 30),
		NSVeth:   netip.PrefixFrom(at(2), 30),
		Gateway:  netip.PrefixFrom(at(5), 30),
		Guest:    netip.PrefixFrom(at(6), 30),
		GuestNet: netip.PrefixFrom(at(4), 30),
	}
}
