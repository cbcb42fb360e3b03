package process

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
)

// maxSockPath is the longest path a Unix socket address holds on Linux
// (sun_path is 108 bytes including the terminating NUL).
const maxSockPath = 107

var errStopped = errors.New("process sandbox: stopped")

// socket is the guest's control socket, reachable even when the sandbox
// directory's path is too long for a socket address: then the guest binds a
// relative path in its working directory, and the host connects through
// /proc/self/fd/N/guest.sock, N being a descriptor held on the directory.
type socket struct {
	path string // absolute path of the socket file

	mu       sync.RWMutex
	dialPath string
	dirFD    *os.File // only for long paths
	closed   bool
}

func newSocket(dir string) *socket {
	s := &socket{path: filepath.Join(dir, "guest.sock")}
	s.dialPath = s.path
	if len(s.path) > maxSockPath {
		// O_CLOEXEC (os.Open's default) keeps the descriptor out of children.
		if f, err := os.Open(dir); err == nil {
			s.dirFD = f
			s.dialPath = fmt.Sprintf("/proc/self/fd/%d/guest.sock", f.Fd())
		}
	}
	return s
}

// listenArg is the guest's --listen value; relative paths resolve in its
// working directory, the sandbox directory.
func (s *socket) listenArg() string {
	if s.dirFD != nil {
		return "unix:guest.sock"
	}
	return "unix:" + s.path
}

func (s *socket) dial(ctx context.Context) (net.Conn, error) {
	// The read lock keeps close from recycling the directory descriptor
	// (whose number is in dialPath) while a connect is using it.
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errStopped
	}
	var d net.Dialer
	return d.DialContext(ctx, "unix", s.dialPath)
}

func (s *socket) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.dirFD != nil {
		s.dirFD.Close()
	}
	_ = os.Remove(s.path)
}
