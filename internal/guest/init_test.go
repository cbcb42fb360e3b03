package guest

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestInitRequestValidate(t *testing.T) {
	ok := InitRequest{Time: time.Now(), Entropy: make([]byte, 64)}
	net := &NetworkSetup{IP: netip.MustParsePrefix("10.201.0.2/29"), Gateway: netip.MustParseAddr("10.201.0.1")}
	for _, tc := range []struct {
		name string
		req  func(r InitRequest) InitRequest
		want string
	}{
		{"plain", func(r InitRequest) InitRequest { return r }, ""},
		{"with network and name", func(r InitRequest) InitRequest { r.Network, r.Hostname = net, "execlaw-abc"; return r }, ""},
		{"no time", func(r InitRequest) InitRequest { r.Time = time.Time{}; return r }, "no time"},
		{"little entropy", func(r InitRequest) InitRequest { r.Entropy = make([]byte, 8); return r }, "entropy"},
		{"much entropy", func(r InitRequest) InitRequest { r.Entropy = make([]byte, 4096); return r }, "entropy"},
		{"hostile name", func(r InitRequest) InitRequest { r.Hostname = "a b;reboot"; return r }, "host name"},
		{"no address", func(r InitRequest) InitRequest { r.Network = &NetworkSetup{}; return r }, "without an address"},
		{"gateway elsewhere", func(r InitRequest) InitRequest {
			r.Network = &NetworkSetup{IP: net.IP, Gateway: netip.MustParseAddr("192.168.1.1")}
			return r
		}, "not a usable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.req(ok).Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
}

// Only a VM's init changes the machine: the process sandbox's guest refuses,
// and a VM's hands the request over whole.
func TestInitEndpoint(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	_, err := g.c.Init(context.Background(), InitRequest{Time: time.Now(), Entropy: make([]byte, 32)})
	var ge *Error
	if !errors.As(err, &ge) || ge.Status != http.StatusNotImplemented {
		t.Fatalf("init of a process guest: %v", err)
	}

	var got InitRequest
	vm := startGuest(t, ServerConfig{Init: func(_ context.Context, req InitRequest) (InitResult, error) {
		got = req
		return InitResult{ClockOffsetMs: -1234, ClockSet: true}, nil
	}})
	sent := InitRequest{Time: time.Now().UTC().Truncate(time.Millisecond), Entropy: []byte(strings.Repeat("e", 40)), Hostname: "execlaw-x",
		Network: &NetworkSetup{IP: netip.MustParsePrefix("10.201.0.2/29"), Gateway: netip.MustParseAddr("10.201.0.1"), DNS: []netip.Addr{netip.MustParseAddr("192.0.2.53")}}}
	res, err := vm.c.Init(context.Background(), sent)
	if err != nil || res.ClockOffsetMs != -1234 || !res.ClockSet {
		t.Fatalf("init: %+v %v", res, err)
	}
	if !got.Time.Equal(sent.Time) || string(got.Entropy) != string(sent.Entropy) || got.Hostname != sent.Hostname || got.Network.IP != sent.Network.IP || got.Network.DNS[0] != sent.Network.DNS[0] {
		t.Fatalf("the guest got %+v", got)
	}
	// The guest checks too: a host client is not the only one that can call.
	resp, err := vm.c.send(context.Background(), http.MethodPost, PathInit, InitRequest{Time: time.Now(), Entropy: []byte("short")})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("an invalid init answered %d", resp.StatusCode)
	}
}
