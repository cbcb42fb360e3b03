package guest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Attached is a command running in the guest with live stdin, output and
// signals, from Client.Attach. Write, CloseStdin, Signal and Close may be
// called from any goroutine; Next from one goroutine at a time.
type Attached struct {
	conn net.Conn
	fr   *frameReader
	wmu  sync.Mutex

	// Only touched by Next.
	ended bool  // a terminal frame came
	err   error // the stream failed; every later Next returns it
}

// Attach starts a command with a live session: stdin written as it comes,
// signals to its process group, output read frame by frame with Next.
// ctx bounds starting it (DefaultCallTimeout when ctx has no deadline);
// afterwards only Close ends the session, and the guest then kills the
// command's process group. req.Stdin, if set, is written before any Write.
func (c *Client) Attach(ctx context.Context, req ExecRequest) (*Attached, error) {
	if err := checkExec(req); err != nil {
		return nil, err
	}
	if req.TTY != nil && !req.TTY.Valid() {
		return nil, invalidSize(*req.TTY)
	}
	conn, err := c.upgrade(ctx, PathAttach, UpgradeAttach, req, DefaultCallTimeout)
	if errors.Is(err, errNoContent) {
		err = fmt.Errorf("guest %s: %w", PathAttach, err)
	}
	if err != nil {
		return nil, err
	}
	return &Attached{conn: conn, fr: newFrameReader(conn)}, nil
}

// Write sends p to the command's stdin, in frames of at most
// MaxExecChunkBytes. It blocks while the command is not reading (the guest
// queues a little, then stops reading the connection).
func (a *Attached) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), MaxExecChunkBytes)]
		if err := a.send(InputFrame{Type: FrameStdin, Data: chunk}); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

// CloseStdin closes the command's stdin once what was written before has
// been delivered.
func (a *Attached) CloseStdin() error {
	return a.send(InputFrame{Type: FrameStdinClose})
}

// Signal sends SignalInt, SignalTerm or SignalKill to the command's whole
// process group. A signal after the command exited is ignored.
func (a *Attached) Signal(sig string) error {
	if _, ok := attachSignals[sig]; !ok {
		return fmt.Errorf("guest attach: unknown signal %q (want INT, TERM or KILL)", sig)
	}
	return a.send(InputFrame{Type: FrameSignal, Signal: sig})
}

// Resize changes the size of the command's terminal (an attach with TTY
// set); the guest ends a session that sends it without one, or out of
// bounds (WindowSize.Valid).
func (a *Attached) Resize(size WindowSize) error {
	if !size.Valid() {
		return invalidSize(size)
	}
	return a.send(InputFrame{Type: FrameResize, Cols: size.Cols, Rows: size.Rows})
}

func (a *Attached) send(f InputFrame) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	a.wmu.Lock()
	defer a.wmu.Unlock()
	if _, err := a.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("guest attach: %w", err)
	}
	return nil
}

// Next returns the next frame: stdout and stderr output as it comes, then
// one exit frame (Result gives the ExecResult) or error frame (the command
// could not be waited for, or the session broke). After that it returns
// io.EOF. Stream failures, including Close, are errors.
func (a *Attached) Next() (ExecFrame, error) {
	switch {
	case a.err != nil:
		return ExecFrame{}, a.err
	case a.ended:
		return ExecFrame{}, io.EOF
	}
	f, err := a.fr.next()
	if err != nil {
		if err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("stream ended without an exit frame: %w", err)
		}
		a.err = fmt.Errorf("guest attach: %w", err)
		return ExecFrame{}, a.err
	}
	if f.Type == FrameExit || f.Type == FrameError {
		a.ended = true
	}
	return f, nil
}

// Close drops the connection. If the command still runs, the guest kills its
// process group. Close is safe to call more than once, and is still needed
// after the exit frame.
func (a *Attached) Close() error {
	err := a.conn.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
