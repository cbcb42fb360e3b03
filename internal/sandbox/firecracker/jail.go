package firecracker

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// The jailer (Firecracker docs/jailer.md) chroots Firecracker into
// <chroot-base-dir>/<exec file name>/<id>/root, drops to --uid/--gid and
// execs it there, so every path given to the API is inside that root and
// every file the VM uses has to be put there first: "The user must create
// hard links for (or copy) any resources which will be provided to the VM via
// the API". The driver uses <session dir>/jail as the chroot base, so the
// jail goes away with the session, and it creates the root itself, before the
// jailer runs (the jailer leaves an existing directory as it is), so that no
// file has to be added once the VMM is running.
//
// Sharing the images: the base rootfs is hard-linked, never copied. Creating a
// session must not copy gigabytes, and a hard link is the same inode, so every
// jail sees the one read-only base. That also means its ownership and mode are
// shared: the driver never chowns a linked image and instead checks that the
// jail's uid/gid can read but not write it, so a compromised VMM cannot alter
// the base that other sessions boot from. A hard link needs the image and the
// session directory on one filesystem; when they are not, Start fails and
// says so rather than falling back to a copy. The kernel and initramfs are
// small; they are hard-linked too, and copied only across filesystems.

// jailerIDMax is the jailer's limit on --id.
const jailerIDMax = 64

// vmID turns a session id into a valid jailer/Firecracker --id (letters,
// digits and hyphens, at most 64, not starting with a hyphen so that it never
// reads as a flag). Ids that had to be changed get a hash suffix so that two
// sessions never map to the same id.
func vmID(sessionID string) string {
	b := []byte(sessionID)
	ok := len(b) > 0 && len(b) <= jailerIDMax && b[0] != '-'
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
			ok = false
		}
	}
	if ok {
		return string(b)
	}
	h := fnv.New32a()
	h.Write([]byte(sessionID))
	suffix := fmt.Sprintf("-%08x", h.Sum32())
	id := "vm-" + string(b)
	if len(id) > jailerIDMax-len(suffix) {
		id = id[:jailerIDMax-len(suffix)]
	}
	return id + suffix
}

// Names of the files inside the jail root.
const (
	jailKernel = "vmlinux"
	jailInitrd = "initrd"
	jailRootfs = "rootfs.ext4"
	jailRW     = "rw.ext4"
)

// prepareJail creates the jail root under base and puts the VM's files in
// it. rw is the session's writable disk, which is handed to the jail's user.
func (d *Driver) prepareJail(base, id, rw string) (root string, err error) {
	root = filepath.Join(base, filepath.Base(d.cfg.Binary), id, "root")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", fmt.Errorf("jail: %w", err)
	}
	uid, gid := d.cfg.JailerUID, d.cfg.JailerGID
	im := d.cfg.Image
	for _, f := range []struct {
		src, name string
		copyOK    bool
	}{
		{im.KernelELF, jailKernel, true},
		{im.Initramfs, jailInitrd, true},
		{im.Rootfs, jailRootfs, false},
	} {
		if err := checkShared(f.src, uid, gid); err != nil {
			return "", fmt.Errorf("jail: %w", err)
		}
		if err := linkInto(f.src, filepath.Join(root, f.name), f.copyOK); err != nil {
			return "", fmt.Errorf("jail: %w", err)
		}
	}
	// The writable disk belongs to this session alone, so handing its inode
	// to the jail's user is safe; Firecracker needs read and write access.
	if err := os.Chown(rw, uid, gid); err != nil {
		return "", fmt.Errorf("jail: %w", err)
	}
	if err := os.Link(rw, filepath.Join(root, jailRW)); err != nil {
		return "", fmt.Errorf("jail: %w", err)
	}
	return root, nil
}

// linkInto hard-links src to dst; across filesystems it copies when copyOK.
func linkInto(src, dst string, copyOK bool) error {
	err := os.Link(src, dst)
	if err == nil || !errors.Is(err, syscall.EXDEV) {
		return err
	}
	if !copyOK {
		return fmt.Errorf("%s is on another filesystem than the session directory: the base rootfs is shared by hard link and never copied, so keep the image and the data directory on one filesystem: %w", src, err)
	}
	return copyFile(src, dst)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o444)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// checkShared makes sure the jail's user can read a shared image file and
// cannot write it (judged by mode bits and ownership; ACLs are not consulted).
func checkShared(path string, uid, gid int) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	perm := fi.Mode().Perm()
	var r, w fs.FileMode
	switch {
	case int(st.Uid) == uid:
		r, w = 0o400, 0o200
	case int(st.Gid) == gid:
		r, w = 0o040, 0o020
	default:
		r, w = 0o004, 0o002
	}
	who := "uid " + strconv.Itoa(uid) + "/gid " + strconv.Itoa(gid)
	if perm&w != 0 {
		return fmt.Errorf("%s (mode %v) is writable by the jail's %s; shared images must be read-only to it", path, perm, who)
	}
	if perm&r == 0 {
		return fmt.Errorf("%s (mode %v) is not readable by the jail's %s", path, perm, who)
	}
	return nil
}

// jailerArgs is the jailer's command line, with cgroup its flags for the
// VM's cgroup. Nothing after "--" may name a host path: Firecracker sees
// only the jail.
func (d *Driver) jailerArgs(id, base string, cgroup []string) []string {
	args := []string{
		"--id", id,
		"--exec-file", d.cfg.Binary,
		"--uid", strconv.Itoa(d.cfg.JailerUID),
		"--gid", strconv.Itoa(d.cfg.JailerGID),
		"--chroot-base-dir", base,
	}
	args = append(args, d.cfg.JailerArgs...)
	args = append(args, cgroup...)
	// The jailer passes --id to Firecracker itself.
	return append(args, "--", "--api-sock", "/"+apiSockName)
}
