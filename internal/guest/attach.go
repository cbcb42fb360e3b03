package guest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// attachWriteGrace is how long frames still get to reach a host once the
// session is over (the host went away, or broke the protocol): a host that
// stops reading must not pin the handler forever.
const attachWriteGrace = 5 * time.Second

// stdinQueue bounds the stdin frames waiting for the command to read them.
// Past that the guest stops reading the connection, which pushes back on the
// host's writes the way a full pipe would; signal frames sent after that wait
// behind the queued stdin (closing the connection, or TimeoutSec, still ends
// the command).
const stdinQueue = 16

var attachSignals = map[string]syscall.Signal{
	SignalInt:  syscall.SIGINT,
	SignalTerm: syscall.SIGTERM,
	SignalKill: syscall.SIGKILL,
}

// handleAttach runs a command with live stdin and signals over an upgraded
// connection. It is exec's lifecycle (process group, reaper, timeout, kill
// when the host goes away) with the HTTP stream replaced by NDJSON frames
// both ways.
func (s *Server) handleAttach(w http.ResponseWriter, r *http.Request) {
	if !wantsUpgrade(r, UpgradeAttach) {
		writeError(w, &Error{Status: http.StatusBadRequest, Code: CodeInvalid,
			Message: "attach needs Connection: Upgrade and Upgrade: " + UpgradeAttach})
		return
	}
	// Start before switching protocols, so that a command that cannot run is
	// an ordinary HTTP error the client can report.
	req, p, ok := s.startRequested(w, r, true)
	if !ok {
		return
	}
	conn, err := switchProtocols(w, UpgradeAttach)
	if err != nil {
		s.log.Warn("attach: switching protocols", "err", err)
		p.abandon()
		return
	}
	defer conn.Close()
	s.log.Info("attach", "cmd", filepath.Base(req.Argv[0]), "args", len(req.Argv)-1, "pid", p.pgid, "timeoutSec", req.TimeoutSec)

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	context.AfterFunc(ctx, func() { _ = conn.SetWriteDeadline(time.Now().Add(attachWriteGrace)) })

	in := newStdinWriter(p.inW)
	go func() {
		// Nobody reads stdin once the command is gone; this also unblocks a
		// write the command never consumed.
		<-p.exited
		in.stop()
	}()
	if len(req.Stdin) > 0 {
		in.push(req.Stdin)
	}
	var broken failure
	hostDone := make(chan struct{})
	go func() {
		defer close(hostDone)
		// Whatever ends the host's side (it went away, or broke the protocol)
		// ends the command, as with exec.
		defer cancel()
		if err := s.readInput(conn, p, in); err != nil {
			broken.set(err.Error())
		}
	}()

	p.stream(ctx, req.TimeoutSec, func(f ExecFrame) error {
		b, err := json.Marshal(f)
		if err != nil {
			return err
		}
		_, err = conn.Write(append(b, '\n'))
		return err
	}, broken.get)
	conn.Close() // ends readInput
	<-hostDone
	<-in.done
}

// readInput applies the host's frames until the connection ends. It returns
// an error only for a protocol violation.
func (s *Server) readInput(conn net.Conn, p *proc, in *stdinWriter) error {
	br := bufio.NewReaderSize(conn, MaxFrameBytes)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return fmt.Errorf("frame from host larger than %d bytes", MaxFrameBytes)
		}
		if err != nil {
			return nil // the host went away, or the session is over
		}
		if line = bytes.TrimSpace(line); len(line) == 0 {
			continue
		}
		var f InputFrame
		if err := json.Unmarshal(line, &f); err != nil {
			return fmt.Errorf("bad frame from host: %v", err)
		}
		switch f.Type {
		case FrameStdin:
			in.push(f.Data)
		case FrameStdinClose:
			if p.tty != nil {
				in.push([]byte{4}) // a terminal has no end of input: Ctrl+D at the start of a line is one
				continue
			}
			in.close()
		case FrameResize:
			if err := p.resize(WindowSize{Cols: f.Cols, Rows: f.Rows}); err != nil {
				return err
			}
		case FrameSignal:
			sig, ok := attachSignals[f.Signal]
			if !ok {
				return fmt.Errorf("unknown signal %q from host", truncate(f.Signal, 16))
			}
			select {
			case <-p.exited:
				// The leader is collected; its pgid may be reused once the
				// group is empty, so signalling now could hit a stranger.
			default:
				_ = syscall.Kill(-p.pgid, sig)
			}
		default:
			return fmt.Errorf("unknown frame type %q from host", truncate(f.Type, 32))
		}
	}
}

// stdinWriter feeds the command's stdin from its own goroutine, so that a
// command that does not read stdin cannot stall signal frames until the
// queue is full.
type stdinWriter struct {
	f     *os.File
	queue chan []byte // nil: close stdin
	quit  chan struct{}
	done  chan struct{} // closed when the writer has closed f

	once sync.Once
}

func newStdinWriter(f *os.File) *stdinWriter {
	w := &stdinWriter{f: f, queue: make(chan []byte, stdinQueue), quit: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *stdinWriter) run() {
	defer close(w.done)
	defer w.f.Close()
	for {
		select {
		case b := <-w.queue:
			if b == nil {
				return
			}
			if _, err := w.f.Write(b); err != nil {
				// The command closed its stdin (EPIPE) or is gone; later
				// input is dropped, as a closed pipe would.
				return
			}
		case <-w.quit:
			return
		}
	}
}

// push queues data, blocking while the queue is full; input after the
// writer has stopped is dropped.
func (w *stdinWriter) push(b []byte) {
	if len(b) == 0 {
		return
	}
	select {
	case w.queue <- b:
	case <-w.done:
	}
}

// close closes stdin once the data queued before it is written.
func (w *stdinWriter) close() {
	select {
	case w.queue <- nil:
	case <-w.done:
	}
}

// stop ends the writer now, interrupting a write in progress.
func (w *stdinWriter) stop() {
	w.once.Do(func() {
		close(w.quit)
		_ = w.f.SetWriteDeadline(time.Unix(1, 0))
	})
}

// failure remembers why a session broke, for its final frame.
type failure struct {
	mu  sync.Mutex
	msg string
}

func (f *failure) set(msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.msg == "" {
		f.msg = msg
	}
}

func (f *failure) get() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.msg
}
