package network

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// netnsDir is where named network namespaces live. It is the directory
// iproute2 uses, so `ip netns list` / `ip netns exec` see ours and an operator
// can inspect a session by hand.
const netnsDir = "/run/netns"

var (
	netnsDirMu    sync.Mutex
	netnsDirReady bool
)

// ensureNetnsDir prepares netnsDir the way `ip netns add` does: the directory
// must be a mount point with shared propagation, so a namespace bind-mounted
// into it later is also visible from mount namespaces that were cloned from
// ours (a VMM started under systemd's PrivateTmp, for example) and an unmount
// here propagates there, letting the namespace actually die.
func ensureNetnsDir() error {
	netnsDirMu.Lock()
	defer netnsDirMu.Unlock()
	if netnsDirReady {
		return nil
	}
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet: bind it onto itself, then retry.
		if err = unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("network: bind-mounting %s: %w", netnsDir, err)
		}
		err = unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("network: making %s shared: %w", netnsDir, err)
	}
	netnsDirReady = true
	return nil
}

// createNamedNS creates a new, empty network namespace and pins it by
// bind-mounting it onto netnsDir/name. It fails if the name is taken, so two
// sessions can never share a namespace. On error nothing is left behind.
func createNamedNS(name string) (path string, err error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return "", fmt.Errorf("network: bad namespace name %q", name)
	}
	if err := ensureNetnsDir(); err != nil {
		return "", err
	}
	path = filepath.Join(netnsDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return "", fmt.Errorf("network: creating namespace %s: %w", name, err)
	}
	f.Close()
	err = onNSThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		// thread-self, not self: only this thread moved into the new namespace.
		if err := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mounting namespace: %w", err)
		}
		return nil
	})
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("network: creating namespace %s: %w", name, err)
	}
	return path, nil
}

// removeNamedNS unpins a namespace created by createNamedNS. The kernel frees
// the namespace (and every interface still in it) once nothing else holds it:
// a VMM process that is still running inside keeps it alive until it exits.
// Removing a namespace that is already gone is not an error.
func removeNamedNS(path string) error {
	// MNT_DETACH: a concurrent open of the path (a probe, `ip netns exec`)
	// must not make teardown fail with EBUSY.
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("network: unmounting %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("network: %w", err)
	}
	return nil
}

// listNamedNS returns the names in netnsDir that start with prefix.
func listNamedNS(prefix string) ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// openNS opens a network namespace file (a /run/netns entry or a
// /proc/.../ns/net path) and returns its descriptor.
func openNS(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("network: opening namespace %s: %w", path, err)
	}
	return fd, nil
}

// inNS runs fn on an OS thread that has joined the namespace at path.
func inNS(path string, fn func() error) error {
	fd, err := openNS(path)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return inNSFd(fd, fn)
}

// inNSFd is inNS for an already open namespace descriptor.
func inNSFd(fd int, fn func() error) error {
	return onNSThread(func() error {
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("network: entering namespace: %w", err)
		}
		return fn()
	})
}

// onNSThread runs body on a fresh goroutine locked to its OS thread; body may
// move that thread into another network namespace. Afterwards the thread is
// put back into the namespace it started in and only then unlocked, so no
// other goroutine ever runs (or opens a socket) in a session's namespace by
// accident.
//
// Why a separate goroutine rather than the caller's: if restoring fails the
// thread is poisoned. Unlocking would hand it to the scheduler; exiting the
// locked goroutine would make the runtime kill the thread, which SIGKILLs any
// child that body started with Pdeathsig (the VMM). Parking this helper
// goroutine forever leaks one thread but keeps both guarantees, and the
// caller still gets an error back.
//
// A panic in body is carried over and re-raised in the caller's goroutine, so
// it can be recovered there as if body had run inline.
func onNSThread(body func() error) error {
	type outcome struct {
		err      error
		panicked bool
		panicVal any
		stack    []byte
	}
	ch := make(chan outcome, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- outcome{err: fmt.Errorf("network: opening current namespace: %w", err)}
			return
		}
		var o outcome
		func() {
			defer func() {
				if r := recover(); r != nil {
					o.panicked, o.panicVal, o.stack = true, r, debug.Stack()
				}
			}()
			o.err = body()
		}()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			o.err = errors.Join(o.err, fmt.Errorf("network: restoring thread namespace (thread parked): %w", err))
			ch <- o
			select {} // see above: never unlock, never exit
		}
		unix.Close(orig)
		runtime.UnlockOSThread()
		ch <- o
	}()
	o := <-ch
	if o.panicked {
		panic(fmt.Sprintf("%v\n[panic in network namespace thread]\n%s", o.panicVal, o.stack))
	}
	return o.err
}

// writeSysctl writes a /proc/sys value. Entries under /proc/sys/net belong to
// the network namespace of the thread that opens them, so call it inside
// inNS/onNSThread to target a particular namespace.
func writeSysctl(name, value string) error {
	p := "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("network: sysctl %s=%s: %w", name, value, err)
	}
	return nil
}

// readSysctl reads a /proc/sys value; see writeSysctl about namespaces.
func readSysctl(name string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
	if err != nil {
		return "", fmt.Errorf("network: sysctl %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}
