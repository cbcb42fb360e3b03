package guest

import (
	"context"
	"net"

	"github.com/mdlayher/vsock"
)

// VsockDialer reaches a guest through AF_VSOCK (QEMU's vhost-vsock device).
func VsockDialer(cid, port uint32) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		res := make(chan result, 1)
		go func() {
			c, err := vsock.Dial(cid, port, nil)
			res <- result{c, err}
		}()
		select {
		case r := <-res:
			return r.c, r.err
		case <-ctx.Done():
			go func() { // close a connection that arrives too late
				if r := <-res; r.c != nil {
					r.c.Close()
				}
			}()
			return nil, ctx.Err()
		}
	}
}
