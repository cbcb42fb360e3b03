package guest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// drainDelay is how long output is still collected after the command exits
// while something it started in the background keeps its stdout/stderr open.
// Such background processes keep running; they just lose their output.
const drainDelay = 500 * time.Millisecond

func (s *Server) handleExec(w http.ResponseWriter, r *http.Request) {
	req, p, ok := s.startRequested(w, r, false)
	if !ok {
		return
	}
	s.log.Info("exec", "cmd", filepath.Base(req.Argv[0]), "args", len(req.Argv)-1, "pid", p.pgid, "timeoutSec", req.TimeoutSec)

	// From here on the answer is a 200 stream; failures become frames.
	w.Header().Set("Content-Type", ContentNDJSON)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()

	enc := json.NewEncoder(w)
	// The request context ends when the client goes away: nobody will see the
	// output, so the command must not outlive the request.
	p.stream(r.Context(), req.TimeoutSec, func(f ExecFrame) error {
		if f.Type == FrameExit || f.Type == FrameError {
			s.syncDisk() // what the command wrote is on disk when the host hears it ended
		}
		if err := enc.Encode(f); err != nil {
			return err
		}
		return rc.Flush()
	}, nil)
}

// proc is a started command and the parent's ends of its pipes.
type proc struct {
	s          *Server
	cmd        *exec.Cmd
	pgid       int
	start      time.Time
	outR, errR *os.File
	inW        *os.File      // the command's stdin, when spawned with one (attach)
	tty        *os.File      // the pseudo-terminal's master (outR), when it runs on one (pty.go); errR is nil then
	exited     chan struct{} // closed once cmd.Wait has returned
	waitErr    error         // cmd.Wait's error, valid once exited is closed
}

// startRequested decodes the ExecRequest in r's body and starts it (with a
// stdin pipe when stdin is set). When it cannot, it answers the HTTP error
// itself and reports false.
func (s *Server) startRequested(w http.ResponseWriter, r *http.Request, stdin bool) (ExecRequest, *proc, bool) {
	var req ExecRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return req, nil, false
	}
	cmd, err := s.prepare(req)
	if err != nil {
		writeError(w, err)
		return req, nil, false
	}
	var p *proc
	switch {
	case req.TTY != nil && !stdin:
		err = &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: "a terminal (tty) needs an attached exec"}
	case req.TTY != nil:
		p, err = s.spawnPTY(cmd, *req.TTY)
	default:
		p, err = s.spawn(cmd, stdin)
	}
	if err != nil {
		writeError(w, err)
		return req, nil, false
	}
	return req, p, true
}

// spawn starts cmd with its stdout and stderr on pipes, and with a stdin pipe
// when stdin is set, and waits for it in the background.
func (s *Server) spawn(cmd *exec.Cmd, stdin bool) (*proc, error) {
	var parent, child []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	pipe := func() (r, w *os.File, err error) {
		if r, w, err = os.Pipe(); err != nil {
			closeAll(parent)
			closeAll(child)
		}
		return r, w, err
	}
	outR, outW, err := pipe()
	if err != nil {
		return nil, err
	}
	parent, child = append(parent, outR), append(child, outW)
	errR, errW, err := pipe()
	if err != nil {
		return nil, err
	}
	parent, child = append(parent, errR), append(child, errW)
	var inW *os.File
	if stdin {
		var inR *os.File
		if inR, inW, err = pipe(); err != nil {
			return nil, err
		}
		parent, child = append(parent, inW), append(child, inR)
		cmd.Stdin = inR
	}
	cmd.Stdout, cmd.Stderr = outW, errW

	start := time.Now()
	err = s.startCmd(cmd)
	// The parent's copies of the child's ends are closed once the child holds
	// its own, so readers see EOF when every process holding them is gone.
	closeAll(child)
	if err != nil {
		closeAll(parent)
		return nil, err
	}
	p := &proc{s: s, cmd: cmd, pgid: cmd.Process.Pid, start: start, outR: outR, errR: errR, inW: inW, exited: make(chan struct{})}
	go p.wait()
	return p, nil
}

// wait collects the command's exit, then tells the reaper its process
// group is done and whoever waits on exited.
func (p *proc) wait() {
	p.waitErr = p.cmd.Wait()
	if p.s.reaper != nil {
		p.s.reaper.Done(p.pgid)
	}
	close(p.exited)
}

// abandon kills a command nobody will stream, and releases it.
func (p *proc) abandon() {
	killGroup(p.pgid)
	<-p.exited
	p.outR.Close()
	if p.errR != nil {
		p.errR.Close()
	}
	if p.inW != nil {
		p.inW.Close()
	}
}

// stream sends the command's output through send as it comes, then its exit
// frame, or an error frame when it could not be waited for or failure (if
// set) reports why the session broke. The process group is killed when ctx
// ends, send fails, or timeoutSec passes.
func (p *proc) stream(ctx context.Context, timeoutSec int, send func(ExecFrame) error, failure func() string) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	frames := make(chan ExecFrame, 8)
	var readers sync.WaitGroup
	readers.Add(1)
	go pump(p.outR, FrameStdout, frames, &readers)
	if p.errR != nil { // nil on a terminal, where stderr is the terminal too
		readers.Add(1)
		go pump(p.errR, FrameStderr, frames, &readers)
	}
	readersDone := make(chan struct{})
	go func() {
		readers.Wait()
		close(readersDone)
		close(frames)
	}()

	// The watcher runs apart from the writing loop below so that a client that
	// stops reading (blocking our writes) cannot delay the timeout kill.
	var timedOut atomic.Bool
	go func() {
		var timeout <-chan time.Time
		if timeoutSec > 0 {
			t := time.NewTimer(time.Duration(timeoutSec) * time.Second)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-timeout:
			timedOut.Store(true)
			killGroup(p.pgid)
		case <-ctx.Done():
			// The client went away, a write failed, or the session broke:
			// nobody will see the output, so the command must not outlive it.
			killGroup(p.pgid)
		case <-p.exited:
		}
		<-p.exited
		select {
		case <-readersDone:
		case <-time.After(drainDelay):
			now := time.Now()
			_ = p.outR.SetReadDeadline(now)
			if p.errR != nil {
				_ = p.errR.SetReadDeadline(now)
			}
		}
	}()

	writeOK := true
	sendf := func(f ExecFrame) {
		if !writeOK {
			return
		}
		if err := send(f); err != nil {
			writeOK = false
			cancel()
		}
	}
	for f := range frames {
		sendf(f)
	}
	<-p.exited
	p.outR.Close()
	if p.errR != nil {
		p.errR.Close()
	}

	if failure != nil {
		if msg := failure(); msg != "" {
			p.s.log.Warn("exec session failed", "pid", p.pgid, "err", msg)
			sendf(ExecFrame{Type: FrameError, Message: msg})
			return
		}
	}
	ps := p.cmd.ProcessState
	if ps == nil {
		p.s.log.Warn("exec wait failed", "pid", p.pgid, "err", p.waitErr)
		sendf(ExecFrame{Type: FrameError, Message: fmt.Sprintf("waiting for command: %v", p.waitErr)})
		return
	}
	exit := ExecFrame{Type: FrameExit, ExitCode: ps.ExitCode(), TimedOut: timedOut.Load(), DurationMs: time.Since(p.start).Milliseconds()}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		exit.Signal = ws.Signal().String()
	}
	p.s.log.Info("exec done", "pid", p.pgid, "exitCode", exit.ExitCode, "signal", exit.Signal, "timedOut", exit.TimedOut, "ms", exit.DurationMs)
	sendf(exit)
}

// prepare validates req and builds the command without starting it.
func (s *Server) prepare(req ExecRequest) (*exec.Cmd, error) {
	invalid := func(format string, a ...any) error {
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: fmt.Sprintf(format, a...)}
	}
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return nil, invalid("argv is empty")
	}
	for _, a := range req.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return nil, invalid("argv contains a NUL byte")
		}
	}
	if len(req.Stdin) > MaxStdinBytes {
		return nil, &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: "stdin exceeds limit"}
	}
	if req.TimeoutSec < 0 {
		return nil, invalid("timeoutSec is negative")
	}
	env := append([]string(nil), s.baseEnv...)
	for _, kv := range req.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.IndexByte(kv, 0) >= 0 {
			return nil, invalid("env entry %q is not KEY=VALUE", truncate(kv, 64))
		}
		env = append(env, kv)
	}

	dir := s.ws
	if req.Dir != "" {
		var err error
		if dir, err = s.resolve(req.Dir); err != nil {
			return nil, err
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fsError(err)
	}
	if !fi.IsDir() {
		return nil, invalid("dir %s is not a directory", dir)
	}

	path, err := lookPath(req.Argv[0], envValue(env, "PATH"), dir)
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        req.Argv,
		Dir:         dir,
		Env:         env, // exec.Cmd keeps the last of duplicate keys, so req.Env overrides
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
		// Bounds exec.Cmd's stdin copier if a background process inherited stdin.
		WaitDelay: time.Second,
	}
	if len(req.Stdin) > 0 {
		cmd.Stdin = bytes.NewReader(req.Stdin)
	}
	return cmd, nil
}

// lookPath finds name in the command's PATH (not this process's, which
// exec.Command would use).
func lookPath(name, pathEnv, dir string) (string, error) {
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		return name, nil // exec reports a missing or non-executable file itself
	}
	for _, d := range filepath.SplitList(pathEnv) {
		if !filepath.IsAbs(d) {
			continue // "." or relative entries would make lookup depend on dir
		}
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: fmt.Sprintf("%s: command not found", truncate(name, 256))}
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// pump forwards one output stream as frames, preserving its order.
func pump(f *os.File, stream string, out chan<- ExecFrame, wg *sync.WaitGroup) {
	defer wg.Done()
	buf := make([]byte, MaxExecChunkBytes)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			out <- ExecFrame{Type: stream, Data: bytes.Clone(buf[:n])}
		}
		if err != nil {
			return
		}
	}
}
