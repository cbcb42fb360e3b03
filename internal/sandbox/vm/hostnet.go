package vm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"sync"

	"github.com/execlaw/execlaw/internal/network"
)

// HostNetwork is the VM drivers' NetworkProvider on a real host: the
// internal/network manager, created on first use so that a server that never
// starts a networked VM never touches the host's firewall or forwarding.
// Give cfg the server's Instance (network.InstanceID of its data directory)
// so that servers sharing a host keep to their own names, pool block and
// firewall table, and sweep only their own leftovers.
type HostNetwork struct {
	cfg network.Config

	mu  sync.Mutex
	m   *network.Manager
	err error
}

// NewHostNetwork returns a provider that sets up networking with cfg when
// first needed.
func NewHostNetwork(cfg network.Config) *HostNetwork { return &HostNetwork{cfg: cfg} }

// Init creates the manager now (claiming this instance's block of the
// address pool) and removes what an earlier run of the same instance left
// behind; other instances' resources are not touched.
func (h *HostNetwork) Init(ctx context.Context) error {
	m, err := h.manager()
	if err != nil {
		return err
	}
	return m.Sweep(ctx)
}

func (h *HostNetwork) manager() (*network.Manager, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil && h.err == nil {
		h.m, h.err = network.New(h.cfg)
		if h.err != nil {
			h.err = fmt.Errorf("VM networking is unavailable on this host: %w; create sessions with network none", h.err)
		}
	}
	return h.m, h.err
}

// Setup gives a session its network.
func (h *HostNetwork) Setup(ctx context.Context, sessionID string) (NetAttachment, error) {
	m, err := h.manager()
	if err != nil {
		return nil, err
	}
	a, err := m.Setup(ctx, sessionID)
	if err != nil {
		return nil, err
	}
	return hostAttachment{a}, nil
}

// Teardown removes a session's network.
func (h *HostNetwork) Teardown(ctx context.Context, a NetAttachment) error {
	ha, ok := a.(hostAttachment)
	if !ok {
		return fmt.Errorf("foreign network attachment %T", a)
	}
	h.mu.Lock()
	m := h.m
	h.mu.Unlock()
	return m.Teardown(ctx, ha.a)
}

// Close removes every session network and the firewall table.
func (h *HostNetwork) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		return nil
	}
	return h.m.Close()
}

type hostAttachment struct{ a *network.Attachment }

func (h hostAttachment) TapName() string           { return h.a.TapName }
func (h hostAttachment) MAC() string               { return h.a.MAC }
func (h hostAttachment) GuestIP() netip.Prefix     { return h.a.GuestIP }
func (h hostAttachment) Gateway() netip.Addr       { return h.a.Gateway }
func (h hostAttachment) DNS() []netip.Addr         { return h.a.DNS }
func (h hostAttachment) Start(cmd *exec.Cmd) error { return h.a.Start(cmd) }

// Describe says, without changing anything, which instance this is, the
// block of the address pool it holds or would claim, the other instances on
// this host, and what guests may reach.
func (h *HostNetwork) Describe() (network.Info, error) { return network.Describe(h.cfg) }

// Check says whether networking can work here, without changing anything.
func (h *HostNetwork) Check() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return h.err
	}
	if h.m != nil {
		return nil
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, TAP devices, nftables)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return errors.New("no /dev/net/tun")
	}
	return nil
}
