package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// listen serves name in s, each connection answered with the name. It binds
// where a child running in s.Dir would with BindPath; when that is a bare
// name, through a descriptor of its own on the directory instead of changing
// the test's working directory.
func listen(t *testing.T, s *SocketDir, name string) {
	t.Helper()
	p := s.BindPath(name)
	if !filepath.IsAbs(p) {
		f, err := os.Open(s.Dir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		p = fmt.Sprintf("/proc/self/fd/%d/%s", f.Fd(), p)
	}
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(name))
			c.Close()
		}
	}()
}

func TestSocketDir(t *testing.T) {
	base := t.TempDir()
	long := filepath.Join(base, strings.Repeat("d", 120))
	if err := os.Mkdir(long, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		dir   string
		short bool
	}{
		{"short", base, true},
		{"long", long, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := OpenSocketDir(tc.dir, len("b.sock"))
			if err != nil {
				t.Fatal(err)
			}
			if s.Short() != tc.short || s.Dir() != tc.dir {
				t.Fatalf("Short %v Dir %q", s.Short(), s.Dir())
			}
			if s.Path("a.sock") != filepath.Join(tc.dir, "a.sock") {
				t.Errorf("Path = %q", s.Path("a.sock"))
			}
			wantBind := filepath.Join(tc.dir, "a.sock")
			if !tc.short {
				wantBind = "a.sock"
			}
			if s.BindPath("a.sock") != wantBind {
				t.Errorf("BindPath = %q, want %q", s.BindPath("a.sock"), wantBind)
			}
			if !tc.short && !strings.HasPrefix(s.DialPath("a.sock"), "/proc/self/fd/") {
				t.Errorf("DialPath = %q", s.DialPath("a.sock"))
			}
			listen(t, s, "a.sock")
			listen(t, s, "b.sock")
			for _, name := range []string{"a.sock", "b.sock"} {
				c, err := s.Dialer(name)(t.Context())
				if err != nil {
					t.Fatalf("dial %s: %v", name, err)
				}
				b := make([]byte, 16)
				n, _ := c.Read(b)
				c.Close()
				if string(b[:n]) != name {
					t.Errorf("dial %s reached %q", name, b[:n])
				}
				if _, err := os.Stat(s.Path(name)); err != nil {
					t.Errorf("Path does not name the socket: %v", err)
				}
			}
			guarded := s.Guard(func(context.Context) (net.Conn, error) { return nil, errors.New("dialed") })
			if _, err := guarded(t.Context()); err == nil || err.Error() != "dialed" {
				t.Errorf("guarded dial before Close: %v", err)
			}

			s.Close()
			s.Close()
			if _, err := s.Dial(t.Context(), "a.sock"); !errors.Is(err, ErrSocketDirClosed) {
				t.Errorf("Dial after Close = %v", err)
			}
			if _, err := guarded(t.Context()); !errors.Is(err, ErrSocketDirClosed) {
				t.Errorf("guarded dial after Close = %v", err)
			}
			if _, err := os.Stat(s.Path("a.sock")); err != nil {
				t.Errorf("Close removed a socket: %v", err)
			}
		})
	}
}

func TestSocketDirBoundary(t *testing.T) {
	// The longest name decides: a path of exactly 107 bytes fits, 108 not.
	base := t.TempDir()
	pad := maxSocketPath - len(base) - 1 - len("x.sock") - 1
	if pad < 1 {
		t.Skip("temporary directory too deep")
	}
	dir := filepath.Join(base, strings.Repeat("p", pad))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fits, err := OpenSocketDir(dir, len("x.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer fits.Close()
	tooLong, err := OpenSocketDir(dir, len("xx.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer tooLong.Close()
	if len(fits.Path("x.sock")) != maxSocketPath || !fits.Short() || tooLong.Short() {
		t.Errorf("path %d bytes: Short %v; one byte longer: Short %v", len(fits.Path("x.sock")), fits.Short(), tooLong.Short())
	}
	if _, err := OpenSocketDir(filepath.Join(dir, "missing", strings.Repeat("m", 120)), 1); err == nil {
		t.Error("OpenSocketDir of a missing long directory succeeded")
	}
}
