package guest

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
)

// maxPodHandshakes bounds the connections that have not proved the token
// yet: a flood of them is shed, not queued, so it cannot exhaust the guest.
const maxPodHandshakes = 32

// ListenPod listens for the host on addr (HOST:PORT, ":7600" in a pod) with
// cred, which it checks first; ctx bounds only the listen itself. Accept
// returns the streams of every authenticated connection's yamux session, for
// Server.Serve; connections that fail TLS or present another token are
// closed, and nothing is served to them. Close ends every session.
func ListenPod(ctx context.Context, addr string, cred PodCredentials, log *slog.Logger) (net.Listener, error) {
	cfg, err := cred.serverConfig()
	if err != nil {
		return nil, fmt.Errorf("pod credentials: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	l := &podListener{
		ln:       ln,
		tls:      cfg,
		token:    tokenDigest([]byte(cred.Token)),
		log:      log,
		ctx:      lctx,
		cancel:   cancel,
		streams:  make(chan net.Conn),
		failed:   make(chan struct{}),
		pending:  make(chan struct{}, maxPodHandshakes),
		sessions: make(map[*yamux.Session]struct{}),
	}
	go l.acceptLoop()
	return l, nil
}

type podListener struct {
	ln      net.Listener
	tls     *tls.Config
	token   [sha256.Size]byte
	log     *slog.Logger
	ctx     context.Context // ends on Close
	cancel  context.CancelFunc
	streams chan net.Conn
	failed  chan struct{} // closed when the TCP listener failed; err says why
	err     error
	pending chan struct{} // a slot per connection in its handshake

	mu       sync.Mutex
	sessions map[*yamux.Session]struct{}
}

func (l *podListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.streams:
		return c, nil
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	case <-l.failed:
		return nil, l.err
	}
}

// Close stops listening and ends every session, as the serial listener
// does: the guest is going away.
func (l *podListener) Close() error {
	l.cancel()
	err := l.ln.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for s := range l.sessions {
		s.Close()
	}
	clear(l.sessions)
	return err
}

func (l *podListener) Addr() net.Addr { return l.ln.Addr() }

func (l *podListener) acceptLoop() {
	var backoff time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.ctx.Err() != nil {
				return
			}
			// Running out of descriptors or memory passes; wait it out as
			// net/http does instead of ending the guest.
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS) ||
				errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.ECONNABORTED) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				l.log.Warn("pod listener: accept", "err", err, "retryIn", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-l.ctx.Done():
					return
				}
			}
			l.err = err
			close(l.failed)
			return
		}
		backoff = 0
		select {
		case l.pending <- struct{}{}:
			go func() {
				sess := l.handshake(conn)
				<-l.pending // the slot bounds handshakes, not sessions
				if sess != nil {
					remote := conn.RemoteAddr().String()
					l.log.Info("host connected", "remote", remote)
					l.serveSession(sess)
					l.log.Info("host disconnected", "remote", remote)
				}
			}()
		default:
			l.log.Warn("pod listener: too many connections in their handshake; closing one", "remote", conn.RemoteAddr())
			conn.Close()
		}
	}
}

// handshake authenticates conn and, if it passes, returns the yamux
// session over it, registered for Close. Failures are only logged: the peer
// learns nothing but the close.
func (l *podListener) handshake(conn net.Conn) *yamux.Session {
	remote := conn.RemoteAddr().String()
	ctx, cancel := context.WithTimeout(l.ctx, podHandshake)
	defer cancel()
	_ = conn.SetDeadline(time.Now().Add(podHandshake))
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	tc := tls.Server(conn, l.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		// Also what a TCP readiness probe looks like: not worth more than debug.
		l.log.Debug("pod listener: TLS handshake failed", "remote", remote, "err", err)
		conn.Close()
		return nil
	}
	if err := l.checkHello(tc); err != nil {
		l.log.Warn("pod listener: refused a connection", "remote", remote, "err", err)
		tc.Close()
		return nil
	}
	if _, err := io.WriteString(tc, podAccept); err != nil {
		l.log.Debug("pod listener: answering the token", "remote", remote, "err", err)
		tc.Close()
		return nil
	}
	if !stop() {
		tc.Close()
		return nil
	}
	_ = conn.SetDeadline(time.Time{})
	sess, err := yamux.Server(tc, podYamuxConfig())
	if err != nil {
		tc.Close()
		return nil
	}
	l.mu.Lock()
	if l.ctx.Err() != nil {
		l.mu.Unlock()
		sess.Close()
		return nil
	}
	l.sessions[sess] = struct{}{}
	l.mu.Unlock()
	return sess
}

// checkHello reads the host's hello and token and compares the token.
func (l *podListener) checkHello(r io.Reader) error {
	var head [len(podHello) + 2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return fmt.Errorf("reading the hello: %w", err)
	}
	if string(head[:len(podHello)]) != podHello {
		return errors.New("not an execlaw-pod/1 hello")
	}
	n := binary.BigEndian.Uint16(head[len(podHello):])
	if n > MaxPodTokenBytes {
		return fmt.Errorf("token of %d bytes announced, more than %d", n, MaxPodTokenBytes)
	}
	tok := make([]byte, n)
	if _, err := io.ReadFull(r, tok); err != nil {
		return fmt.Errorf("reading the token: %w", err)
	}
	if !tokenMatches(l.token, tok) {
		return errors.New("wrong token")
	}
	return nil
}

// serveSession hands the session's streams to Accept until it ends.
func (l *podListener) serveSession(sess *yamux.Session) {
	defer func() {
		l.mu.Lock()
		delete(l.sessions, sess)
		l.mu.Unlock()
		sess.Close()
	}()
	for {
		s, err := sess.Accept()
		if err != nil {
			return
		}
		select {
		case l.streams <- s:
		case <-l.ctx.Done():
			s.Close()
			return
		}
	}
}
