package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// endpoint is a loopback HTTP server that counts what reaches it.
type endpoint struct {
	*httptest.Server
	hits atomic.Int32
}

func newEndpoint(t *testing.T, h http.HandlerFunc) *endpoint {
	t.Helper()
	e := &endpoint{}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.hits.Add(1)
		if h != nil {
			h(w, r)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(e.Close)
	return e
}

func refusal(t *testing.T, err error) *RefusedError {
	t.Helper()
	var re *RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("error %T %v, want a *RefusedError", err, err)
	}
	return re
}

func TestLoopbackEndpointByPolicy(t *testing.T) {
	e := newEndpoint(t, nil)

	_, err := Client(PublicOnly()).Get(e.URL)
	if re := refusal(t, err); re.Class != Loopback {
		t.Errorf("refused as %s", re.Class)
	}
	if n := e.hits.Load(); n != 0 {
		t.Fatalf("the endpoint got %d requests under public", n)
	}

	resp, err := Client(PublicAndLoopback()).Get(e.URL)
	if err != nil {
		t.Fatalf("loopback policy: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || e.hits.Load() != 1 {
		t.Errorf("loopback policy: %s, %d requests", resp.Status, e.hits.Load())
	}

	// An explicit entry for exactly this address and port allows it.
	u, _ := url.Parse(e.URL)
	p, err := PublicOnly().With(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := Client(p).Get(e.URL); err != nil {
		t.Errorf("explicit entry %s: %v", u.Host, err)
	} else {
		resp.Body.Close()
	}
}

// A name is checked on what it resolves to, at dial time: "localhost" is
// loopback whatever it is called.
func TestLocalhostNameRefusedUnderPublic(t *testing.T) {
	e := newEndpoint(t, nil)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(e.URL, "http://"))
	_, err := Client(PublicOnly()).Get("http://localhost:" + port + "/")
	re := refusal(t, err)
	if re.Host != "localhost" || re.Class != Loopback || !re.Addr.Addr().IsLoopback() {
		t.Errorf("refusal %+v", re)
	}
	if e.hits.Load() != 0 {
		t.Error("the endpoint was reached")
	}
	// The same name under loopback works: the name is not what is refused.
	resp, err := Client(PublicAndLoopback()).Get("http://localhost:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// The metadata address and a private address are refused in the dialer's
// Control function, which runs before connect: the error is the policy's,
// not a timeout or a refused connection, and it comes at once although
// nothing here would answer on those addresses.
func TestRefusedBeforeConnect(t *testing.T) {
	for _, addr := range []string{"169.254.169.254:80", "10.0.0.1:80", "[::ffff:169.254.169.254]:80", "0.0.0.0:80"} {
		t.Run(addr, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			start := time.Now()
			conn, err := PublicAndLoopback().DialContext(ctx, "tcp", addr)
			if err == nil {
				conn.Close()
				t.Fatal("connected")
			}
			re := refusal(t, err)
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != "dial" {
				t.Errorf("error %T %v, want a dial *net.OpError", err, err)
			}
			if !strings.Contains(err.Error(), "outbound policy: connection to") {
				t.Errorf("message %q", err)
			}
			if re.Class == Public || re.Class == Loopback {
				t.Errorf("class %s", re.Class)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("refusal took %v: was a connection tried?", took)
			}
		})
	}
	// The same Control function, called the way net.Dialer calls it, is what
	// refuses: it is handed the resolved address before connect(2).
	if err := PublicAndLoopback().control("metadata.google.internal")(t.Context(), "tcp4", "169.254.169.254:80", nil); err == nil {
		t.Error("control allowed the metadata address")
	} else if re := refusal(t, err); re.Host != "metadata.google.internal" {
		t.Errorf("refusal %+v", re)
	}
	if err := PublicAndLoopback().control("")(t.Context(), "tcp4", "127.0.0.1:80", nil); err != nil {
		t.Errorf("control refused loopback under loopback: %v", err)
	}
	if _, err := PublicAndLoopback().DialContext(t.Context(), "udp", "127.0.0.1:53"); err == nil {
		t.Error("udp dialled")
	}
}

// A redirect is an error, never followed: not to a refused address, and not
// to an allowed one either.
func TestRedirectsAreNotFollowed(t *testing.T) {
	other := newEndpoint(t, nil)
	for _, target := range []string{"http://169.254.169.254/latest/meta-data/", other.URL + "/elsewhere"} {
		e := newEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target, http.StatusFound)
		})
		_, err := Client(PublicAndLoopback()).Get(e.URL)
		var re *RedirectError
		if !errors.As(err, &re) || re.Status != http.StatusFound {
			t.Fatalf("redirect to %s: error %T %v, want a *RedirectError", target, err, err)
		}
		if !strings.Contains(err.Error(), "redirected (HTTP 302)") {
			t.Errorf("message %q", err)
		}
		if errors.As(err, new(*RefusedError)) {
			t.Errorf("redirect to %s was dialled: %v", target, err)
		}
	}
	if n := other.hits.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests", n)
	}
}

func TestTransportUsesNoEnvironmentProxy(t *testing.T) {
	tr := NewTransport(PublicOnly())
	if tr.Proxy != nil {
		t.Error("the transport takes a proxy (HTTP_PROXY would bypass the policy)")
	}
	if PolicyOf(tr) != tr.Policy() || PolicyOf(tr).String() != "public" {
		t.Errorf("PolicyOf = %v", PolicyOf(tr))
	}
	if PolicyOf(http.DefaultTransport) != nil {
		t.Error("PolicyOf(http.DefaultTransport) is not nil")
	}
}

func TestCheckHost(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		p     *Policy
		host  string
		class Class // Public: allowed
	}{
		{PublicOnly(), "localhost", Loopback},
		{PublicAndLoopback(), "localhost", Public},
		{PublicOnly(), "127.0.0.1", Loopback},
		{PublicAndPrivate(), "169.254.169.254", Never},
		{PublicAndLoopback(), "10.0.0.1", Private},
		{PublicAndLoopback(), "::ffff:169.254.169.254", Never},
	} {
		err := tc.p.CheckHost(ctx, tc.host, 80)
		if tc.class == Public {
			if err != nil {
				t.Errorf("%s under %s: %v", tc.host, tc.p, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s under %s: allowed", tc.host, tc.p)
			continue
		}
		if re := refusal(t, err); re.Class != tc.class {
			t.Errorf("%s under %s: %s, want %s", tc.host, tc.p, re.Class, tc.class)
		}
	}
	p, _ := PublicOnly().With("localhost:8080")
	if err := p.CheckHost(ctx, "localhost", 8080); err != nil {
		t.Errorf("a name entry: %v", err)
	}
	if err := p.CheckHost(ctx, "localhost", 8081); err == nil {
		t.Error("a name entry allowed another port")
	}
}

func ExampleParse() {
	p, _ := Parse("loopback,10.0.0.5:11434")
	fmt.Println(p)
	// Output: loopback,10.0.0.5:11434
}
