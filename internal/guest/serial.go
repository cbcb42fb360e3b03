package guest

import (
	"context"
	"io"
	"net"
	"time"

	"github.com/hashicorp/yamux"
)

// SerialChannel is the host end of a virtio-serial control channel. QEMU
// exposes the port as a Unix socket; one yamux session runs over it and every
// connection to the guest is a stream of that session. Until the guest opens
// its end, QEMU leaves what the host sends in the socket, so a request made
// while the guest boots is answered once it is up.
type SerialChannel struct {
	muxChannel
}

// NewSerialChannel returns a channel to the QEMU chardev socket at path.
func NewSerialChannel(path string) *SerialChannel {
	return &SerialChannel{muxChannel{
		connect: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		config: serialYamuxConfig,
	}}
}

// Dial opens a stream to the guest, connecting first if needed.
func (c *SerialChannel) Dial(ctx context.Context) (net.Conn, error) {
	sess, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	return sess.Open()
}

func serialYamuxConfig() *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	// A booting guest acknowledges streams only once it is up; each request
	// carries its own deadline, so the session itself waits as long as needed.
	cfg.StreamOpenTimeout = 0
	cfg.ConnectionWriteTimeout = 30 * time.Second
	return cfg
}
