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
	var req ExecRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	cmd, err := s.prepare(req)
	if err != nil {
		writeError(w, err)
		return
	}

	// The parent's copies of the write ends are closed once the child holds
	// its own, so readers see EOF when every process holding them is gone.
	outR, outW, err := os.Pipe()
	if err != nil {
		writeError(w, err)
		return
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		writeError(w, err)
		return
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	start := time.Now()
	err = s.startCmd(cmd)
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		writeError(w, err)
		return
	}
	pgid := cmd.Process.Pid
	s.log.Info("exec", "cmd", filepath.Base(req.Argv[0]), "args", len(req.Argv)-1, "pid", pgid, "timeoutSec", req.TimeoutSec)

	// From here on the answer is a 200 stream; failures become frames.
	w.Header().Set("Content-Type", ContentNDJSON)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		if s.reaper != nil {
			s.reaper.Done(pgid)
		}
		close(exited)
	}()

	frames := make(chan ExecFrame, 8)
	var readers sync.WaitGroup
	readers.Add(2)
	go pump(outR, FrameStdout, frames, &readers)
	go pump(errR, FrameStderr, frames, &readers)
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
		if req.TimeoutSec > 0 {
			t := time.NewTimer(time.Duration(req.TimeoutSec) * time.Second)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-timeout:
			timedOut.Store(true)
			killGroup(pgid)
		case <-ctx.Done():
			// The client went away (or a write failed): nobody will see the
			// output, so the command must not outlive the request.
			killGroup(pgid)
		case <-exited:
		}
		<-exited
		select {
		case <-readersDone:
		case <-time.After(drainDelay):
			now := time.Now()
			_ = outR.SetReadDeadline(now)
			_ = errR.SetReadDeadline(now)
		}
	}()

	enc := json.NewEncoder(w)
	writeOK := true
	send := func(f ExecFrame) {
		if !writeOK {
			return
		}
		if err := enc.Encode(f); err == nil {
			err = rc.Flush()
		}
		if err != nil {
			writeOK = false
			cancel()
		}
	}
	for f := range frames {
		send(f)
	}
	<-exited
	outR.Close()
	errR.Close()

	ps := cmd.ProcessState
	if ps == nil {
		s.log.Warn("exec wait failed", "pid", pgid, "err", waitErr)
		send(ExecFrame{Type: FrameError, Message: fmt.Sprintf("waiting for command: %v", waitErr)})
		return
	}
	exit := ExecFrame{Type: FrameExit, ExitCode: ps.ExitCode(), TimedOut: timedOut.Load(), DurationMs: time.Since(start).Milliseconds()}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		exit.Signal = ws.Signal().String()
	}
	s.log.Info("exec done", "pid", pgid, "exitCode", exit.ExitCode, "signal", exit.Signal, "timedOut", exit.TimedOut, "ms", exit.DurationMs)
	send(exit)
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

func killGroup(pgid int) {
	// ESRCH only means the group is already gone; the caller still waits for
	// the leader either way.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}
