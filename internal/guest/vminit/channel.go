package vminit

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/mdlayher/vsock"

	"github.com/execlaw/execlaw/internal/guest"
)

// Listen opens the control channel the boot config names.
func Listen(ctx context.Context, log *slog.Logger, c guest.BootConfig) (net.Listener, error) {
	if port, ok := strings.CutPrefix(c.Channel, "vsock:"); ok {
		p, err := strconv.ParseUint(port, 10, 32)
		if err != nil {
			return nil, err
		}
		return vsock.Listen(uint32(p), nil)
	}
	dev, err := findSerialPort(ctx, guest.SerialPortName)
	if err != nil {
		return nil, err
	}
	return newSerialListener(dev, log), nil
}

// findSerialPort finds the virtio-serial port the host named, by the name
// sysfs gives it (there is no udev to make /dev/virtio-ports links).
func findSerialPort(ctx context.Context, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		ports, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, p := range ports {
			b, err := os.ReadFile(p)
			if err == nil && strings.TrimSpace(string(b)) == name {
				return "/dev/" + filepath.Base(filepath.Dir(p)), nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no virtio-serial port named %s appeared", name)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// serialListener serves yamux sessions over a virtio-serial port: the host
// opens a stream per connection. When the host side goes away the session
// ends; the port is opened again for the next host connection.
type serialListener struct {
	dev  string
	log  *slog.Logger
	done chan struct{}
	once sync.Once

	mu   sync.Mutex
	sess *yamux.Session
	port io.Closer
}

func newSerialListener(dev string, log *slog.Logger) *serialListener {
	return &serialListener{dev: dev, log: log, done: make(chan struct{})}
}

func yamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = io.Discard
	c.ConnectionWriteTimeout = 30 * time.Second
	c.StreamOpenTimeout = 30 * time.Second
	return c
}

func (l *serialListener) session() (*yamux.Session, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sess != nil && !l.sess.IsClosed() {
		return l.sess, nil
	}
	if l.port != nil {
		l.port.Close()
	}
	f, err := os.OpenFile(l.dev, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	s, err := yamux.Server(f, yamuxConfig())
	if err != nil {
		f.Close()
		return nil, err
	}
	l.sess, l.port = s, f
	return s, nil
}

func (l *serialListener) Accept() (net.Conn, error) {
	for {
		select {
		case <-l.done:
			return nil, net.ErrClosed
		default:
		}
		s, err := l.session()
		if err != nil {
			return nil, err
		}
		c, err := s.Accept()
		if err == nil {
			return c, nil
		}
		l.log.Debug("control channel session ended; reopening the port", "err", err)
		select {
		case <-l.done:
			return nil, net.ErrClosed
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (l *serialListener) Close() error {
	l.once.Do(func() { close(l.done) })
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sess != nil {
		l.sess.Close()
	}
	if l.port != nil {
		l.port.Close()
	}
	return nil
}

func (l *serialListener) Addr() net.Addr { return serialAddr(l.dev) }

type serialAddr string

func (a serialAddr) Network() string { return "virtio-serial" }
func (a serialAddr) String() string  { return string(a) }
