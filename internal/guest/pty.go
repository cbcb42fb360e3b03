package guest

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// An attached exec with TTY set runs its command on a pseudo-terminal: a
// shell in a terminal of its own, its own session (setsid) with the
// terminal as its controlling one, so job control, line editing, Ctrl+C
// and full-screen programs work. The command's stdin, stdout and stderr are
// the terminal; the host writes to it with stdin frames, reads one stdout
// stream, and changes its size with resize frames (the kernel then sends
// the foreground job SIGWINCH). Closing the session kills the whole tree,
// as for any exec.

// WindowSize is a terminal's size in character cells.
type WindowSize struct {
	Cols int `json:"cols"`
	Rows int `json:"rows"`
}

// Bounds of a terminal's size.
const (
	MaxTTYCols = 1000
	MaxTTYRows = 1000
)

// Valid reports whether the size is within 1..MaxTTYCols by 1..MaxTTYRows.
func (w WindowSize) Valid() bool {
	return w.Cols >= 1 && w.Cols <= MaxTTYCols && w.Rows >= 1 && w.Rows <= MaxTTYRows
}

func invalidSize(w WindowSize) error {
	return &Error{Status: http.StatusBadRequest, Code: CodeInvalid,
		Message: fmt.Sprintf("terminal size %dx%d out of range (1-%d columns, 1-%d rows)", w.Cols, w.Rows, MaxTTYCols, MaxTTYRows)}
}

// openPTY opens a new pseudo-terminal of the given size: the master side,
// non-blocking so that reads and writes go through the poller and honour
// deadlines, and the slave side for the command.
func openPTY(size WindowSize) (master, slave *os.File, err error) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	fail := func(what string, err error) (*os.File, *os.File, error) {
		unix.Close(mfd)
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		return fail("unlock the pseudo-terminal", err)
	}
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	if err != nil {
		return fail("number the pseudo-terminal", err)
	}
	if err := unix.IoctlSetWinsize(mfd, unix.TIOCSWINSZ, winsize(size)); err != nil {
		return fail("size the pseudo-terminal", err)
	}
	name := "/dev/pts/" + strconv.Itoa(n)
	sfd, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("open "+name, err)
	}
	return os.NewFile(uintptr(mfd), "/dev/ptmx"), os.NewFile(uintptr(sfd), name), nil
}

func winsize(w WindowSize) *unix.Winsize {
	return &unix.Winsize{Col: uint16(w.Cols), Row: uint16(w.Rows)}
}

// spawnPTY starts cmd on a new pseudo-terminal, as the leader of a session
// of its own (so its process group is its pid, which killGroup ends).
func (s *Server) spawnPTY(cmd *exec.Cmd, size WindowSize) (*proc, error) {
	if !size.Valid() {
		return nil, invalidSize(size)
	}
	master, slave, err := openPTY(size)
	if err != nil {
		return nil, err
	}
	// The host's writes get a descriptor of their own: the stdin writer
	// closes its file when it is done, while output is still read.
	var wfd int
	rc, err := master.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) { wfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
		if cerr != nil {
			err = cerr
		}
	}
	if err != nil {
		master.Close()
		slave.Close()
		return nil, fmt.Errorf("duplicate the pseudo-terminal: %w", err)
	}
	inW := os.NewFile(uintptr(wfd), "/dev/ptmx")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	// Setsid makes it a process group leader too (Setpgid would then fail);
	// Ctty is the child's descriptor of the terminal (its stdin).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}

	start := time.Now()
	err = s.startCmd(cmd)
	slave.Close()
	if err != nil {
		master.Close()
		inW.Close()
		return nil, err
	}
	p := &proc{s: s, cmd: cmd, pgid: cmd.Process.Pid, start: start, outR: master, inW: inW, tty: master, exited: make(chan struct{})}
	go p.wait()
	return p, nil
}

// resize sets the terminal's size; the kernel tells its foreground job.
func (p *proc) resize(size WindowSize) error {
	if p.tty == nil {
		return fmt.Errorf("resize frame from host for a command without a terminal")
	}
	if !size.Valid() {
		return fmt.Errorf("resize frame from host: %w", invalidSize(size))
	}
	rc, err := p.tty.SyscallConn()
	if err != nil {
		return nil // the terminal is closed: the command is over
	}
	_ = rc.Control(func(fd uintptr) { err = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, winsize(size)) })
	return nil
}
