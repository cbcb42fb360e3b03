package guest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Forwarding is the other direction of a tunnel: the host reaches a service
// that listens on the guest's loopback (an agent's own HTTP gateway), without
// any network between them.

const forwardDialTimeout = 5 * time.Second

func (s *Server) handleForward(w http.ResponseWriter, r *http.Request) {
	if !wantsUpgrade(r, UpgradeForward) {
		writeError(w, &Error{Status: http.StatusBadRequest, Code: CodeInvalid,
			Message: "forward needs Connection: Upgrade and Upgrade: " + UpgradeForward})
		return
	}
	var req ForwardRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Port < 1 || req.Port > 65535 {
		writeError(w, &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: "port must be 1-65535"})
		return
	}
	d := net.Dialer{Timeout: forwardDialTimeout}
	local, err := d.DialContext(r.Context(), "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(req.Port)))
	if err != nil {
		// Servers that listen on "localhost" may have taken ::1 alone.
		local, err = d.DialContext(r.Context(), "tcp6", net.JoinHostPort("::1", strconv.Itoa(req.Port)))
	}
	if err != nil {
		writeError(w, &Error{Status: http.StatusBadGateway, Code: CodeNotFound,
			Message: fmt.Sprintf("nothing answers on 127.0.0.1:%d or [::1]:%d in the guest", req.Port, req.Port)})
		return
	}
	host, err := switchProtocols(w, UpgradeForward)
	if err != nil {
		local.Close()
		return
	}
	splice(host, local)
}

// splice copies bytes both ways until either side ends, then closes both.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	a.Close()
	b.Close()
	<-done
}

// Forward connects to 127.0.0.1:port inside the guest.
func (c *Client) Forward(ctx context.Context, port int) (net.Conn, error) {
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("guest forward: port %d out of range", port)
	}
	return c.upgrade(ctx, PathForward, UpgradeForward, ForwardRequest{Port: port}, 30*time.Second)
}

// ForwardDialer is a Dialer to one port in the guest: an http.Transport
// using it reaches a service listening there.
func (c *Client) ForwardDialer(port int) Dialer {
	return func(ctx context.Context) (net.Conn, error) { return c.Forward(ctx, port) }
}
