package guest

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// The host reaches an HTTP service on the guest's loopback through Forward,
// as it does an agent's gateway inside a VM.
func TestForwardReachesGuestLoopback(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "served "+r.URL.Path)
	}))
	port := ln.Addr().(*net.TCPAddr).Port

	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return g.c.Forward(ctx, port)
	}}}
	for _, path := range []string{"/a", "/b"} {
		resp, err := hc.Get("http://agent" + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "served "+path {
			t.Fatalf("through the forward: %q", body)
		}
	}
}

func TestForwardRefusals(t *testing.T) {
	g := startGuest(t, ServerConfig{})
	ln, _ := net.Listen("tcp4", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there now
	_, err := g.c.Forward(testCtx(t), port)
	var ge *Error
	if !errors.As(err, &ge) || !strings.Contains(ge.Message, "nothing answers") {
		t.Fatalf("forward to a closed port: %v", err)
	}
	if _, err := g.c.Forward(testCtx(t), 0); err == nil {
		t.Fatal("port 0 accepted")
	}
	// Without the upgrade headers the guest refuses.
	resp, err := rawPost(g.sock, PathForward, `{"port":80}`)
	if err != nil || !strings.Contains(resp, "400") {
		t.Fatalf("plain POST /v1/forward: %q %v", resp, err)
	}
}

func rawPost(sock, path, body string) (string, error) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return "", err
	}
	defer c.Close()
	req := "POST " + path + " HTTP/1.1\r\nHost: guest\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body
	if _, err := io.WriteString(c, req); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return line, err
}
