package guest

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"time"
)

// PathInit is where the host (re)initialises a VM guest: after a restore
// from a snapshot, or when a pooled VM is claimed by a session.
const PathInit = "/v1/init"

// Bounds of an init request's entropy.
const (
	MinInitEntropy = 32
	MaxInitEntropy = 512
)

// InitRequest is what a guest is told when it starts serving a session it
// was not booted for, or resumes after time stood still: the host's clock,
// fresh entropy, and optionally a new host name and network setup.
type InitRequest struct {
	// Time is the host's clock when it sent the request.
	Time time.Time `json:"time"`
	// Entropy is random bytes the guest mixes into its pool and reseeds
	// from, so that two guests restored from the same state do not share
	// random numbers.
	Entropy []byte `json:"entropy"`
	// Hostname, when set, replaces the host name.
	Hostname string `json:"hostname,omitempty"`
	// Network, when set, replaces the NIC's address, route and resolvers.
	Network *NetworkSetup `json:"network,omitempty"`
}

// NetworkSetup is a guest's network configuration.
type NetworkSetup struct {
	IP      netip.Prefix `json:"ip"`
	Gateway netip.Addr   `json:"gateway"`
	DNS     []netip.Addr `json:"dns,omitempty"`
	MTU     int          `json:"mtu,omitempty"`
}

// InitResult says what the guest changed.
type InitResult struct {
	// ClockOffsetMs is how far the guest's clock was from the host's (guest
	// minus host, as the request arrived); ClockSet whether it was set.
	ClockOffsetMs int64 `json:"clockOffsetMs"`
	ClockSet      bool  `json:"clockSet"`
}

// Validate checks the request as the guest and the host both must.
func (r InitRequest) Validate() error {
	if r.Time.IsZero() {
		return fmt.Errorf("init: no time")
	}
	if len(r.Entropy) < MinInitEntropy || len(r.Entropy) > MaxInitEntropy {
		return fmt.Errorf("init: entropy of %d bytes, want %d to %d", len(r.Entropy), MinInitEntropy, MaxInitEntropy)
	}
	if r.Hostname != "" && !hostnameRE.MatchString(r.Hostname) {
		return fmt.Errorf("init: hostname %q is not a valid host name", r.Hostname)
	}
	if n := r.Network; n != nil {
		c := BootConfig{Channel: "serial", IP: n.IP, Gateway: n.Gateway, DNS: n.DNS, MTU: n.MTU}
		if !n.IP.IsValid() {
			return fmt.Errorf("init: network without an address")
		}
		if err := c.Validate(); err != nil {
			return fmt.Errorf("init: %w", err)
		}
	}
	return nil
}

// Initializer applies an InitRequest to the machine the guest runs in. Only
// a VM's init has one: the process sandbox shares the host's clock and
// network, which are not the guest's to change.
type Initializer func(ctx context.Context, req InitRequest) (InitResult, error)

func (s *Server) handleInit(w http.ResponseWriter, r *http.Request) {
	if s.init == nil {
		writeError(w, &Error{Status: http.StatusNotImplemented, Code: CodeInvalid, Message: "this guest is not a VM: there is nothing to initialise"})
		return
	}
	var req InitRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := req.Validate(); err != nil {
		writeError(w, &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: err.Error()})
		return
	}
	res, err := s.init(r.Context(), req)
	if err != nil {
		writeError(w, &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// Init (re)initialises a VM guest: clock, entropy, and optionally host name
// and network.
func (c *Client) Init(ctx context.Context, req InitRequest) (InitResult, error) {
	if err := req.Validate(); err != nil {
		return InitResult{}, err
	}
	var res InitResult
	err := c.call(ctx, http.MethodPost, PathInit, req, &res)
	return res, err
}
