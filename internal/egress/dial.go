package egress

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// DialContext connects like net.Dialer.DialContext, but every address the
// name resolves to is checked in the dialer's ControlContext, which runs
// after the socket is created and before connect: a refused address gets no
// packet. When every address is refused the error wraps a *RefusedError
// (errors.As finds it). Only TCP is dialled.
func (p *Policy) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("outbound policy: network %q is not used", network)}
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	d := &net.Dialer{
		Timeout:        30 * time.Second,
		KeepAlive:      30 * time.Second,
		ControlContext: p.control(host),
	}
	return d.DialContext(ctx, network, address)
}

// control checks the address a socket is about to connect to; host is the
// name that was dialled.
func (p *Policy) control(host string) func(ctx context.Context, network, address string, c syscall.RawConn) error {
	return func(_ context.Context, _, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("outbound policy: cannot read the address %q: %w", address, err)
		}
		return p.Check(host, ap)
	}
}

// CheckHost resolves host and reports whether a connection to it on port
// could be made: nil when one of its addresses is allowed, else the
// *RefusedError of the first. A name that does not resolve now is not
// refused here (the connection decides, and says why it failed). This is an
// early, friendlier answer; the check at dial time is the one that holds.
func (p *Policy) CheckHost(ctx context.Context, host string, port uint16) error {
	if ip, err := netip.ParseAddr(host); err == nil {
		return p.Check(host, netip.AddrPortFrom(ip, port))
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return nil
	}
	var first error
	for _, ip := range ips {
		err := p.Check(host, netip.AddrPortFrom(ip, port))
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// Transport is an http.Transport whose connections go only where its policy
// allows, and never through a proxy from the environment (HTTP_PROXY and
// the like would be dialled instead of the target, so the target would go
// unchecked). Its fields may be tuned as an http.Transport's.
type Transport struct {
	*http.Transport
	policy *Policy
}

// NewTransport returns a transport with http.DefaultTransport's timeouts
// that dials through p.
func NewTransport(p *Policy) *Transport {
	return &Transport{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           p.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: 1 * time.Second,
		},
		policy: p,
	}
}

// Policy is the policy the transport dials through.
func (t *Transport) Policy() *Policy { return t.policy }

// PolicyOf is the policy a round tripper dials through: that of a
// *Transport, or of a wrapper that reports its own with a Policy method;
// nil for any other.
func PolicyOf(rt http.RoundTripper) *Policy {
	if w, ok := rt.(interface{ Policy() *Policy }); ok {
		return w.Policy()
	}
	return nil
}

// Client returns an HTTP client that dials through p and follows no
// redirects.
func Client(p *Policy) *http.Client {
	return &http.Client{Transport: NewTransport(p), CheckRedirect: NoRedirects}
}

// RedirectError is a redirect that was not followed: a redirect would take
// the request (and its key) to an address nobody checked when the URL was
// given, and past the point where the user's URL is shown.
type RedirectError struct {
	Status int // the 3xx status
}

func (e *RedirectError) Error() string {
	return fmt.Sprintf("the endpoint redirected (HTTP %d); redirects are not followed: give the address it redirects to", e.Status)
}

// NoRedirects is an http.Client CheckRedirect that follows no redirect: the
// request fails with a *RedirectError (wrapped in a *url.Error).
func NoRedirects(req *http.Request, _ []*http.Request) error {
	status := 0
	if req.Response != nil {
		status = req.Response.StatusCode
	}
	return &RedirectError{Status: status}
}
