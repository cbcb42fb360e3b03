package image

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"strings"
)

// Paths inside the initramfs that the guest init relies on.
const (
	InitPath        = "/init"
	ModulesDir      = "/lib/modules"
	ModuleLoadOrder = "/lib/modules/load-order"
)

// BuildInitramfs makes the initramfs: the static guest binary as /init, and
// the kernel modules it loads, in dependency order (listed in
// ModuleLoadOrder). It returns the archive and the module names. Without
// modules (a kernel with everything built in) there is no ModuleLoadOrder,
// which tells the guest init there is nothing to load. With compress the
// archive is gzip-compressed; without, the kernel need not inflate it at
// boot, which under TCG takes longer than reading the larger file.
func BuildInitramfs(guestBinary, modulesDir string, compress bool) ([]byte, []string, error) {
	guest, err := os.ReadFile(guestBinary)
	if err != nil {
		return nil, nil, err
	}
	if err := checkStatic(guest); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", guestBinary, err)
	}
	var mods []module
	if modulesDir != "" {
		var missing []string
		mods, missing, err = resolveModules(modulesDir, GuestModules)
		if err != nil {
			return nil, nil, err
		}
		_ = missing // built into the kernel, or not needed by it
	}

	var buf bytes.Buffer
	var w io.Writer = &buf
	var gz *gzip.Writer
	if compress {
		gz, _ = gzip.NewWriterLevel(&buf, gzip.BestCompression)
		w = gz
	}
	c := newCPIO(w)
	c.addFile(InitPath, 0o755, guest)
	var order, names []string
	for _, m := range mods {
		data, err := os.ReadFile(m.path)
		if err != nil {
			return nil, nil, err
		}
		p := ModulesDir + "/" + m.name + ".ko"
		c.addFile(p, 0o644, data)
		order = append(order, p)
		names = append(names, m.name)
	}
	if len(order) > 0 {
		c.addFile(ModuleLoadOrder, 0o644, []byte(strings.Join(order, "\n")+"\n"))
	}
	for _, d := range []string{"/dev", "/proc", "/sys", "/run", "/tmp", "/newroot"} {
		c.addDir(d)
	}
	if err := c.close(); err != nil {
		return nil, nil, err
	}
	if gz != nil {
		if err := gz.Close(); err != nil {
			return nil, nil, err
		}
	}
	return buf.Bytes(), names, nil
}

// checkStatic refuses a guest binary that needs a dynamic loader: the
// initramfs has none.
func checkStatic(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("is dynamically linked; build it with CGO_ENABLED=0")
		}
	}
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("is built for %v, want x86-64", f.Machine)
	}
	return nil
}
