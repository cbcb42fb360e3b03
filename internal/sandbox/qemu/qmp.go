package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/execlaw/execlaw/internal/sandbox"
)

// qmpSockName is QEMU's machine protocol socket, in the sandbox directory.
const qmpSockName = "qmp.sock"

// maxQMPLine bounds one line QEMU sends. QEMU runs the guest and could be
// subverted by it: what it says is read like anything from the guest.
const maxQMPLine = 1 << 20

// qmp is a client of QEMU's machine protocol: just what pausing and
// restoring a VM need (stop, cont, getfd, migrate, migrate-incoming,
// query-migrate, quit). Calls take the deadline of the context qmp was
// dialled with, and one at a time.
type qmp struct {
	conn *net.UnixConn
	r    *bufio.Reader
}

// dialQMP connects and leaves the protocol's capability negotiation done.
func dialQMP(ctx context.Context, socks *sandbox.SocketDir) (*qmp, error) {
	c, err := socks.Dial(ctx, qmpSockName)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, errors.New("qmp: not a Unix socket")
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = uc.SetDeadline(dl)
	}
	q := &qmp{conn: uc, r: bufio.NewReaderSize(uc, 64<<10)}
	if _, err := q.line(); err != nil { // the greeting
		q.close()
		return nil, err
	}
	if _, err := q.execute("qmp_capabilities", nil, nil); err != nil {
		q.close()
		return nil, err
	}
	return q, nil
}

func (q *qmp) close() { q.conn.Close() }

// line reads one JSON object QEMU sent.
func (q *qmp) line() (map[string]json.RawMessage, error) {
	var b []byte
	for {
		part, more, err := q.r.ReadLine()
		if err != nil {
			return nil, fmt.Errorf("qmp: %w", err)
		}
		b = append(b, part...)
		if len(b) > maxQMPLine {
			return nil, errors.New("qmp: QEMU sent an over-long line")
		}
		if !more {
			break
		}
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("qmp: QEMU sent something other than a JSON object: %w", err)
	}
	return m, nil
}

// qmpError is a command QEMU refused.
type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *qmpError) Error() string { return "qmp: " + e.Class + ": " + e.Desc }

// execute runs a command and returns its answer. fd, when set, travels with
// the command (SCM_RIGHTS), as getfd expects; asynchronous events arriving
// meanwhile are passed over.
func (q *qmp) execute(cmd string, args any, fd *os.File) (json.RawMessage, error) {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	b = append(b, '\n')
	if fd != nil {
		_, _, err = q.conn.WriteMsgUnix(b, syscall.UnixRights(int(fd.Fd())), nil)
	} else {
		_, err = q.conn.Write(b)
	}
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		m, err := q.line()
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		if ret, ok := m["return"]; ok {
			return ret, nil
		}
		if raw, ok := m["error"]; ok {
			e := &qmpError{}
			_ = json.Unmarshal(raw, e)
			return nil, e
		}
		// An event ({"event": ...}): not an answer.
	}
}

// migrationStatus is what query-migrate says of a migration.
type migrationStatus struct {
	Status      string `json:"status"`
	ErrorDesc   string `json:"error-desc"`
	TotalTimeMs int64  `json:"total-time"`
}

// waitMigration polls until the migration in progress (outgoing or
// incoming) has completed, failed, or ctx ends.
func (q *qmp) waitMigration(ctx context.Context) (migrationStatus, error) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		raw, err := q.execute("query-migrate", nil, nil)
		if err != nil {
			return migrationStatus{}, err
		}
		var st migrationStatus
		if err := json.Unmarshal(raw, &st); err != nil {
			return st, fmt.Errorf("qmp query-migrate: %w", err)
		}
		switch st.Status {
		case "completed":
			return st, nil
		case "failed", "cancelled":
			return st, fmt.Errorf("the migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("the migration did not finish (%s): %w", st.Status, ctx.Err())
		case <-tick.C:
		}
	}
}

// waitEvent reads what QEMU sends until an event of this name whose data
// match accepts, or ctx ends.
func (q *qmp) waitEvent(ctx context.Context, name string, match func(json.RawMessage) bool) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = q.conn.SetReadDeadline(dl)
		defer q.conn.SetReadDeadline(time.Time{})
	}
	for {
		m, err := q.line()
		if err != nil {
			return err
		}
		var ev string
		if json.Unmarshal(m["event"], &ev) == nil && ev == name && match(m["data"]) {
			return nil
		}
	}
}
