package guest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type podGuest struct {
	addr string
	ws   string
	ln   net.Listener
	stop func() // ends Serve and waits for it
}

// startPodGuest serves the real control API on 127.0.0.1 behind the pod
// listener, as execlaw-guest --pod does.
func startPodGuest(t *testing.T, cred PodCredentials, addr string) *podGuest {
	t.Helper()
	ws := filepath.Join(t.TempDir(), "ws")
	if err := os.MkdirAll(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := ListenPod(t.Context(), addr, cred, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(ServerConfig{Workspace: ws})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	g := &podGuest{addr: ln.Addr().String(), ws: ws, ln: ln}
	stopped := false
	g.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
	t.Cleanup(g.stop)
	return g
}

func newPodCred(t *testing.T, session string) PodCredentials {
	t.Helper()
	c, err := NewPodCredentials(session)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func dialPod(t *testing.T, addr string, cred PodCredentials) *Client {
	t.Helper()
	c, ch, err := DialPod(testCtx(t), addr, cred)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		ch.Close()
	})
	return c
}

func TestPodCredentials(t *testing.T) {
	c := newPodCred(t, "s_0123456789abcdef01234567")
	if len(c.Token) != 64 {
		t.Errorf("token of %d bytes, want 64 hex digits", len(c.Token))
	}
	if other := newPodCred(t, "s_0123456789abcdef01234567"); other.Token == c.Token || bytes.Equal(other.CertPEM, c.CertPEM) {
		t.Error("two calls made the same credentials")
	}
	leaf, err := podLeaf(c.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "s_0123456789abcdef01234567" || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != PodServerName {
		t.Errorf("subject %q, DNS names %q", leaf.Subject.CommonName, leaf.DNSNames)
	}
	if leaf.IsCA || time.Until(leaf.NotAfter) < 10*365*24*time.Hour {
		t.Errorf("IsCA %v, valid until %s", leaf.IsCA, leaf.NotAfter)
	}
	if _, err := c.serverConfig(); err != nil {
		t.Errorf("fresh credentials refused: %v", err)
	}

	data := c.SecretData()
	if len(data) != 3 || string(data[PodTokenFile]) != c.Token || !bytes.Equal(data[PodCertFile], c.CertPEM) || !bytes.Equal(data[PodKeyFile], c.KeyPEM) {
		t.Fatalf("SecretData: %v", data)
	}
	dir := t.TempDir()
	for name, b := range data {
		if name == PodTokenFile {
			b = append(b, '\n') // as a hand-written file would have
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := LoadPodCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Token != c.Token || !bytes.Equal(got.CertPEM, c.CertPEM) || !bytes.Equal(got.KeyPEM, c.KeyPEM) {
		t.Error("loaded credentials differ from those written")
	}

	for _, id := range []string{"", strings.Repeat("x", 65), "a\nb"} {
		if _, err := NewPodCredentials(id); err == nil {
			t.Errorf("NewPodCredentials(%q) succeeded", id)
		}
	}
}

func TestLoadPodCredentialsRefusesBadSecrets(t *testing.T) {
	good := newPodCred(t, "s_a")
	other := newPodCred(t, "s_b")
	tests := []struct {
		name string
		edit func(map[string][]byte)
		want string
	}{
		{"missing token", func(m map[string][]byte) { delete(m, PodTokenFile) }, "secret token: open"},
		{"missing certificate", func(m map[string][]byte) { delete(m, PodCertFile) }, "secret tls.crt: open"},
		{"missing key", func(m map[string][]byte) { delete(m, PodKeyFile) }, "secret tls.key: open"},
		{"short token", func(m map[string][]byte) { m[PodTokenFile] = []byte(strings.Repeat("a", 31)) }, "token is 31 bytes, want at least 32"},
		{"empty token", func(m map[string][]byte) { m[PodTokenFile] = nil }, "token is 0 bytes"},
		{"token with a space", func(m map[string][]byte) {
			m[PodTokenFile] = []byte(strings.Repeat("a", 20) + " " + strings.Repeat("b", 20))
		}, "printable ASCII"},
		{"mismatched key", func(m map[string][]byte) { m[PodKeyFile] = other.KeyPEM }, "key does not go with the certificate"},
		{"garbage certificate", func(m map[string][]byte) { m[PodCertFile] = []byte("not PEM") }, "no PEM CERTIFICATE block"},
		{"two certificates", func(m map[string][]byte) { m[PodCertFile] = append(bytes.Clone(good.CertPEM), other.CertPEM...) }, "more than one PEM block"},
		{"huge file", func(m map[string][]byte) { m[PodCertFile] = bytes.Repeat([]byte("x"), maxSecretBytes+1) }, "larger than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := good.SecretData()
			tc.edit(m)
			dir := t.TempDir()
			for name, b := range m {
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := LoadPodCredentials(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadPodCredentials = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), good.Token) {
				t.Fatal("the error shows the token")
			}
		})
	}
	if _, err := ListenPod(t.Context(), "127.0.0.1:0", PodCredentials{Token: good.Token, CertPEM: good.CertPEM, KeyPEM: other.KeyPEM}, nil); err == nil {
		t.Error("ListenPod accepted a key of another certificate")
	}
	if _, err := NewPodChannel("127.0.0.1:1", PodCredentials{Token: "short", CertPEM: good.CertPEM}); err == nil {
		t.Error("NewPodChannel accepted a short token")
	}
}

// An authenticated host gets the whole control API, the same as over a VM's
// channel: commands, files, the workspace routes.
func TestPodServesTheControlAPI(t *testing.T) {
	cred := newPodCred(t, "s_pod")
	g := startPodGuest(t, cred, "")
	c := dialPod(t, g.addr, cred)
	ctx := testCtx(t)

	h, err := c.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.Workspace != g.ws || h.Version != Version {
		t.Errorf("health %+v", h)
	}
	var out output
	res, err := c.Exec(ctx, sh("echo hello from $PWD; echo oops >&2; exit 3"), out.add)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 3 || out.stdout.String() != "hello from "+g.ws+"\n" || out.stderr.String() != "oops\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", res.ExitCode, out.stdout.String(), out.stderr.String())
	}

	if _, err := c.WSWrite(ctx, "dir/notes.txt", strings.NewReader("written over the pod channel"), 1<<20); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(g.ws, "dir", "notes.txt")); err != nil || string(b) != "written over the pod channel" {
		t.Fatalf("file in the workspace: %q, %v", b, err)
	}
	body, size, err := c.WSRead(ctx, "dir/notes.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(body)
	body.Close()
	if err != nil || string(b) != "written over the pod channel" || size != int64(len(b)) {
		t.Fatalf("WSRead: %q (size %d), %v", b, size, err)
	}
	if err := c.Write(ctx, WriteRequest{Path: "plain.txt", Data: []byte("plain")}); err != nil {
		t.Fatal(err)
	}
	if r, err := c.Read(ctx, ReadRequest{Path: "plain.txt"}); err != nil || string(r.Data) != "plain" {
		t.Fatalf("Read: %q, %v", r.Data, err)
	}
	if _, err := c.Ports(ctx); err != nil {
		t.Fatal(err)
	}
}

// Upgraded connections (attach, reverse tunnels, forwards) are streams of
// the same session.
func TestPodCarriesUpgrades(t *testing.T) {
	cred := newPodCred(t, "s_pod")
	g := startPodGuest(t, cred, "")
	c := dialPod(t, g.addr, cred)

	a := attach(t, c, ExecRequest{Argv: []string{"cat"}})
	if _, err := a.a.Write([]byte("typed\n")); err != nil {
		t.Fatal(err)
	}
	a.waitStdout("typed\n")
	if err := a.a.CloseStdin(); err != nil {
		t.Fatal(err)
	}
	for a.next() {
	}
	if a.end.Type != FrameExit || a.end.Result().ExitCode != 0 {
		t.Errorf("attach ended with %+v", a.end)
	}

	port := freePort(t)
	serveTunnel(t, c, "shout", port, shout)
	conn := dialLocal(t, port)
	io.WriteString(conn, "through the tunnel\n")
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || line != "host: THROUGH THE TUNNEL\n" {
		t.Fatalf("tunnel answered %q, %v", line, err)
	}

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "forwarded") }))
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return c.Forward(ctx, ln.Addr().(*net.TCPAddr).Port)
	}}}
	resp, err := hc.Get("http://agent/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "forwarded" {
		t.Fatalf("through the forward: %q", b)
	}
}

// Every way in without the session's credentials is refused, and the guest
// goes on serving the host that has them.
func TestPodRefusesUnauthenticated(t *testing.T) {
	cred := newPodCred(t, "s_pod")
	g := startPodGuest(t, cred, "")
	ctx := testCtx(t)

	wrongToken := cred
	wrongToken.Token = strings.Repeat("0", 64)
	if _, _, err := DialPod(ctx, g.addr, wrongToken); !errors.Is(err, ErrPodAuth) {
		t.Errorf("wrong token: %v, want ErrPodAuth", err)
	}

	// A host pinning another session's certificate, even with the right
	// token, stops at the TLS handshake and never sends the token.
	otherCert := newPodCred(t, "s_other")
	otherCert.Token = cred.Token
	if _, _, err := DialPod(ctx, g.addr, otherCert); !errors.Is(err, ErrPodAuth) {
		t.Errorf("other certificate pinned: %v, want ErrPodAuth", err)
	}

	health := "GET " + PathHealth + " HTTP/1.1\r\nHost: guest\r\n\r\n"
	pinned, err := cred.clientConfig()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		tls  bool
		send string
	}{
		{"plain TCP", false, health},
		{"TLS without a token", true, health},
		{"TLS with an empty token", true, podHello + "\x00\x00"},
		{"TLS with a truncated token", true, string(podHelloMessage(cred.Token)[:len(podHello)+2+10])},
		{"TLS announcing a huge token", true, podHello + "\xff\xff" + strings.Repeat("a", 100)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var conn net.Conn
			var err error
			if tc.tls {
				conn, err = (&tls.Dialer{Config: pinned}).DialContext(ctx, "tcp", g.addr)
			} else {
				conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", g.addr)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
			io.WriteString(conn, tc.send)
			if tc.name == "TLS with a truncated token" {
				// The guest waits for the rest; closing our side ends it.
				conn.(*tls.Conn).CloseWrite()
			}
			got, err := io.ReadAll(conn)
			if bytes.Contains(got, []byte("HTTP/")) || bytes.Contains(got, []byte(podAccept)) {
				t.Fatalf("guest answered %q", got)
			}
			if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("guest kept the connection open")
			}
		})
	}

	// An HTTPS client that trusts anything still gets no answer.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := hc.Get("https://" + g.addr + PathHealth); err == nil {
		resp.Body.Close()
		t.Errorf("HTTPS without the token got %s", resp.Status)
	}

	c := dialPod(t, g.addr, cred)
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("the right host after the refusals: %v", err)
	}
}

// A container that restarts drops the session; the channel connects again
// on the next call.
func TestPodChannelReconnects(t *testing.T) {
	cred := newPodCred(t, "s_pod")
	g := startPodGuest(t, cred, "")
	c := dialPod(t, g.addr, cred)
	ctx := testCtx(t)
	if _, err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	g.stop()
	g2 := startPodGuest(t, cred, g.addr)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		h, err := c.Health(ctx)
		if err == nil {
			if h.Workspace != g2.ws {
				t.Fatalf("answered by %q, not the new guest", h.Workspace)
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("never reconnected: %v", err)
		case <-tick.C:
		}
	}
}

// The host's pin is the certificate itself: another certificate for the
// same name, even one the system would trust, is not it.
func TestPodPinIsExact(t *testing.T) {
	cred := newPodCred(t, "s_pod")
	cfg, err := cred.clientConfig()
	if err != nil {
		t.Fatal(err)
	}
	other := newPodCred(t, "s_pod")
	leaf, err := podLeaf(other.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.VerifyConnection(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}})
	if !errors.Is(err, ErrPodAuth) {
		t.Fatalf("VerifyConnection with another certificate: %v", err)
	}
}

// Authenticated sessions do not hold the slots that bound handshakes: more
// hosts than there are slots stay connected, and one more still gets in.
func TestPodManySessions(t *testing.T) {
	cred := newPodCred(t, "s_pod")
	g := startPodGuest(t, cred, "")
	ctx := testCtx(t)
	var clients []*Client
	for range maxPodHandshakes + 8 {
		clients = append(clients, dialPod(t, g.addr, cred))
	}
	for i, c := range clients {
		if _, err := c.Health(ctx); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
}
