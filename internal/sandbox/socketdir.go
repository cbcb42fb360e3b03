package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
)

// maxSocketPath is the longest path a Unix socket address holds on Linux
// (sun_path is 108 bytes including the terminating NUL).
const maxSocketPath = 107

// ErrSocketDirClosed is what dialing through a closed SocketDir returns: the
// sandbox whose sockets it held has been stopped.
var ErrSocketDirClosed = errors.New("sandbox: stopped (socket directory closed)")

// SocketDir is a host directory holding a sandbox's Unix sockets (the
// sandbox directory, or a VMM's jail root). Sandbox directories can be deeper
// than a socket address allows. When a socket path there would be too long,
// the host connects through /proc/self/fd/N/<name>, N being a descriptor held
// on the directory, and the process that binds the socket runs in the
// directory and is given the bare name (see BindPath).
type SocketDir struct {
	dir string

	mu     sync.RWMutex
	prefix string   // what socket names are joined to for dialing
	fd     *os.File // only when prefix is /proc/self/fd/N
	closed bool
}

// OpenSocketDir prepares dialing sockets in dir whose names are at most
// longestName bytes long.
func OpenSocketDir(dir string, longestName int) (*SocketDir, error) {
	return openSocketDir(dir, longestName, false)
}

// OpenMovableSocketDir is OpenSocketDir for a directory that may be renamed
// while its sockets are in use (a pooled sandbox's, moved to its session's
// directory when claimed): dialing always goes through a descriptor held on
// the directory, which follows it.
func OpenMovableSocketDir(dir string, longestName int) (*SocketDir, error) {
	return openSocketDir(dir, longestName, true)
}

func openSocketDir(dir string, longestName int, movable bool) (*SocketDir, error) {
	s := &SocketDir{dir: dir, prefix: dir}
	if movable || len(dir)+1+longestName > maxSocketPath {
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

// Dir is the directory (where it was when opened).
func (s *SocketDir) Dir() string { return s.dir }

// Short reports whether absolute socket paths in the directory fit in a
// socket address.
func (s *SocketDir) Short() bool { return s.fd == nil }

// Path is the host path of a socket, to stat or remove it (not to connect:
// it may be too long for that).
func (s *SocketDir) Path(name string) string { return filepath.Join(s.dir, name) }

// BindPath is the socket path to give the process that creates the socket:
// its absolute path when Short, else the bare name, which works only for a
// process whose working directory is Dir.
func (s *SocketDir) BindPath(name string) string {
	if s.Short() {
		return s.Path(name)
	}
	return name
}

// DialPath is the path to connect to for a socket. When the directory is not
// Short it names a descriptor that Close frees and a later open may reuse:
// connect through Dial, or through a dialer wrapped by Guard, never after
// Close.
func (s *SocketDir) DialPath(name string) string { return filepath.Join(s.prefix, name) }

// Dial connects to a socket in the directory.
func (s *SocketDir) Dial(ctx context.Context, name string) (net.Conn, error) {
	return s.Guard(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", s.DialPath(name))
	})(ctx)
}

// Dialer is Dial for one socket.
func (s *SocketDir) Dialer(name string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) { return s.Dial(ctx, name) }
}

// Guard wraps a dialer that connects to a DialPath: the wrapped one fails
// with ErrSocketDirClosed once Close has been called, and Close waits for
// those in progress, so none can reach a recycled descriptor.
func (s *SocketDir) Guard(dial func(ctx context.Context) (net.Conn, error)) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		s.mu.RLock()
		defer s.mu.RUnlock()
		if s.closed {
			return nil, ErrSocketDirClosed
		}
		return dial(ctx)
	}
}

// Close frees the directory descriptor; dialing fails from then on. The
// sockets themselves are left for their owner to remove. It is safe to call
// more than once.
func (s *SocketDir) Close() {
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
