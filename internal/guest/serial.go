package guest

import (
	"context"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// SerialChannel is the host end of a virtio-serial control channel. QEMU
// exposes the port as a Unix socket; one yamux session runs over it and every
// connection to the guest is a stream of that session. Until the guest opens
// its end, QEMU leaves what the host sends in the socket, so a request made
// while the guest boots is answered once it is up.
type SerialChannel struct {
	path string

	mu   sync.Mutex
	conn net.Conn
	sess *yamux.Session
}

// NewSerialChannel returns a channel to the QEMU chardev socket at path.
func NewSerialChannel(path string) *SerialChannel { return &SerialChannel{path: path} }

// Dial opens a stream to the guest, connecting first if needed.
func (c *SerialChannel) Dial(ctx context.Context) (net.Conn, error) {
	sess, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	return sess.Open()
}

func (c *SerialChannel) session(ctx context.Context) (*yamux.Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil && !c.sess.IsClosed() {
		return c.sess, nil
	}
	if c.conn != nil {
		c.conn.Close()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return nil, err
	}
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	// A booting guest acknowledges streams only once it is up; each request
	// carries its own deadline, so the session itself waits as long as needed.
	cfg.StreamOpenTimeout = 0
	cfg.ConnectionWriteTimeout = 30 * time.Second
	sess, err := yamux.Client(conn, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	c.conn, c.sess = conn, sess
	return sess, nil
}

// Close ends the session.
func (c *SerialChannel) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil {
		c.sess.Close()
	}
	if c.conn != nil {
		return c.conn.Close()
	}
	return nil
}
