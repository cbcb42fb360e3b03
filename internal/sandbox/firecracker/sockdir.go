package firecracker

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

var errReleased = errors.New("firecracker: sandbox released")

// sockDir is the host directory holding the VMM's sockets (the session
// directory, or the jail's root). Session directories can be deeper than a
// socket address allows, so when a socket path there would be too long the
// host connects through /proc/self/fd/N/<name>, N being a descriptor held on
// the directory, and Firecracker is given a path relative to its working
// directory (see fcPath).
type sockDir struct {
	dir string

	mu     sync.RWMutex
	prefix string   // what socket names are joined to for dialing
	fd     *os.File // only when prefix is /proc/self/fd/N
	closed bool
}

// openSockDir prepares dialing sockets named up to longest bytes in dir.
func openSockDir(dir string, longest int) (*sockDir, error) {
	s := &sockDir{dir: dir, prefix: dir}
	if len(dir)+1+longest > maxSockPath {
		// O_CLOEXEC (os.Open's default) keeps the descriptor out of children.
		f, err := os.Open(dir)
		if err != nil {
			return nil, err
		}
		s.fd = f
		s.prefix = fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	}
	return s, nil
}

// short reports whether absolute socket paths in dir fit in an address.
func (s *sockDir) short() bool { return s.fd == nil }

// path is the host path of a socket.
func (s *sockDir) path(name string) string { return filepath.Join(s.dir, name) }

func (s *sockDir) dial(ctx context.Context, name string) (net.Conn, error) {
	// The read lock keeps close from recycling the descriptor (whose number
	// is in prefix) while a connect is using it.
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errReleased
	}
	var d net.Dialer
	return d.DialContext(ctx, "unix", s.prefix+"/"+name)
}

func (s *sockDir) dialer(name string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) { return s.dial(ctx, name) }
}

func (s *sockDir) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.fd != nil {
		s.fd.Close()
	}
}
