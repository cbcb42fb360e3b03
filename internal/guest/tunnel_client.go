package guest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// ErrNoTunnelConn is TunnelAccept's answer when no local connection came
// within TunnelAcceptWait; ask again.
var ErrNoTunnelConn = errors.New("guest: no tunnel connection yet; accept again")

// Tunnel serving on the host.
const (
	tunnelAcceptors   = 4 // accept requests ServeTunnel keeps waiting
	tunnelMinBackoff  = 50 * time.Millisecond
	tunnelMaxBackoff  = 5 * time.Second
	tunnelCloseWithin = 2 * time.Second
)

func checkTunnel(name string, port int, needPort bool) error {
	switch {
	case !validTunnelName(name):
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalid,
			Message: fmt.Sprintf("tunnel name %q must match ^[a-z0-9-]{1,%d}$", truncate(name, 64), MaxTunnelNameLen)}
	case needPort && (port < MinTunnelPort || port > MaxTunnelPort):
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalid,
			Message: fmt.Sprintf("tunnel port %d is outside %d-%d", port, MinTunnelPort, MaxTunnelPort)}
	}
	return nil
}

// TunnelListen makes the guest listen on 127.0.0.1:port for the tunnel
// name. It is idempotent for the same name and port; another tunnel or
// program on that port is a CodeConflict error, as is the name on another
// port. At most MaxTunnels tunnels exist at once.
func (c *Client) TunnelListen(ctx context.Context, name string, port int) error {
	if err := checkTunnel(name, port, true); err != nil {
		return err
	}
	return c.call(ctx, http.MethodPost, PathTunnelListen, TunnelRequest{Name: name, Port: port}, nil)
}

// TunnelClose stops the tunnel's listener and closes its connections. A
// tunnel that does not exist is not an error.
func (c *Client) TunnelClose(ctx context.Context, name string) error {
	if err := checkTunnel(name, 0, false); err != nil {
		return err
	}
	return c.call(ctx, http.MethodPost, PathTunnelClose, TunnelRequest{Name: name}, nil)
}

// TunnelAccept waits for a program in the guest to connect to the tunnel's
// port and returns that connection, carried over the control channel. It
// waits at most TunnelAcceptWait (then ErrNoTunnelConn) or until ctx ends.
// Closing the returned conn closes the guest's local connection.
func (c *Client) TunnelAccept(ctx context.Context, name string) (net.Conn, error) {
	if err := checkTunnel(name, 0, false); err != nil {
		return nil, err
	}
	// The guest answers 204 after TunnelAcceptWait; the slack keeps a guest
	// that never does from pinning the call.
	conn, err := c.upgrade(ctx, PathTunnelAccept, UpgradeTunnel, TunnelRequest{Name: name}, TunnelAcceptWait+execDeadlineSlack)
	if errors.Is(err, errNoContent) {
		return nil, ErrNoTunnelConn
	}
	return conn, err
}

// ServeTunnel opens the tunnel name on the guest's port and hands every
// connection a program in the guest makes to it to handle, each in its own
// goroutine; the conn is closed when handle returns. It keeps several accept
// requests waiting so that connections do not queue behind one another,
// retries with backoff while the guest is unreachable, and opens the tunnel
// again if the guest lost it (a restart). When ctx ends it closes the
// connections it carries, waits for the handlers to return, closes the
// tunnel on the guest (best effort) and returns nil. Only the first
// TunnelListen's failure is returned as an error.
func ServeTunnel(ctx context.Context, c *Client, name string, port int, handle func(net.Conn)) error {
	if err := c.TunnelListen(ctx, name, port); err != nil {
		return err
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		conns   = make(map[net.Conn]struct{})
		stopped bool
	)
	serve := func(conn net.Conn) {
		mu.Lock()
		if stopped {
			mu.Unlock()
			conn.Close()
			return
		}
		conns[conn] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(conns, conn)
				mu.Unlock()
				conn.Close()
			}()
			handle(conn)
		})
	}
	acceptor := func() {
		backoff := tunnelMinBackoff
		for ctx.Err() == nil {
			conn, err := c.TunnelAccept(ctx, name)
			switch {
			case err == nil:
				backoff = tunnelMinBackoff
				serve(conn)
				continue
			case errors.Is(err, ErrNoTunnelConn):
				continue
			case ctx.Err() != nil:
				return
			case IsNotFound(err):
				_ = c.TunnelListen(ctx, name, port)
			}
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(2*backoff, tunnelMaxBackoff)
		}
	}
	for range tunnelAcceptors {
		wg.Go(acceptor)
	}

	<-ctx.Done()
	mu.Lock()
	stopped = true
	for conn := range conns {
		conn.Close()
	}
	mu.Unlock()
	wg.Wait()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tunnelCloseWithin)
	defer cancel()
	_ = c.TunnelClose(cctx, name)
	return nil
}
