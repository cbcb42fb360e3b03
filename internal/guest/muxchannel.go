package guest

import (
	"context"
	"net"
	"sync"

	"github.com/hashicorp/yamux"
)

// muxChannel is one yamux session over one connection to a guest, made on
// first use and made again once it has died: what SerialChannel and
// PodChannel share. connect makes the connection (a chardev socket, or an
// authenticated TLS connection); config is the session's.
type muxChannel struct {
	connect func(context.Context) (net.Conn, error)
	config  func() *yamux.Config

	mu   sync.Mutex
	conn net.Conn
	sess *yamux.Session
}

// session returns the live session, connecting first if there is none.
func (c *muxChannel) session(ctx context.Context) (*yamux.Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil && !c.sess.IsClosed() {
		return c.sess, nil
	}
	if c.conn != nil {
		c.conn.Close()
		c.conn, c.sess = nil, nil
	}
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	sess, err := yamux.Client(conn, c.config())
	if err != nil {
		conn.Close()
		return nil, err
	}
	c.conn, c.sess = conn, sess
	return sess, nil
}

// Close ends the session; streams still open fail.
func (c *muxChannel) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil {
		c.sess.Close()
	}
	var err error
	if c.conn != nil {
		err = c.conn.Close()
	}
	c.conn, c.sess = nil, nil
	return err
}
