// Package vm holds what the microVM drivers (qemu, firecracker) share: the
// per-session writable disk, host networking, and how a session's VM is
// described independently of the VMM that runs it. The guest image they boot
// is image.Boot.
package vm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// DefaultDiskMiB is the size of a session's writable disk when its spec
// names none. It is sparse: it
// takes only what the guest writes.
const DefaultDiskMiB = 8 << 10

// NewWritableDisk creates a session's writable disk at path: a sparse file
// with an empty ext4 filesystem the guest mounts as the upper layer of its
// root overlay. Creating it never copies the base image.
func NewWritableDisk(ctx context.Context, path string, sizeMiB int) error {
	if sizeMiB <= 0 {
		sizeMiB = DefaultDiskMiB
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(int64(sizeMiB) << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return err
	}
	// lazy_itable_init and no journal discard keep mkfs from writing the
	// whole file: the result stays sparse (a few MiB actually used).
	cmd := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-L", "execlaw-rw",
		"-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", "-m", "0", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(path)
		return fmt.Errorf("mkfs.ext4 %s: %v: %s", filepath.Base(path), err, out)
	}
	return nil
}

// DiskUsage is how many bytes a (sparse) file really occupies.
func DiskUsage(path string) (int64, error) {
	out, err := exec.Command("du", "-B1", "--", path).Output()
	if err != nil {
		return 0, err
	}
	var n int64
	_, err = fmt.Sscan(string(out), &n)
	return n, err
}

// MAC derives a stable, locally administered unicast MAC from a session id.
func MAC(sessionID string) string {
	h := uint32(2166136261)
	for i := 0; i < len(sessionID); i++ {
		h = (h ^ uint32(sessionID[i])) * 16777619
	}
	return "02:ec:" + hex2(byte(h>>24)) + ":" + hex2(byte(h>>16)) + ":" + hex2(byte(h>>8)) + ":" + hex2(byte(h))
}

func hex2(b byte) string {
	s := strconv.FormatUint(uint64(b), 16)
	if len(s) == 1 {
		return "0" + s
	}
	return s
}
