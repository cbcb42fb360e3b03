package testutil

import (
	"bytes"
	"errors"
	"io"
	"os"
	"syscall"
)

// FileContains reports whether the file at path holds needle anywhere. It
// reads only the file's data extents (SEEK_DATA/SEEK_HOLE), a chunk at a
// time, so scanning a mostly empty sparse disk image of many GiB is quick
// and needs little memory.
func FileContains(path string, needle []byte) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	const chunk = 4 << 20
	buf := make([]byte, chunk+len(needle))
	var off int64
	for {
		start, err := f.Seek(off, 3 /* SEEK_DATA */)
		if errors.Is(err, syscall.ENXIO) {
			return false, nil // no data past off
		}
		if err != nil {
			return false, err
		}
		end, err := f.Seek(start, 4 /* SEEK_HOLE */)
		if err != nil {
			return false, err
		}
		// Back up a little so a needle across the extent's start is seen.
		pos := max(start-int64(len(needle)), 0)
		for pos < end {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), end-pos+int64(len(needle)))], pos)
			if bytes.Contains(buf[:n], needle) {
				return true, nil
			}
			if err != nil && err != io.EOF {
				return false, err
			}
			if n == 0 {
				break
			}
			pos += chunk
		}
		off = end
	}
}
