package guest

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// killGroup SIGKILLs a command: its process group, and every process
// descended from the group that left it. Programs move their children into
// sessions or groups of their own (Node's `detached`, which Claude Code's
// Bash tool uses; job-control shells), and a group kill alone would leave
// those running after the command is gone. The tree is stopped before
// anything is killed, so nothing in it can fork, or be reparented to init
// and lost from view, while it is walked.
//
// The walk reads /proc, so it is done only when /proc shows this process's
// own PID namespace; otherwise PIDs read there would name other processes.
func killGroup(pgid int) {
	if procIsOurs() {
		stopped := map[int]bool{}
		for range 8 {
			fresh := 0
			for _, pid := range descendantsOfGroup(pgid) {
				if !stopped[pid] {
					_ = syscall.Kill(pid, syscall.SIGSTOP)
					stopped[pid] = true
					fresh++
				}
			}
			if fresh == 0 {
				break
			}
		}
		for pid := range stopped {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// ESRCH only means the group is already gone; the caller still waits for
	// the leader either way.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// procIsOurs says whether /proc belongs to this process's PID namespace.
func procIsOurs() bool {
	self, err := os.Readlink("/proc/self")
	return err == nil && self == strconv.Itoa(os.Getpid())
}

// descendantsOfGroup returns the members of process group pgid and every
// process descended from one of them, never this process or init.
func descendantsOfGroup(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	parent := map[int]int{}
	in := map[int]bool{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, pgrp, ok := readStat(pid)
		if !ok {
			continue
		}
		parent[pid] = ppid
		if pgrp == pgid {
			in[pid] = true
		}
	}
	for grew := true; grew; {
		grew = false
		for pid, ppid := range parent {
			if !in[pid] && in[ppid] {
				in[pid] = true
				grew = true
			}
		}
	}
	delete(in, os.Getpid())
	delete(in, 1)
	out := make([]int, 0, len(in))
	for pid := range in {
		out = append(out, pid)
	}
	return out
}

// readStat returns a process's parent and process group from
// /proc/PID/stat. The command name (field 2) is in parentheses and may hold
// spaces and parentheses itself, so fields are counted from its last ")".
func readStat(pid int) (ppid, pgrp int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:]) // state ppid pgrp ...
	if len(f) < 3 {
		return 0, 0, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgrp, err2 := strconv.Atoi(f[2])
	return ppid, pgrp, err1 == nil && err2 == nil
}

// MountPrivateProc gives a guest that is init of a PID namespace of its own,
// inside a mount namespace of its own (the process driver's sandbox, which
// asks for it with --private-proc), a /proc of that PID namespace, so that
// what it reads there (process trees, counts) is its own. Mounts are made
// private first so nothing propagates to the host. It refuses unless this
// process is init of its PID namespace, which outside a namespace it is not.
func MountPrivateProc() error {
	if os.Getpid() != 1 {
		return errors.New("not init of a PID namespace")
	}
	if procIsOurs() {
		return nil
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	return nil
}
