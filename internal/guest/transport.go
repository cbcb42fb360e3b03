package guest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
)

// Listen opens the guest's control listener. addr is "unix:/path/to.sock";
// "vsock:PORT" and "serial:/dev/..." are reserved for the VM drivers.
func Listen(addr string) (net.Listener, error) {
	kind, rest, ok := strings.Cut(addr, ":")
	if !ok || rest == "" {
		return nil, fmt.Errorf("listen address %q: want unix:PATH", addr)
	}
	switch kind {
	case "unix":
		return listenUnix(rest)
	case "vsock", "serial":
		return nil, fmt.Errorf("listen address %q: the %s transport is not supported yet", addr, kind)
	default:
		return nil, fmt.Errorf("listen address %q: unknown transport %q (want unix:PATH)", addr, kind)
	}
}

func listenUnix(path string) (net.Listener, error) {
	// A socket left by a previous run would make bind fail; anything else at
	// that path is not ours to delete.
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("listen %s: path exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("listen %s: removing stale socket: %w", path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	// Only the host side (same user) has any business connecting.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return ln, nil
}

// UnixDialer dials the guest's Unix socket.
func UnixDialer(path string) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
}
