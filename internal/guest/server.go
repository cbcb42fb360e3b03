package guest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// defaultPath is the PATH commands get unless the request overrides it.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ServerConfig configures the guest's control server.
type ServerConfig struct {
	// Workspace is the absolute directory relative paths resolve against and
	// where commands run by default.
	Workspace string
	Logger    *slog.Logger
	// OnShutdown is called (once, in its own goroutine) after a shutdown
	// request has been answered.
	OnShutdown func()
	// Home is HOME for commands; empty means Workspace.
	Home string
	// Reaper, when set, starts every command so that a PID-1 reaper never
	// collects a status exec.Cmd is waiting for. Leave nil unless this process
	// reaps orphans (see Reaper).
	Reaper *Reaper
	// Boot, when set, is reported in Health.
	Boot *BootTimes
	// Init, when set, serves PathInit (a VM's init sets it).
	Init Initializer
	// SyncWrites flushes the file systems to disk when a command ends or a
	// file is written: a VM whose VMM is killed (its server was) keeps the
	// agent's work on its disk, to resume on. The process sandbox writes to
	// the host's own file system and needs none of it.
	SyncWrites bool
}

// Server is the guest side of the control protocol.
type Server struct {
	ws      string
	log     *slog.Logger
	onStop  func()
	reaper  *Reaper
	boot    *BootTimes
	baseEnv []string
	tunnels *tunnels
	init    Initializer
	sync    bool

	mu      sync.Mutex
	groups  map[int]struct{} // process groups started, until seen empty
	closing bool

	shutdownOnce sync.Once
}

// NewServer returns a server for cfg.
func NewServer(cfg ServerConfig) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ws := filepath.Clean(cfg.Workspace)
	home := cfg.Home
	if home == "" {
		home = ws
	}
	return &Server{
		ws:     ws,
		log:    log,
		onStop: cfg.OnShutdown,
		reaper: cfg.Reaper,
		boot:   cfg.Boot,
		// Deliberately not derived from this process's environment: whatever
		// launched the guest must not leak variables (secrets) into commands.
		baseEnv: []string{"PATH=" + defaultPath, "HOME=" + home, "TERM=dumb", "LANG=C.UTF-8"},
		groups:  make(map[int]struct{}),
		tunnels: newTunnels(),
		init:    cfg.Init,
		sync:    cfg.SyncWrites,
	}
}

// Handler returns the control API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathHealth, s.handleHealth)
	mux.HandleFunc("GET "+PathStats, s.handleStats)
	mux.HandleFunc("POST "+PathExec, s.handleExec)
	mux.HandleFunc("POST "+PathAttach, s.handleAttach)
	mux.HandleFunc("POST "+PathTunnelListen, s.handleTunnelListen)
	mux.HandleFunc("POST "+PathTunnelAccept, s.handleTunnelAccept)
	mux.HandleFunc("POST "+PathTunnelClose, s.handleTunnelClose)
	mux.HandleFunc("POST "+PathRead, s.handleRead)
	mux.HandleFunc("POST "+PathWrite, s.handleWrite)
	mux.HandleFunc("POST "+PathStat, s.handleStat)
	mux.HandleFunc("POST "+PathList, s.handleList)
	mux.HandleFunc("POST "+PathForward, s.handleForward)
	mux.HandleFunc("GET "+PathPorts, s.handlePorts)
	mux.HandleFunc("POST "+PathShutdown, s.handleShutdown)
	mux.HandleFunc("POST "+PathInit, s.handleInit)
	s.registerWorkspace(mux) // workspace.go: files, tarballs and archives, confined to the workspace
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &Error{Status: http.StatusNotFound, Code: CodeInvalid, Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	return mux
}

// Serve answers on ln until ctx ends, then kills every process group it
// started and stops gracefully (bounded). It returns nil after a stop caused
// by ctx.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		// No WriteTimeout: exec answers stream for as long as the command runs.
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		s.KillAll()
		s.tunnels.closeAll()
		return err
	case <-ctx.Done():
	}
	// Kill first: the exec and attach handlers then finish on their own, and
	// closing the tunnels ends waiting accept requests and carried
	// connections (upgraded connections are not the http.Server's to close),
	// so the graceful shutdown below does not wait on them.
	s.KillAll()
	s.tunnels.closeAll()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

// KillAll SIGKILLs every process group the server started and refuses new
// commands from then on.
func (s *Server) KillAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	for pgid := range s.groups {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		delete(s.groups, pgid)
	}
}

var errClosing = &Error{Status: http.StatusServiceUnavailable, Code: CodeInternal, Message: "guest is shutting down"}

// startCmd starts cmd in its own process group and records the group. The
// lock is held across the fork so that KillAll cannot miss a group.
func (s *Server) startCmd(cmd *exec.Cmd) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return errClosing
	}
	// Forget groups whose members are all gone; kill(-pgid, 0) fails with
	// ESRCH exactly then, and a pgid cannot be reused while its group exists.
	for pgid := range s.groups {
		if syscall.Kill(-pgid, 0) == syscall.ESRCH {
			delete(s.groups, pgid)
		}
	}
	var err error
	if s.reaper != nil {
		err = s.reaper.Start(cmd)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		return err
	}
	s.groups[cmd.Process.Pid] = struct{}{}
	return nil
}

func (s *Server) handleShutdown(w http.ResponseWriter, r *http.Request) {
	s.log.Info("shutdown requested")
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	_ = http.NewResponseController(w).Flush()
	s.shutdownOnce.Do(func() {
		if s.onStop != nil {
			go s.onStop()
		}
	})
}

// resolve maps a request path to a guest path: relative to the workspace,
// absolute as given (the guest owns its whole filesystem).
func (s *Server) resolve(p string) (string, error) {
	if p == "" {
		return "", &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: "path is required"}
	}
	if strings.IndexByte(p, 0) >= 0 {
		return "", &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: "path contains a NUL byte"}
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(s.ws, p)
	}
	return filepath.Clean(p), nil
}

// decode reads a bounded JSON body. It reads to EOF so that net/http starts
// watching the connection and cancels the request context if the client goes
// away (exec relies on that to kill the command).
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: "request body exceeds limit"}
		}
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: "reading request: " + err.Error()}
	}
	if err := json.Unmarshal(b, v); err != nil {
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: "bad request body: " + err.Error()}
	}
	return nil
}

// fsError maps a filesystem error to a protocol error.
func fsError(err error) *Error {
	if e, ok := errors.AsType[*Error](err); ok {
		return e
	}
	msg := err.Error()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: msg}
	case errors.Is(err, fs.ErrPermission):
		return &Error{Status: http.StatusForbidden, Code: CodePermission, Message: msg}
	case errors.Is(err, syscall.EISDIR):
		return &Error{Status: http.StatusBadRequest, Code: CodeIsDir, Message: msg}
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.ENAMETOOLONG),
		errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.ENOEXEC):
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: msg}
	case errors.Is(err, syscall.EFBIG), errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: msg}
	default:
		return &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: msg}
	}
}

func writeError(w http.ResponseWriter, err error) {
	e := fsError(err)
	writeJSON(w, e.Status, ErrorResponse{Error: e.Message, Code: e.Code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// syncDisk flushes the file systems, when the server was asked to.
func (s *Server) syncDisk() {
	if s.sync {
		unix.Sync()
	}
}
