package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// lockDataDir makes this process the one server of dataDir: a second one
// would sweep the first one's sandboxes, cgroups and network as leftovers.
// The lock is a flock on DATA_DIR/serve.lock, released by the kernel when
// the process exits however it exits; the file names the holder's pid.
func lockDataDir(dataDir string) (release func(), err error) {
	path := filepath.Join(dataDir, "serve.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock the data directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder := strings.TrimSpace(string(b))
			if holder == "" {
				holder = "unknown"
			}
			return nil, fmt.Errorf("another execlaw serve (pid %s) is using the data directory %s; stop it, or give this one another --data-dir", holder, dataDir)
		}
		return nil, fmt.Errorf("lock the data directory: %w", err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { f.Close() }, nil
}
