package vm

import (
	"context"
	"net/netip"
	"os/exec"
)

// NetworkProvider gives a session's VM its network: a TAP device inside a
// network namespace of the session's own, with NAT and isolation rules
// around it. internal/network implements it.
type NetworkProvider interface {
	Setup(ctx context.Context, sessionID string) (NetAttachment, error)
	Teardown(ctx context.Context, a NetAttachment) error
}

// NetAttachment is one session's network.
type NetAttachment interface {
	TapName() string
	MAC() string
	GuestIP() netip.Prefix
	Gateway() netip.Addr
	DNS() []netip.Addr
	// Start starts cmd (the VMM) inside the session's network namespace,
	// where the TAP device is. Pdeathsig is tied to the OS thread that forks,
	// so Start must fork from a thread that lives on (switch back and unlock
	// afterwards), or the VMM dies when that thread exits.
	Start(cmd *exec.Cmd) error
}
