package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Group is one VM's cgroup: a directory in each hierarchy.
type Group struct {
	m     *Manager
	name  string
	hiers []hier
}

// removeTimeout bounds Remove: killing what is left and waiting for the
// kernel to let the directories go.
const removeTimeout = 10 * time.Second

// Create makes the cgroup name (a session's VM) with limits l. Files that a
// controller missing here would hold are skipped, except the memory limit:
// without it Create fails.
func (m *Manager) Create(name string, l Limits) (*Group, error) {
	if !validName(name) {
		return nil, fmt.Errorf("cgroup: name %q: want letters, digits, -, _ and .", name)
	}
	g := m.Open(name)
	for i, h := range g.hiers {
		if err := os.Mkdir(h.dir, 0o755); err != nil {
			g.hiers = g.hiers[:i] // remove only what this call made
			g.Remove()
			return nil, fmt.Errorf("cgroup: %w", err)
		}
	}
	for _, s := range l.settings(m.version) {
		h, ok := g.hierOf(s.file)
		path := filepath.Join(h.dir, s.file)
		if ok {
			if _, err := os.Stat(path); err != nil {
				ok = false
			}
		}
		if !ok {
			if s.required {
				g.Remove()
				return nil, fmt.Errorf("cgroup: %s: no such file in the %s hierarchy", s.file, controller(s.file))
			}
			continue
		}
		if err := writeFile(path, s.value); err != nil && s.required {
			g.Remove()
			return nil, fmt.Errorf("cgroup: %w", err)
		}
	}
	return g, nil
}

// Open is the cgroup name as it is (or would be), without creating it: for
// a cgroup made by someone else (the jailer), or left by an earlier run.
func (m *Manager) Open(name string) *Group {
	g := &Group{m: m, name: name}
	for _, h := range m.hiers {
		g.hiers = append(g.hiers, hier{dir: filepath.Join(h.dir, name), ctrls: h.ctrls})
	}
	return g
}

// Name is the group's name.
func (g *Group) Name() string { return g.name }

// Dirs are the group's directories, one per hierarchy.
func (g *Group) Dirs() []string {
	out := make([]string, len(g.hiers))
	for i, h := range g.hiers {
		out[i] = h.dir
	}
	return out
}

func (g *Group) hierOf(file string) (hier, bool) {
	c := controller(file)
	for _, h := range g.hiers {
		if h.has(c) {
			return h, true
		}
	}
	return hier{}, false
}

// placeScript puts the shell itself into every cgroup named by its first
// arguments and then becomes the command that follows them: cgroup v1 has
// no way to fork a process straight into a cgroup, and this places the VMM
// before it runs a single instruction of its own, so everything it
// allocates is charged to its cgroup.
const placeScript = `n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done
exec "$@"`

// Prepare makes cmd start inside the group. Call the returned function once
// cmd.Start has returned, whatever it returned. On cgroup v2 the child is
// created in the cgroup (clone3 with CLONE_INTO_CGROUP:
// SysProcAttr.UseCgroupFD); on v1 cmd is rewritten to run through a shell
// that moves itself into the group and then execs the command (see
// placeScript), so cmd's Path and Args change.
func (g *Group) Prepare(cmd *exec.Cmd) (func(), error) {
	if g.m.version == V2 {
		fd, err := unix.Open(g.hiers[0].dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("cgroup: %w", err)
		}
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
		return func() { unix.Close(fd) }, nil
	}
	args := []string{"/bin/sh", "-c", placeScript, "execlaw-cgroup", strconv.Itoa(len(g.hiers))}
	for _, h := range g.hiers {
		args = append(args, filepath.Join(h.dir, "cgroup.procs"))
	}
	args = append(args, cmd.Path)
	args = append(args, cmd.Args[1:]...)
	cmd.Path, cmd.Args = "/bin/sh", args
	return func() {}, nil
}

// Add moves process pid into the group.
func (g *Group) Add(pid int) error {
	for _, h := range g.hiers {
		if err := writeFile(filepath.Join(h.dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

// PIDs are the processes in the group, in any of its hierarchies. A group
// that does not exist has none.
func (g *Group) PIDs() ([]int, error) {
	var all []int
	for _, h := range g.hiers {
		pids, err := readPids(filepath.Join(h.dir, "cgroup.procs"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // not in this hierarchy (the jailer makes only those it writes to)
		}
		if err != nil {
			return nil, err
		}
		for _, p := range pids {
			if !slices.Contains(all, p) {
				all = append(all, p)
			}
		}
	}
	return all, nil
}

func (g *Group) memoryDir() (string, error) {
	h, ok := g.hierOf("memory.x")
	if !ok {
		return "", errors.New("cgroup: no memory hierarchy")
	}
	return h.dir, nil
}

// OOMKills is how many times the kernel's OOM killer has killed a process
// of the group because the group hit its memory limit (v2 memory.events,
// v1 memory.oom_control: oom_kill).
func (g *Group) OOMKills() (uint64, error) {
	dir, err := g.memoryDir()
	if err != nil {
		return 0, err
	}
	if g.m.version == V2 {
		return readKey(filepath.Join(dir, "memory.events"), "oom_kill")
	}
	return readKey(filepath.Join(dir, "memory.oom_control"), "oom_kill")
}

func (g *Group) memoryFile() string {
	if g.m.version == V2 {
		return "memory.max"
	}
	return "memory.limit_in_bytes"
}

// MemoryLimit is the group's memory limit in bytes.
func (g *Group) MemoryLimit() (int64, error) {
	dir, err := g.memoryDir()
	if err != nil {
		return 0, err
	}
	b, err := os.ReadFile(filepath.Join(dir, g.memoryFile()))
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(trimNL(b)), 10, 64)
}

// SetMemoryLimit changes the group's memory limit.
func (g *Group) SetMemoryLimit(bytes int64) error {
	dir, err := g.memoryDir()
	if err != nil {
		return err
	}
	v := strconv.FormatInt(bytes, 10)
	memsw := filepath.Join(dir, "memory.memsw.limit_in_bytes")
	if g.m.version == V1 {
		if _, err := os.Stat(memsw); err == nil {
			// memsw may never be below the memory limit: raise it first,
			// or lower it after.
			old, _ := g.MemoryLimit()
			if bytes > old {
				if err := writeFile(memsw, v); err != nil {
					return err
				}
				return writeFile(filepath.Join(dir, g.memoryFile()), v)
			}
			if err := writeFile(filepath.Join(dir, g.memoryFile()), v); err != nil {
				return err
			}
			return writeFile(memsw, v)
		}
	}
	return writeFile(filepath.Join(dir, g.memoryFile()), v)
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// Remove kills whatever is still in the group and removes its directories.
// Removing a group that does not exist is not an error.
func (g *Group) Remove() error {
	deadline := time.Now().Add(removeTimeout)
	for {
		g.kill(deadline)
		err := g.rmdirs()
		if err == nil || !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return err
		}
		// A killed process leaves its cgroup as it exits, a moment after
		// it is reaped in some kernels: try again shortly.
		time.Sleep(5 * time.Millisecond)
	}
}

func (g *Group) rmdirs() error {
	var errs []error
	for _, h := range g.hiers {
		if err := os.Remove(h.dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("cgroup: %w", err))
		}
	}
	return errors.Join(errs...)
}

// kill SIGKILLs every process of the group and waits, until deadline, for
// them to be gone. A process that is not this server's child (a VMM an
// earlier run left) is waited for through a pidfd.
func (g *Group) kill(deadline time.Time) {
	if len(g.hiers) == 0 {
		return
	}
	if g.m.version == V2 {
		// cgroup.kill (Linux 5.14) kills the group atomically, forks
		// included; without it the loop below does.
		_ = writeFile(filepath.Join(g.hiers[0].dir, "cgroup.kill"), "1")
	}
	for range 10 {
		pids, _ := g.PIDs()
		if len(pids) == 0 {
			return
		}
		for _, p := range pids {
			fd, err := unix.PidfdOpen(p, 0)
			if err != nil {
				continue // gone already
			}
			_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			wait := max(time.Until(deadline), 0)
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			for {
				_, err := unix.Poll(fds, int(wait.Milliseconds()))
				if !errors.Is(err, unix.EINTR) {
					break
				}
			}
			unix.Close(fd)
		}
	}
}

// MemoryUsage is the memory the group uses now, in bytes.
func (g *Group) MemoryUsage() (int64, error) {
	dir, err := g.memoryDir()
	if err != nil {
		return 0, err
	}
	file := "memory.usage_in_bytes"
	if g.m.version == V2 {
		file = "memory.current"
	}
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(trimNL(b)), 10, 64)
}
