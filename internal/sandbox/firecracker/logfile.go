package firecracker

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/execlaw/execlaw/internal/sandbox"
)

// maxLogBytes caps firecracker.log. The VMM's stdout carries the guest's
// serial console, which the guest controls: it must not fill the host's disk.
const maxLogBytes = 1 << 20

// Bounds of the log excerpt carried in errors.
const (
	tailBytes = 4 << 10
	tailLines = 20
)

// withTail appends the end of the log at path to err, when there is one.
func withTail(err error, path string) error {
	if t := sandbox.LogTail(path, tailBytes, tailLines); t != "" {
		return fmt.Errorf("%w; firecracker log (last lines):\n%s", err, t)
	}
	return err
}

// keptLogBytes is how much of a long log trimLog keeps.
const keptLogBytes = 64 << 10

// trimLog bounds a log that successive runs of one sandbox append to (a
// pause and its restore, a boot afresh on the same disk), each run capped
// at maxLogBytes: past half that, only its last keptLogBytes stay.
func trimLog(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() <= maxLogBytes/2 {
		return err
	}
	tail := make([]byte, keptLogBytes)
	n, err := f.ReadAt(tail, fi.Size()-keptLogBytes)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	tmp := path + ".tmp"
	out := fmt.Sprintf("[execlaw: %d earlier bytes of this log dropped]\n%s", fi.Size()-int64(n), tail[:n])
	if err := os.WriteFile(tmp, []byte(out), 0o600); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
