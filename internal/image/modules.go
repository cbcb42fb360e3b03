package image

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
)

// GuestModules are the kernel modules the guest init loads, by name: what a
// microVM needs to see its disks, NIC, control channel and entropy source, and
// to mount its root overlay. Their dependencies are added automatically.
// Modules a kernel has built in are simply not found and skipped.
var GuestModules = []string{
	"virtio_mmio", "virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "virtio-rng",
	"crc32c_generic", "ext4", "overlay", "vsock", "vmw_vsock_virtio_transport",
}

// module is one kernel module file.
type module struct {
	name    string // as the kernel knows it, with '-' and '_' folded to '_'
	path    string // on disk
	depends []string
}

// normModName folds the two spellings the kernel treats as the same name.
func normModName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// indexModules finds every .ko below dir.
func indexModules(dir string) (map[string]string, error) {
	idx := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			idx[normModName(strings.TrimSuffix(d.Name(), ".ko"))] = p
		}
		return nil
	})
	return idx, err
}

// modinfoDepends reads the "depends=" entry of a module's .modinfo section:
// the same data depmod uses, read without depmod.
func modinfoDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("%s: no .modinfo section", filepath.Base(path))
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				deps = append(deps, normModName(d))
			}
			return deps, nil
		}
	}
	return nil, nil
}

// resolveModules returns the wanted modules and everything they depend on, in
// an order where each module comes after its dependencies. Wanted modules
// that do not exist (built into the kernel, or not built at all) are
// reported in missing.
func resolveModules(dir string, wanted []string) (ordered []module, missing []string, err error) {
	idx, err := indexModules(dir)
	if err != nil {
		return nil, nil, err
	}
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain, name), " -> "))
		}
		p, ok := idx[name]
		if !ok {
			return fmt.Errorf("module %s (needed by %s) not found", name, strings.Join(chain, " -> "))
		}
		state[name] = 1
		deps, err := modinfoDepends(p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		ordered = append(ordered, module{name: name, path: p, depends: deps})
		return nil
	}
	for _, w := range wanted {
		n := normModName(w)
		if _, ok := idx[n]; !ok {
			missing = append(missing, w)
			continue
		}
		if err := visit(n, nil); err != nil {
			return nil, nil, err
		}
	}
	return ordered, missing, nil
}
