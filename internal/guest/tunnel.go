package guest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Reverse tunnels. Programs in the guest connect to a loopback port; the
// control channel only lets the host open connections, so the host keeps
// accept requests waiting, and each local connection is handed to one of
// them, which then switches protocols and carries the connection's bytes.
// No network is involved, so this works in a VM that has none.

// tunnelOfferWait is how long a local connection waits for a host accept
// request before it is closed (the host is gone or far behind).
const tunnelOfferWait = 30 * time.Second

// tunnels is the guest's set of tunnel listeners.
type tunnels struct {
	mu     sync.Mutex
	byName map[string]*tunnel
	closed bool

	// Bounds on waiting, variables so that tests can shorten them.
	acceptWait time.Duration
	offerWait  time.Duration
}

func newTunnels() *tunnels {
	return &tunnels{byName: make(map[string]*tunnel), acceptWait: TunnelAcceptWait, offerWait: tunnelOfferWait}
}

// tunnel is one loopback listener.
type tunnel struct {
	name      string
	port      int
	ln        net.Listener
	offerWait time.Duration
	ready     chan *localConn // unbuffered: a local connection meets an accept request
	done      chan struct{}   // closed when the tunnel closes
	slots     chan struct{}   // one per local connection, waiting or carried
	closeOnce sync.Once

	mu     sync.Mutex
	active map[net.Conn]struct{} // both ends of every carried connection
}

// localConn is a connection accepted on the loopback listener; release
// frees its slot once it is closed for good.
type localConn struct {
	net.Conn
	release func()
}

func validTunnelName(name string) bool {
	if len(name) == 0 || len(name) > MaxTunnelNameLen {
		return false
	}
	for _, c := range []byte(name) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// listen opens the named tunnel, or confirms it is already open on port.
func (ts *tunnels) listen(name string, port int) error {
	invalid := func(format string, a ...any) error {
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: fmt.Sprintf(format, a...)}
	}
	conflict := func(format string, a ...any) error {
		return &Error{Status: http.StatusConflict, Code: CodeConflict, Message: fmt.Sprintf(format, a...)}
	}
	if !validTunnelName(name) {
		return invalid("tunnel name %q must match ^[a-z0-9-]{1,%d}$", truncate(name, 64), MaxTunnelNameLen)
	}
	if port < MinTunnelPort || port > MaxTunnelPort {
		return invalid("tunnel port %d is outside %d-%d", port, MinTunnelPort, MaxTunnelPort)
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.closed {
		return errClosing
	}
	if t, ok := ts.byName[name]; ok {
		if t.port == port {
			return nil // the host re-asks after a restart
		}
		return conflict("tunnel %s already listens on port %d", name, t.port)
	}
	for _, t := range ts.byName {
		if t.port == port {
			return conflict("port %d is already tunnel %s", port, t.name)
		}
	}
	if len(ts.byName) >= MaxTunnels {
		return invalid("at most %d tunnels", MaxTunnels)
	}
	// Loopback only: the tunnel is for programs in this guest, never for
	// whoever can reach the guest's network.
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return conflict("port %d is in use in the guest", port)
		}
		return fsError(err)
	}
	t := &tunnel{
		name:      name,
		port:      port,
		ln:        ln,
		offerWait: ts.offerWait,
		ready:     make(chan *localConn),
		done:      make(chan struct{}),
		slots:     make(chan struct{}, MaxTunnelConns),
		active:    make(map[net.Conn]struct{}),
	}
	ts.byName[name] = t
	go t.acceptLoop()
	return nil
}

func (ts *tunnels) get(name string) *tunnel {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.byName[name]
}

// close closes the named tunnel, if open.
func (ts *tunnels) close(name string) {
	ts.mu.Lock()
	t := ts.byName[name]
	delete(ts.byName, name)
	ts.mu.Unlock()
	if t != nil {
		t.close()
	}
}

// closeAll closes every tunnel and refuses new ones.
func (ts *tunnels) closeAll() {
	ts.mu.Lock()
	ts.closed = true
	all := ts.byName
	ts.byName = make(map[string]*tunnel)
	ts.mu.Unlock()
	for _, t := range all {
		t.close()
	}
}

// close stops listening and closes every connection, waiting or carried.
func (t *tunnel) close() {
	t.closeOnce.Do(func() {
		close(t.done)
		t.ln.Close()
		t.mu.Lock()
		for c := range t.active {
			c.Close()
		}
		t.mu.Unlock()
	})
}

// acceptLoop takes local connections while slots are free; past that they
// queue in the kernel's backlog.
func (t *tunnel) acceptLoop() {
	for {
		select {
		case t.slots <- struct{}{}:
		case <-t.done:
			return
		}
		c, err := t.ln.Accept()
		if err != nil {
			<-t.slots
			select {
			case <-t.done:
				return
			case <-time.After(50 * time.Millisecond):
				// Out of file descriptors or similar: back off, do not spin.
				continue
			}
		}
		var once sync.Once
		lc := &localConn{Conn: c, release: func() { once.Do(func() { <-t.slots }) }}
		go t.offer(lc)
	}
}

// offer hands lc to a waiting accept request, or closes it after offerWait.
func (t *tunnel) offer(lc *localConn) {
	timer := time.NewTimer(t.offerWait)
	defer timer.Stop()
	select {
	case t.ready <- lc:
	case <-timer.C:
		lc.Close()
		lc.release()
	case <-t.done:
		lc.Close()
		lc.release()
	}
}

// carry copies bytes both ways until either side ends, then closes both: a
// half-closed local connection would otherwise wait on a host that is done.
func (t *tunnel) carry(host net.Conn, lc *localConn) {
	defer lc.release()
	if !t.track(host, lc.Conn) {
		host.Close()
		lc.Close()
		return
	}
	defer t.untrack(host, lc.Conn)
	splice(host, lc.Conn)
}

// track registers a carried connection's ends, unless the tunnel closed.
func (t *tunnel) track(cs ...net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-t.done:
		return false
	default:
	}
	for _, c := range cs {
		t.active[c] = struct{}{}
	}
	return true
}

func (t *tunnel) untrack(cs ...net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range cs {
		delete(t.active, c)
	}
}

func (s *Server) handleTunnelListen(w http.ResponseWriter, r *http.Request) {
	var req TunnelRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := s.tunnels.listen(req.Name, req.Port); err != nil {
		writeError(w, err)
		return
	}
	s.log.Info("tunnel listening", "name", req.Name, "port", req.Port)
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

func (s *Server) handleTunnelClose(w http.ResponseWriter, r *http.Request) {
	var req TunnelRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	s.tunnels.close(req.Name)
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// handleTunnelAccept holds the request until a local connection arrives,
// then switches protocols and carries it. 204 means "nothing came, ask
// again", which bounds how long a vanished host can pin a request.
func (s *Server) handleTunnelAccept(w http.ResponseWriter, r *http.Request) {
	if !wantsUpgrade(r, UpgradeTunnel) {
		writeError(w, &Error{Status: http.StatusBadRequest, Code: CodeInvalid,
			Message: "tunnel accept needs Connection: Upgrade and Upgrade: " + UpgradeTunnel})
		return
	}
	// decode reads the body to EOF, so the request context ends when the host
	// goes away while we wait.
	var req TunnelRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	t := s.tunnels.get(req.Name)
	if t == nil {
		writeError(w, &Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: "no tunnel " + truncate(req.Name, 64)})
		return
	}
	timer := time.NewTimer(s.tunnels.acceptWait)
	defer timer.Stop()
	var lc *localConn
	select {
	case lc = <-t.ready:
	case <-r.Context().Done():
		return
	case <-t.done:
		writeError(w, &Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: "tunnel " + t.name + " closed"})
		return
	case <-timer.C:
		w.WriteHeader(http.StatusNoContent)
		return
	}
	host, err := switchProtocols(w, UpgradeTunnel)
	if err != nil {
		// The host went away just now; nothing was read from the local
		// connection, so another accept request can still take it.
		go t.offer(lc)
		return
	}
	t.carry(host, lc)
}
