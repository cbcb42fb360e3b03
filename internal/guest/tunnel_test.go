package guest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// dialLocal connects as a program in the guest would.
func dialLocal(t *testing.T, port int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

// serveTunnel opens the tunnel (so local clients can connect at once) and
// runs ServeTunnel until the returned stop is called.
func serveTunnel(t *testing.T, c *Client, name string, port int, handle func(net.Conn)) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	if err := c.TunnelListen(ctx, name, port); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ServeTunnel(ctx, c, name, port, handle) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("ServeTunnel: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// shout is a host-side handler: it answers each line upper-cased.
func shout(conn net.Conn) {
	br := bufio.NewReader(conn)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := io.WriteString(conn, "host: "+strings.ToUpper(line)); err != nil {
			return
		}
	}
}

func TestTunnelCarriesConnections(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	port := freePort(t)
	serveTunnel(t, g.c, "shout", port, shout)

	// More connections at once than ServeTunnel keeps accept requests for.
	const n = 12
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			for j := range 3 {
				msg := fmt.Sprintf("conn %d msg %d\n", i, j)
				if _, err := io.WriteString(c, msg); err != nil {
					errs <- err
					return
				}
				got, err := br.ReadString('\n')
				if want := "host: " + strings.ToUpper(msg); err != nil || got != want {
					errs <- fmt.Errorf("got %q, %v; want %q", got, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestTunnelCarriesBulkBothWays(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	port := freePort(t)
	serveTunnel(t, g.c, "echo", port, func(c net.Conn) { io.Copy(c, c) })

	c := dialLocal(t, port)
	data := make([]byte, 4<<20)
	rand.Read(data)
	// No half-close: a tunnel ends as a whole when either side ends.
	go c.Write(data)
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("echoed bytes differ")
	}
}

func TestTunnelHostGoingAwayClosesLocalConns(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	port := freePort(t)
	stop := serveTunnel(t, g.c, "shout", port, shout)

	c := dialLocal(t, port)
	br := bufio.NewReader(c)
	io.WriteString(c, "hi\n")
	if got, err := br.ReadString('\n'); err != nil || got != "host: HI\n" {
		t.Fatalf("got %q, %v", got, err)
	}
	stop()
	if b, err := br.ReadByte(); err == nil {
		t.Fatalf("read %q after the host went away", b)
	}
	// ServeTunnel closed the tunnel on its way out: nothing listens now.
	if c2, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
		c2.Close()
		t.Fatal("the tunnel port still accepts connections")
	}

	// The host end of one carried connection closing closes the local end.
	ctx := testCtx(t)
	if err := g.c.TunnelListen(ctx, "raw", port); err != nil {
		t.Fatal(err)
	}
	local := dialLocal(t, port)
	host, err := g.c.TunnelAccept(ctx, "raw")
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(local, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(host, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("host read %q, %v", buf, err)
	}
	host.Close()
	if n, err := local.Read(buf); err == nil {
		t.Fatalf("local read %q after the host closed", buf[:n])
	}
}

func TestTunnelWaitsAreBounded(t *testing.T) {
	g := startGuest(t, ServerConfig{}, func(s *Server) {
		s.tunnels.acceptWait = 50 * time.Millisecond
		s.tunnels.offerWait = 50 * time.Millisecond
	})
	ctx := testCtx(t)
	port := freePort(t)
	if err := g.c.TunnelListen(ctx, "t", port); err != nil {
		t.Fatal(err)
	}
	// Nobody connects: the guest lets the host's request go.
	if _, err := g.c.TunnelAccept(ctx, "t"); !errors.Is(err, ErrNoTunnelConn) {
		t.Fatalf("accept with no local client: %v", err)
	}
	// Nobody accepts: the guest lets the local client go.
	c := dialLocal(t, port)
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from a connection nobody accepted", n)
	}
}

func TestTunnelAcceptHonoursContext(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	port := freePort(t)
	if err := g.c.TunnelListen(testCtx(t), "t", port); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := g.c.TunnelAccept(short, "t"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("accept: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	// The tunnel still works for the next request.
	local := dialLocal(t, port)
	host, err := g.c.TunnelAccept(testCtx(t), "t")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	io.WriteString(host, "x")
	b := make([]byte, 1)
	if _, err := io.ReadFull(local, b); err != nil || b[0] != 'x' {
		t.Errorf("after a cancelled accept: read %q, %v", b, err)
	}
}

func TestTunnelClosesWithTheGuest(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)
	port := freePort(t)
	if err := g.c.TunnelListen(ctx, "t", port); err != nil {
		t.Fatal(err)
	}
	local := dialLocal(t, port)
	host, err := g.c.TunnelAccept(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	accepted := make(chan error, 1)
	go func() {
		_, err := g.c.TunnelAccept(ctx, "t")
		accepted <- err
	}()
	g.srv.tunnels.closeAll()
	if n, err := local.Read(make([]byte, 1)); err == nil {
		t.Fatalf("local read %d bytes from a closed tunnel", n)
	}
	if n, err := host.Read(make([]byte, 1)); err == nil {
		t.Fatalf("host read %d bytes from a closed tunnel", n)
	}
	// The waiting accept request is released whether it got in before the
	// close or after.
	if err := <-accepted; !IsNotFound(err) {
		t.Fatalf("waiting accept: %v", err)
	}
	if err := g.c.TunnelListen(ctx, "t", port); err == nil {
		t.Fatal("a closed guest opened a tunnel")
	}
}

func TestTunnelBounds(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ctx := testCtx(t)
	code := func(err error) string {
		if ge, ok := errors.AsType[*Error](err); ok {
			return ge.Code
		}
		return fmt.Sprintf("not a guest error: %v", err)
	}
	// The client refuses bad arguments, and so does the guest on its own.
	for _, tc := range []struct {
		name string
		port int
	}{
		{"", 5000}, {"Upper", 5000}, {"under_score", 5000}, {strings.Repeat("a", 33), 5000},
		{"../x", 5000}, {"ok", 80}, {"ok", 1023}, {"ok", 65536}, {"ok", 0},
	} {
		if err := g.c.TunnelListen(ctx, tc.name, tc.port); code(err) != CodeInvalid {
			t.Errorf("client: listen %q %d: %v", tc.name, tc.port, err)
		}
		err := g.c.call(ctx, http.MethodPost, PathTunnelListen, TunnelRequest{Name: tc.name, Port: tc.port}, nil)
		if code(err) != CodeInvalid {
			t.Errorf("guest: listen %q %d: %v", tc.name, tc.port, err)
		}
	}

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if err := g.c.TunnelListen(ctx, "a", taken.Addr().(*net.TCPAddr).Port); code(err) != CodeConflict {
		t.Errorf("port taken by another program: %v", err)
	}

	port := freePort(t)
	if err := g.c.TunnelListen(ctx, "a", port); err != nil {
		t.Fatal(err)
	}
	if err := g.c.TunnelListen(ctx, "a", port); err != nil {
		t.Errorf("listening again is idempotent: %v", err)
	}
	if err := g.c.TunnelListen(ctx, "a", freePort(t)); code(err) != CodeConflict {
		t.Errorf("same name, other port: %v", err)
	}
	if err := g.c.TunnelListen(ctx, "b", port); code(err) != CodeConflict {
		t.Errorf("other name, same port: %v", err)
	}
	for i := 1; i < MaxTunnels; i++ {
		if err := g.c.TunnelListen(ctx, fmt.Sprintf("t%d", i), freePort(t)); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.c.TunnelListen(ctx, "one-too-many", freePort(t)); code(err) != CodeInvalid {
		t.Errorf("tunnel %d: %v", MaxTunnels+1, err)
	}
	// Closing one makes room; closing an unknown one is fine.
	if err := g.c.TunnelClose(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if err := g.c.TunnelClose(ctx, "never-was"); err != nil {
		t.Errorf("closing an unknown tunnel: %v", err)
	}
	if err := g.c.TunnelListen(ctx, "one-more", freePort(t)); err != nil {
		t.Errorf("after a close: %v", err)
	}

	if _, err := g.c.TunnelAccept(ctx, "t1"); !IsNotFound(err) {
		t.Errorf("accept on a closed tunnel: %v", err)
	}
	// Accept without the upgrade headers is refused before any waiting.
	if err := g.c.call(ctx, http.MethodPost, PathTunnelAccept, TunnelRequest{Name: "a"}, nil); code(err) != CodeInvalid {
		t.Errorf("plain accept: %v", err)
	}
}

func TestTunnelClientRejectsHostileGuests(t *testing.T) {
	ctx := testCtx(t)
	c := junkGuest(t, once("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: execlaw-attach/1\r\n\r\n"))
	if _, err := c.TunnelAccept(ctx, "t"); err == nil || !strings.Contains(err.Error(), "execlaw-attach/1") {
		t.Errorf("wrong protocol: %v", err)
	}
	c = junkGuest(t, once("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	if _, err := c.TunnelAccept(ctx, "t"); err == nil || !strings.Contains(err.Error(), "unexpected status 200") {
		t.Errorf("no switch: %v", err)
	}
	// Bytes that follow the 101 in the same write belong to the tunnel.
	c = junkGuest(t, once("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: execlaw-tunnel/1\r\n\r\nearly bytes"))
	conn, err := c.TunnelAccept(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if b, err := io.ReadAll(conn); err != nil || string(b) != "early bytes" {
		t.Errorf("read %q, %v", b, err)
	}
}
