package firecracker

import (
	"fmt"

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
