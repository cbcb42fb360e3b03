package guest

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

type testGuest struct {
	c        *Client
	ws       string
	sock     string
	srv      *Server
	shutdown chan struct{}
}

// startGuest serves a guest on a Unix socket for the test; opts adjust the
// server before it starts serving.
func startGuest(t *testing.T, cfg ServerConfig, opts ...func(*Server)) *testGuest {
	t.Helper()
	dir := t.TempDir()
	if cfg.Workspace == "" {
		cfg.Workspace = filepath.Join(dir, "ws")
	}
	if err := os.MkdirAll(cfg.Workspace, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "g.sock")
	ln, err := Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	shut := make(chan struct{})
	if cfg.OnShutdown == nil {
		cfg.OnShutdown = func() { close(shut) }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	srv := NewServer(cfg)
	for _, o := range opts {
		o(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	c := NewClient(UnixDialer(sock))
	t.Cleanup(func() {
		c.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testGuest{c: c, ws: cfg.Workspace, sock: sock, srv: srv, shutdown: shut}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// output collects exec output per stream; safe to read after Exec returns.
type output struct {
	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	chunks int
}

func (o *output) add(stream string, data []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.chunks++
	if len(data) > MaxExecChunkBytes {
		panic("chunk larger than MaxExecChunkBytes")
	}
	switch stream {
	case FrameStdout:
		o.stdout.Write(data)
	case FrameStderr:
		o.stderr.Write(data)
	default:
		panic("unexpected stream " + stream)
	}
}

func sh(script string) ExecRequest {
	return ExecRequest{Argv: []string{"sh", "-c", script}}
}

// waitGone polls until pid no longer runs (gone, or a zombie nobody reaped
// yet, which is dead all the same).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if !alive(pid) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still running", pid)
		}
		<-tick.C
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	state := b[i+2]
	return state != 'Z' && state != 'X'
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		t.Fatalf("bad pid file %s: %q", path, b)
	}
	return pid
}
