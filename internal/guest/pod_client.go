package guest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// PodChannel is the host end of a pod guest's control channel: one TLS
// connection to the guest, authenticated with the session's token, carrying
// a yamux session whose streams are the client's connections, as
// SerialChannel's are for a VM. When the session ends (the container
// restarted) the next Dial connects again.
type PodChannel struct {
	muxChannel
	addr  string
	tls   *tls.Config
	hello []byte
}

// NewPodChannel returns a channel to the guest at addr (the pod's IP and
// PodPort), checking cred first. Nothing is dialled before the first Dial;
// cred.KeyPEM is not needed.
func NewPodChannel(addr string, cred PodCredentials) (*PodChannel, error) {
	cfg, err := cred.clientConfig()
	if err != nil {
		return nil, fmt.Errorf("pod credentials: %w", err)
	}
	c := &PodChannel{addr: addr, tls: cfg, hello: podHelloMessage(cred.Token)}
	c.muxChannel = muxChannel{
		connect: func(ctx context.Context) (net.Conn, error) {
			conn, err := c.connect(ctx)
			if err != nil {
				return nil, fmt.Errorf("guest pod %s: %w", addr, err)
			}
			return conn, nil
		},
		config: podYamuxConfig,
	}
	return c, nil
}

// DialPod connects to the guest at addr now, proving both ends, and
// returns a client over the channel: the same Client a VM's guest gets.
// Close the client and then the channel when done. An error wrapping
// ErrPodAuth means the guest holds other credentials.
func DialPod(ctx context.Context, addr string, cred PodCredentials) (*Client, *PodChannel, error) {
	ch, err := NewPodChannel(addr, cred)
	if err != nil {
		return nil, nil, err
	}
	if _, err := ch.session(ctx); err != nil {
		return nil, nil, err
	}
	return NewClient(ch.Dial), ch, nil
}

// Dial opens a stream to the guest, connecting first if needed. It is a
// Dialer, for NewClient.
func (c *PodChannel) Dial(ctx context.Context) (net.Conn, error) {
	for attempt := 0; ; attempt++ {
		sess, err := c.session(ctx)
		if err != nil {
			return nil, err
		}
		s, err := sess.Open()
		if err == nil {
			return s, nil
		}
		// A session that died since it was last used (the container
		// restarted) is only found out now; one fresh connection is worth a try.
		if attempt > 0 || !sess.IsClosed() {
			return nil, fmt.Errorf("guest pod %s: %w", c.addr, err)
		}
	}
}

// connect dials the guest, verifies its certificate and proves the token.
func (c *PodChannel) connect(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, podHandshake)
	defer cancel()
	d := tls.Dialer{Config: c.tls}
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
			return nil, fmt.Errorf("%w: %w", ErrPodAuth, err)
		}
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (net.Conn, error) {
		stop()
		conn.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, err
	}
	if _, err := conn.Write(c.hello); err != nil {
		return fail(err)
	}
	var answer [len(podAccept)]byte
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fail(fmt.Errorf("%w: the guest refused the token", ErrPodAuth))
		}
		return fail(err)
	}
	if string(answer[:]) != podAccept {
		return fail(errors.New("the guest answered the token with something else than execlaw-pod/1"))
	}
	if !stop() {
		return fail(ctx.Err())
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}
