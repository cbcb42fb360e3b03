package image

import (
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// cpioWriter writes the "newc" cpio format the kernel unpacks an initramfs
// from. Entries get fixed owners and times, so the same inputs always give the
// same bytes, and the same content hash.
type cpioWriter struct {
	w     io.Writer
	ino   uint32
	n     int64
	dirs  map[string]bool
	err   error
	files []cpioFile
}

type cpioFile struct {
	name string
	mode uint32 // including type bits
	data []byte
}

const (
	modeDir = 0o040000
	modeReg = 0o100000
)

func newCPIO(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w, dirs: map[string]bool{".": true, "/": true, "": true}}
}

// addFile queues a regular file, and the directories above it.
func (c *cpioWriter) addFile(name string, perm uint32, data []byte) {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	c.addDir(path.Dir(name))
	c.files = append(c.files, cpioFile{name: name, mode: modeReg | perm, data: data})
}

// addDir queues a directory and its parents.
func (c *cpioWriter) addDir(name string) {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if c.dirs[name] {
		return
	}
	c.addDir(path.Dir(name))
	c.dirs[name] = true
	c.files = append(c.files, cpioFile{name: name, mode: modeDir | 0o755})
}

// close writes every queued entry, sorted so parents come first, and the trailer.
func (c *cpioWriter) close() error {
	sort.SliceStable(c.files, func(i, j int) bool { return c.files[i].name < c.files[j].name })
	for _, f := range c.files {
		c.entry(f.name, f.mode, f.data)
	}
	c.entry("TRAILER!!!", 0, nil)
	// The kernel reads the archive in 512-byte blocks.
	if pad := (512 - c.n%512) % 512; pad > 0 {
		c.write(make([]byte, pad))
	}
	return c.err
}

func (c *cpioWriter) entry(name string, mode uint32, data []byte) {
	c.ino++
	nlink := 1
	if mode&modeDir != 0 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad4()
	c.write(data)
	c.pad4()
}

func (c *cpioWriter) pad4() {
	if pad := (4 - c.n%4) % 4; pad > 0 {
		c.write(make([]byte, pad))
	}
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}
