package qemu

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/sandbox"
)

// QEMU creates its control socket's file when it binds, a moment before it
// listens; a dial in that moment is refused. Boot waits through it. Here the
// socket is bound, left unlistened for a while, then served by a stand-in
// guest answering health over yamux, as execlaw-guest does on the serial port.
func TestWaitGuestThroughBindBeforeListen(t *testing.T) {
	dir := t.TempDir()
	socks, err := sandbox.OpenSocketDir(dir, len(ctlSockName))
	if err != nil {
		t.Fatal(err)
	}
	defer socks.Close()
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: filepath.Join(dir, ctlSockName)}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	s := &Sandbox{dir: dir, socks: socks}
	s.channel = guest.NewSerialChannel(socks.DialPath(ctlSockName))
	s.client = guest.NewClient(socks.Guard(s.channel.Dial))
	defer s.channel.Close()

	go func() {
		time.Sleep(300 * time.Millisecond) // the window between bind and listen, widened
		if err := syscall.Listen(fd, 1); err != nil {
			t.Error(err)
			return
		}
		ln, err := net.FileListener(os.NewFile(uintptr(fd), "ctl.sock"))
		if err != nil {
			t.Error(err)
			return
		}
		defer ln.Close()
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		sess, err := yamux.Server(conn, nil)
		if err != nil {
			t.Error(err)
			return
		}
		http.Serve(sess, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			json.NewEncoder(w).Encode(guest.Health{Version: guest.Version, Workspace: "/workspace"})
		}))
	}()

	h, err := s.waitGuest(t.Context(), 10*time.Second)
	if err != nil || h.Version != guest.Version {
		t.Fatalf("waitGuest = %+v, %v", h, err)
	}
}
