// Package image builds and keeps the guest image every microVM boots: the
// kernel (and the uncompressed vmlinux Firecracker needs), an initramfs with
// execlaw-guest as /init, and a read-only root filesystem. Files live in a
// content-addressed store under the data directory; a manifest per image
// names them with their versions, sizes and hashes.
package image

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Boot is what a VM boots: the files of one built guest image. All paths are read-only and shared by
// every VM.
type Boot struct {
	Kernel        string // compressed bzImage (QEMU)
	KernelELF     string // uncompressed vmlinux ELF (Firecracker)
	Initramfs     string // execlaw-guest as /init plus the modules it loads
	Rootfs        string // the read-only base root filesystem (ext4)
	KernelVersion string
}

// Check reports the first image file that is missing.
func (im Boot) Check(needELF bool) error {
	files := map[string]string{"kernel": im.Kernel, "initramfs": im.Initramfs, "rootfs": im.Rootfs}
	if needELF {
		files["vmlinux"] = im.KernelELF
	}
	for what, p := range files {
		if p == "" {
			return fmt.Errorf("the guest image has no %s; run `execlaw image build`", what)
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("guest image %s: %w; run `execlaw image build`", what, err)
		}
	}
	return nil
}

// Blob is a file in the store, named by its content.
type Blob struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Component is one part of an image. Recipe identifies the inputs it was made
// from: a build whose inputs have the same recipe reuses it.
type Component struct {
	Blob
	Recipe  string   `json:"recipe"`
	Version string   `json:"version,omitempty"`
	Source  string   `json:"source,omitempty"`
	Items   []string `json:"items,omitempty"` // packages, or modules
}

// Manifest describes one built image.
type Manifest struct {
	Name           string    `json:"name"`
	Profile        string    `json:"profile"`
	Distro         string    `json:"distro"`
	Arch           string    `json:"arch"`
	BuiltAt        time.Time `json:"builtAt"`
	ExecLawVersion string    `json:"execlawVersion"`
	// KernelSource is where the kernel came from: "built" (compiled from
	// Debian's kernel source with guest.config, no modules), "debian"
	// (linux-image-amd64), "file" (--kernel) or "deb" (--kernel-deb).
	KernelSource  string    `json:"kernelSource,omitempty"`
	Kernel        Component `json:"kernel"`
	KernelPackage Component `json:"kernelPackage,omitzero"` // the .deb the kernel and modules came from
	KernelConfig  Component `json:"kernelConfig,omitzero"`  // the .config a built kernel was built with
	Vmlinux       Component `json:"vmlinux"`
	Initramfs     Component `json:"initramfs"`
	Rootfs        Component `json:"rootfs"`
	// Agents are the agent CLIs installed in the root filesystem, "name=version".
	Agents []string `json:"agents,omitempty"`
}

// AgentNames lists the agent CLIs the image carries, without versions.
func (m Manifest) AgentNames() []string {
	names := make([]string, 0, len(m.Agents))
	for _, a := range m.Agents {
		name, _, _ := strings.Cut(a, "=")
		names = append(names, name)
	}
	return names
}

// Components lists the manifest's parts by name.
func (m Manifest) Components() map[string]Component {
	c := map[string]Component{"kernel": m.Kernel, "vmlinux": m.Vmlinux, "initramfs": m.Initramfs, "rootfs": m.Rootfs}
	if m.KernelPackage.SHA256 != "" {
		c["kernelPackage"] = m.KernelPackage
	}
	if m.KernelConfig.SHA256 != "" {
		c["kernelConfig"] = m.KernelConfig
	}
	return c
}

// Store is the image directory: DATA/images/blobs/<sha256> and DATA/images/<name>.json.
type Store struct {
	Dir string
}

// NewStore opens (creating) the store under dataDir.
func NewStore(dataDir string) (*Store, error) {
	s := &Store{Dir: filepath.Join(dataDir, "images")}
	if err := os.MkdirAll(filepath.Join(s.Dir, "blobs"), 0o755); err != nil {
		return nil, err
	}
	return s, nil
}

// Path is where a blob lives.
func (s *Store) Path(b Blob) string { return filepath.Join(s.Dir, "blobs", b.SHA256) }

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// PutFile moves (or, across file systems, copies) a file into the store and
// returns its blob. The blob is read-only: every VM shares it.
func (s *Store) PutFile(src string) (Blob, error) {
	f, err := os.Open(src)
	if err != nil {
		return Blob{}, err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	f.Close()
	if err != nil {
		return Blob{}, err
	}
	b := Blob{SHA256: hex.EncodeToString(h.Sum(nil)), Size: n}
	dst := s.Path(b)
	if _, err := os.Stat(dst); err == nil {
		os.Remove(src)
		return b, nil
	}
	if err := os.Rename(src, dst); err != nil {
		if err := copyFile(src, dst+".tmp"); err != nil {
			return Blob{}, err
		}
		if err := os.Rename(dst+".tmp", dst); err != nil {
			return Blob{}, err
		}
		os.Remove(src)
	}
	return b, os.Chmod(dst, 0o444)
}

// PutBytes stores data as a blob.
func (s *Store) PutBytes(data []byte) (Blob, error) {
	tmp, err := os.CreateTemp(filepath.Join(s.Dir, "blobs"), ".put-*")
	if err != nil {
		return Blob{}, err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return Blob{}, err
	}
	return s.PutFile(tmp.Name())
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Save writes a manifest atomically.
func (s *Store) Save(m Manifest) error {
	if !validName.MatchString(m.Name) {
		return fmt.Errorf("image name %q is not valid", m.Name)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.Dir, "."+m.Name+".json.tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(s.Dir, m.Name+".json"))
}

// ErrNoImage is returned when no image of that name has been built.
var ErrNoImage = errors.New("no such image")

// Load reads one manifest.
func (s *Store) Load(name string) (Manifest, error) {
	if !validName.MatchString(name) {
		return Manifest{}, fmt.Errorf("image name %q is not valid", name)
	}
	b, err := os.ReadFile(filepath.Join(s.Dir, name+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return Manifest{}, fmt.Errorf("image %q: %w; run `execlaw image build`", name, ErrNoImage)
	}
	if err != nil {
		return Manifest{}, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("image %q: manifest: %w", name, err)
	}
	return m, nil
}

// List returns every manifest, by name.
func (s *Store) List() ([]Manifest, error) {
	paths, err := filepath.Glob(filepath.Join(s.Dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []Manifest
	for _, p := range paths {
		m, err := s.Load(strings.TrimSuffix(filepath.Base(p), ".json"))
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Verify rehashes every file of an image and reports each one that is missing
// or has changed.
func (s *Store) Verify(m Manifest) []error {
	var errs []error
	names := make([]string, 0, 5)
	comps := m.Components()
	for n := range comps {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		c := comps[name]
		f, err := os.Open(s.Path(c.Blob))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		case n != c.Size:
			errs = append(errs, fmt.Errorf("%s: size %d, manifest says %d", name, n, c.Size))
		case hex.EncodeToString(h.Sum(nil)) != c.SHA256:
			errs = append(errs, fmt.Errorf("%s: content does not match its sha256", name))
		}
	}
	return errs
}

// present reports whether a component's blob exists with the right size (a
// cheap check; Verify rehashes).
func (s *Store) present(c Component) bool {
	if c.SHA256 == "" {
		return false
	}
	fi, err := os.Stat(s.Path(c.Blob))
	return err == nil && fi.Size() == c.Size
}

// VMImage returns the paths a VM driver boots for image name.
func (s *Store) VMImage(name string) (Boot, Manifest, error) {
	m, err := s.Load(name)
	if err != nil {
		return Boot{}, Manifest{}, err
	}
	for n, c := range m.Components() {
		if !s.present(c) {
			return Boot{}, m, fmt.Errorf("image %q: %s file is missing; run `execlaw image build`", name, n)
		}
	}
	return Boot{
		Kernel: s.Path(m.Kernel.Blob), KernelELF: s.Path(m.Vmlinux.Blob),
		Initramfs: s.Path(m.Initramfs.Blob), Rootfs: s.Path(m.Rootfs.Blob),
		KernelVersion: m.Kernel.Version,
	}, m, nil
}

// Prune removes blobs no manifest refers to, and returns how many bytes it freed.
func (s *Store) Prune() (int64, error) {
	ms, err := s.List()
	if err != nil {
		return 0, err
	}
	used := map[string]bool{}
	for _, m := range ms {
		for _, c := range m.Components() {
			used[c.SHA256] = true
		}
	}
	entries, err := os.ReadDir(filepath.Join(s.Dir, "blobs"))
	if err != nil {
		return 0, err
	}
	var freed int64
	for _, e := range entries {
		if used[e.Name()] {
			continue
		}
		p := filepath.Join(s.Dir, "blobs", e.Name())
		if fi, err := os.Stat(p); err == nil {
			freed += fi.Size()
		}
		if err := os.Remove(p); err != nil {
			return freed, err
		}
	}
	return freed, nil
}
