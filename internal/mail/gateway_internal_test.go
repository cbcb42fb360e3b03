package mail

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/egress"
)

// The gateway's client reaches its configured address and nothing else:
// not another port or address of this host, not the metadata address when
// the gateway is configured elsewhere.
func TestGatewayClientReachesOnlyItsAddress(t *testing.T) {
	var hits atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer other.Close()
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer gw.Close()

	g, err := NewGateway(gw.URL, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := g.client.Get(gw.URL + GatewayPath)
	if err != nil {
		t.Fatalf("the configured address: %v", err)
	}
	resp.Body.Close()

	for _, target := range []string{other.URL, "http://169.254.169.254/gateway/email/send"} {
		_, err := g.client.Get(target)
		var re *egress.RefusedError
		if !errors.As(err, &re) {
			t.Errorf("%s: error %v, want a refusal", target, err)
		}
	}
	if hits.Load() != 0 {
		t.Error("another address was reached")
	}

	// On exe.dev the default is the metadata address: that one address (on
	// port 80), nothing else.
	d, err := NewGateway("", 0)
	if err != nil {
		t.Fatal(err)
	}
	p := egress.PolicyOf(d.client.Transport)
	if p == nil || p.String() != "only 169.254.169.254:80" {
		t.Errorf("default gateway policy %v", p)
	}
}
