package guest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseListens(t *testing.T) {
	const tcp = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0100007F:0BB8 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 100 0 0 10 0
   3: garbage
`
	got, err := parseListens(strings.NewReader(tcp))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].port != 3000 || got[0].addr.String() != "127.0.0.1" || got[0].inode != 1001 ||
		got[1].port != 8080 || got[1].addr.String() != "0.0.0.0" {
		t.Errorf("parsed %+v", got)
	}
	const tcp6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1538 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 100 0 0 10 0
`
	got, err = parseListens(strings.NewReader(tcp6))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].addr.String() != "::1" || got[0].port != 5432 || got[1].addr.String() != "::" || got[1].port != 80 {
		t.Errorf("parsed %+v", got)
	}
}

// TestPorts: a server the guest's command starts is listed, with an
// address a forward reaches, and one the guest process itself holds (as
// it does tunnels) is not.
func TestPorts(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed")
	}
	g := startGuest(t, ServerConfig{})
	own, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	ownPort := own.Addr().(*net.TCPAddr).Port

	portFile := filepath.Join(g.ws, "port")
	attach(t, g.c, ExecRequest{Argv: []string{"python3", "-c", `
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    c, _ = s.accept(); c.sendall(b"hello from the guest"); c.close()
`, portFile}})
	port := readPortFile(t, portFile)

	resp, err := g.c.Ports(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, p := range resp.Ports {
		if p.Port == ownPort {
			t.Errorf("the guest's own listener %d is listed", ownPort)
		}
		if p.Port == port {
			found = true
			if !p.Loopback || p.Address != "127.0.0.1" {
				t.Errorf("port %d: %+v", port, p)
			}
		}
	}
	if !found {
		t.Fatalf("port %d not listed: %+v", port, resp.Ports)
	}
	conn, err := g.c.Forward(testCtx(t), port)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 64)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _ := conn.Read(buf)
	if string(buf[:n]) != "hello from the guest" {
		t.Errorf("forwarded %q", buf[:n])
	}
}

func readPortFile(t *testing.T, path string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil {
			if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && p > 0 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no port in %s", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
