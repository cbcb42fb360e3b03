package image

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

// An image can also be written as an OCI image archive, for running sessions
// as Kubernetes pods: the same root filesystem with the static execlaw-guest
// at OCIGuestPath, started in its pod mode. The archive is an OCI image
// layout (oci-layout, index.json, blobs/sha256/...) that also carries
// Docker's manifest.json, as `docker save` writes since Docker 25, so
// `ctr images import`, `podman load` and `docker load` all take it.

const (
	// OCIGuestPath is where the layer puts execlaw-guest.
	OCIGuestPath = "/usr/local/bin/execlaw-guest"
	// OCIPodPort is the port execlaw-guest --pod listens on.
	OCIPodPort = 7600
	// OCIRepository is the image's name when OCIOptions.Ref does not give one.
	OCIRepository = "execlaw-guest"

	ociLayoutVersion  = "1.0.0"
	ociIndexType      = "application/vnd.oci.image.index.v1+json"
	ociManifestType   = "application/vnd.oci.image.manifest.v1+json"
	ociConfigType     = "application/vnd.oci.image.config.v1+json"
	ociLayerType      = "application/vnd.oci.image.layer.v1.tar+gzip"
	ociRefNameKey     = "org.opencontainers.image.ref.name"
	ociCreatedKey     = "org.opencontainers.image.created"
	containerdNameKey = "io.containerd.image.name"
	ociPath           = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// OCIOptions say how Store.WriteOCI writes an image.
type OCIOptions struct {
	Path string // the archive to write; replaced whole when it is complete
	// Ref names the image: "execlaw-guest:<short hash>" when empty, and a
	// reference without a tag gets the short hash as its tag. The short
	// hash is the start of the config's digest, which is what Docker shows
	// as the image ID.
	Ref         string
	GuestBinary string // the static execlaw-guest to put at OCIGuestPath
	Version     string // execlaw's version for the labels; default: the manifest's
	Out         io.Writer
}

// OCIImage describes an archive WriteOCI wrote.
type OCIImage struct {
	Path string
	Ref  string // as tagged, e.g. execlaw-guest:0123456789ab
	// Name is Ref fully qualified, as containerd (and so the kubelet)
	// names the imported image: docker.io/library/execlaw-guest:0123456789ab.
	Name           string
	ManifestDigest string // "sha256:..."
	ConfigDigest   string
	LayerDigest    string
	LayerSize      int64 // gzip'd
	TarSize        int64 // the layer uncompressed
	Entries        int   // files, directories and links in the layer
	Size           int64 // the archive
}

// CheckOCIPath reports, before any work is done, why an archive could not
// be written at path.
func CheckOCIPath(path string) error {
	if path == "" {
		return errors.New("OCI archive: no file name given")
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("OCI archive %s: is a directory; give a file name", path)
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("OCI archive %s: directory %s does not exist", path, dir)
	case err != nil:
		return fmt.Errorf("OCI archive %s: %w", path, err)
	case !fi.IsDir():
		return fmt.Errorf("OCI archive %s: %s is not a directory", path, dir)
	}
	// Permissions and read-only file systems show only when writing.
	f, err := os.CreateTemp(dir, ".execlaw-oci-check-*")
	if err != nil {
		return fmt.Errorf("OCI archive %s: cannot write in %s: %w", path, dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// CheckOCIRef reports why ref cannot name an image (see OCIOptions.Ref and
// ServerOCIOptions.Ref).
func CheckOCIRef(ref string) error {
	_, err := ociRef(ref, OCIRepository)
	return err
}

// ociName is a parsed OCIOptions.Ref.
type ociName struct {
	given string // the repository as given: execlaw-guest, ghcr.io/x/y
	repo  name.Repository
	tag   string // "" when none was given: the short hash will be
}

// ociRef parses a reference to tag the image with; an empty one is repo,
// to be tagged with the short hash.
func ociRef(ref, repo string) (ociName, error) {
	if ref == "" {
		ref = repo
	}
	if strings.Contains(ref, "@") {
		return ociName{}, fmt.Errorf("image reference %q: a digest cannot be given, only a name and a tag", ref)
	}
	n := ociName{given: ref}
	last := ref[strings.LastIndex(ref, "/")+1:]
	if i := strings.LastIndex(last, ":"); i >= 0 {
		n.tag = last[i+1:]
		n.given = ref[:len(ref)-len(last)+i]
		if err := checkOCITag(n.tag); err != nil {
			return ociName{}, fmt.Errorf("image reference %q: %w", ref, err)
		}
	}
	var err error
	if n.repo, err = name.NewRepository(n.given); err != nil {
		return ociName{}, fmt.Errorf("image reference %q: %w", ref, err)
	}
	return n, nil
}

// checkOCITag applies Docker's tag grammar, [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}.
func checkOCITag(tag string) error {
	if tag == "" || len(tag) > 128 {
		return errors.New("a tag has 1 to 128 characters")
	}
	for i, c := range tag {
		ok := c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || i > 0 && (c == '.' || c == '-')
		if !ok {
			return fmt.Errorf("tag %q: want letters, digits, _ . and - (not first)", tag)
		}
	}
	return nil
}

// containerdName is how containerd and the kubelet name repo:tag: with the
// registry and, on Docker Hub, the library/ namespace spelled out.
func containerdName(repo name.Repository, tag string) string {
	reg := repo.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + repo.RepositoryStr() + ":" + tag
}

// WriteOCI writes image m's root filesystem, with o.GuestBinary at
// OCIGuestPath, as an OCI image archive. It reads the stored ext4 image, so
// it works for any built image without root or a rebuild, and it writes the
// same archive for the same image, guest, version and name.
func (s *Store) WriteOCI(ctx context.Context, m Manifest, o OCIOptions) (OCIImage, error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Version == "" {
		o.Version = m.ExecLawVersion
	}
	if err := CheckOCIPath(o.Path); err != nil {
		return OCIImage{}, err
	}
	ref, err := ociRef(o.Ref, OCIRepository)
	if err != nil {
		return OCIImage{}, err
	}
	if !s.present(m.Rootfs) {
		return OCIImage{}, fmt.Errorf("image %q: its root filesystem is missing; run `execlaw image build`", m.Name)
	}
	guestSum, err := fileSHA256(o.GuestBinary)
	if err != nil {
		return OCIImage{}, fmt.Errorf("guest binary: %w", err)
	}
	rootfs, err := os.Open(s.Path(m.Rootfs.Blob))
	if err != nil {
		return OCIImage{}, err
	}
	defer rootfs.Close()
	fs, err := openExt4(rootfs)
	if err != nil {
		return OCIImage{}, fmt.Errorf("image %q: root filesystem: %w", m.Name, err)
	}

	// The documents' time is when mkfs made the root filesystem: the same
	// each time for the same image (the build time is not).
	spec := ociSpec{
		arch: m.Arch, created: fs.created, ref: ref,
		history: fmt.Sprintf("execlaw image build --oci (%s %s, execlaw %s)", m.Distro, m.Profile, o.Version),
		run: ociRunConfig{
			Entrypoint:   []string{OCIGuestPath, "--pod"},
			Env:          []string{ociPath},
			WorkingDir:   "/workspace",
			ExposedPorts: map[string]struct{}{fmt.Sprintf("%d/tcp", OCIPodPort): {}},
			Labels: map[string]string{
				"io.execlaw.version":          o.Version,
				"io.execlaw.image":            m.Name,
				"io.execlaw.profile":          m.Profile,
				"io.execlaw.distro":           m.Distro,
				"io.execlaw.kernel.sha256":    m.Kernel.SHA256,
				"io.execlaw.initramfs.sha256": m.Initramfs.SHA256,
				"io.execlaw.rootfs.sha256":    m.Rootfs.SHA256,
				"io.execlaw.guest.sha256":     guestSum,
				"io.execlaw.agents":           strings.Join(m.AgentNames(), ","),
			},
		},
	}
	start := time.Now()
	fmt.Fprintf(o.Out, "oci: layer from %s's root filesystem (%s ext4, sha256:%s) and %s\n",
		m.Name, mib(m.Rootfs.Size), short(m.Rootfs.SHA256), o.GuestBinary)
	img, err := writeOCIFile(o.Path, spec, func(out io.Writer) (layerStats, error) {
		layer, err := writeLayer(ctx, fs, out, o.GuestBinary, fs.created, func(l layerStats) {
			fmt.Fprintf(o.Out, "      oci: %d entries, %s of tar written, %s\n", l.Entries, mib(l.TarSize), time.Since(start).Round(time.Second))
		})
		if err != nil {
			return layerStats{}, err
		}
		skipped := ""
		if layer.Skipped > 0 {
			skipped = fmt.Sprintf(" (%d device nodes and sockets left out)", layer.Skipped)
		}
		fmt.Fprintf(o.Out, "oci: layer %d entries, %s of tar, %s gzip'd in %s%s\n",
			layer.Entries, mib(layer.TarSize), mib(layer.Size), time.Since(start).Round(100*time.Millisecond), skipped)
		return layer, nil
	})
	if err != nil {
		return OCIImage{}, err
	}
	fmt.Fprintf(o.Out, "oci: %s: %s (%s), %s in %s\n", o.Path, img.Ref, img.Name, mib(img.Size), time.Since(start).Round(100*time.Millisecond))
	return img, nil
}

// writeOCIFile writes, at path, the archive of the image spec describes,
// whose one layer makeLayer writes. The layer's size goes in its tar header
// in the archive before its bytes, so it is written to a file next to the
// archive first.
func writeOCIFile(path string, spec ociSpec, makeLayer func(io.Writer) (layerStats, error)) (OCIImage, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".execlaw-oci-layer-*")
	if err != nil {
		return OCIImage{}, err
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	layer, err := makeLayer(tmp)
	if err != nil {
		return OCIImage{}, fmt.Errorf("OCI layer: %w", err)
	}
	img, files, err := ociDocuments(spec, layer)
	if err != nil {
		return OCIImage{}, err
	}
	img.Path = path
	if img.Size, err = writeOCIArchive(path, spec.created, tmp, layer, files); err != nil {
		return OCIImage{}, err
	}
	return img, nil
}

// ociSpec is what an image's documents say besides its layer: the guest's
// and the server's differ only in it.
type ociSpec struct {
	arch    string // GOARCH's name; default amd64
	run     ociRunConfig
	history string // what made the layer, for `docker history`
	// created is the documents' time. It must not be the time of writing,
	// so that the same inputs give the same archive.
	created time.Time
	ref     ociName
}

// ociDocuments makes the archive's JSON files for the layer: the config,
// the manifest, the index and Docker's manifest.json.
func ociDocuments(spec ociSpec, layer layerStats) (OCIImage, []archiveFile, error) {
	arch := spec.arch
	if arch == "" {
		arch = "amd64" // the only one guest images are built for
	}
	when := spec.created.Format(time.RFC3339)
	config, err := json.Marshal(ociConfig{
		Created: when, Architecture: arch, OS: "linux",
		Config:  spec.run,
		RootFS:  ociRootFS{Type: "layers", DiffIDs: []string{layer.DiffID}},
		History: []ociHistory{{Created: when, CreatedBy: spec.history}},
	})
	if err != nil {
		return OCIImage{}, nil, err
	}
	configDigest := sha256Digest(config)
	ref := spec.ref
	if ref.tag == "" {
		ref.tag = strings.TrimPrefix(configDigest, "sha256:")[:12]
	}
	img := OCIImage{
		Ref: ref.given + ":" + ref.tag, Name: containerdName(ref.repo, ref.tag),
		ConfigDigest: configDigest, LayerDigest: layer.Digest, LayerSize: layer.Size, TarSize: layer.TarSize, Entries: layer.Entries,
	}
	manifest, err := json.Marshal(ociManifest{
		SchemaVersion: 2, MediaType: ociManifestType,
		Config:      ociDescriptor{MediaType: ociConfigType, Digest: configDigest, Size: int64(len(config))},
		Layers:      []ociDescriptor{{MediaType: ociLayerType, Digest: layer.Digest, Size: layer.Size}},
		Annotations: map[string]string{ociRefNameKey: img.Name, ociCreatedKey: when},
	})
	if err != nil {
		return OCIImage{}, nil, err
	}
	img.ManifestDigest = sha256Digest(manifest)
	// ctr import names the image after io.containerd.image.name (else after
	// ref.name, as given), podman after ref.name: both get the fully
	// qualified name, which is where a pod's "execlaw-guest:TAG" looks.
	index, err := json.Marshal(ociIndex{SchemaVersion: 2, MediaType: ociIndexType, Manifests: []ociDescriptor{{
		MediaType: ociManifestType, Digest: img.ManifestDigest, Size: int64(len(manifest)),
		Annotations: map[string]string{containerdNameKey: img.Name, ociRefNameKey: img.Name},
		Platform:    &ociPlatform{Architecture: arch, OS: "linux"},
	}}})
	if err != nil {
		return OCIImage{}, nil, err
	}
	// Docker before 25 reads only this file.
	dockerManifest, err := json.Marshal([]dockerArchiveEntry{{
		Config: blobPath(configDigest), RepoTags: []string{img.Ref}, Layers: []string{blobPath(layer.Digest)},
	}})
	if err != nil {
		return OCIImage{}, nil, err
	}
	return img, []archiveFile{
		{"oci-layout", []byte(`{"imageLayoutVersion":"` + ociLayoutVersion + `"}`)},
		{blobPath(configDigest), config},
		{blobPath(img.ManifestDigest), manifest},
		{"index.json", index},
		{"manifest.json", dockerManifest},
	}, nil
}

func sha256Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func blobPath(digest string) string { return "blobs/sha256/" + strings.TrimPrefix(digest, "sha256:") }

type archiveFile struct {
	name string
	data []byte
}

// writeOCIArchive writes the archive to a temporary file beside path and
// renames it into place, so path is never a partial archive.
func writeOCIArchive(path string, mtime time.Time, layerFile *os.File, layer layerStats, files []archiveFile) (int64, error) {
	f, err := os.CreateTemp(filepath.Dir(path), ".execlaw-oci-*")
	if err != nil {
		return 0, err
	}
	defer func() {
		f.Close()
		os.Remove(f.Name()) // fails harmlessly once renamed
	}()
	tw := tar.NewWriter(f)
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(tarHeader(d, 0, 0o755, mtime)); err != nil {
			return 0, err
		}
	}
	if err := tw.WriteHeader(tarHeader(blobPath(layer.Digest), layer.Size, 0o644, mtime)); err != nil {
		return 0, err
	}
	if _, err := layerFile.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	if n, err := io.Copy(tw, layerFile); err != nil || n != layer.Size {
		return 0, fmt.Errorf("copying the layer into the archive: %d of %d bytes: %v", n, layer.Size, err)
	}
	for _, af := range files {
		if err := tw.WriteHeader(tarHeader(af.name, int64(len(af.data)), 0o644, mtime)); err != nil {
			return 0, err
		}
		if _, err := tw.Write(af.data); err != nil {
			return 0, err
		}
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	if err := f.Chmod(0o644); err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	return size, os.Rename(f.Name(), path)
}

// tarHeader is a header for a file of size bytes, or for a directory when
// name ends in a slash, owned by root.
func tarHeader(name string, size, mode int64, mtime time.Time) *tar.Header {
	h := &tar.Header{Name: name, Size: size, Mode: mode, ModTime: mtime, Typeflag: tar.TypeReg}
	if strings.HasSuffix(name, "/") {
		h.Typeflag = tar.TypeDir
	}
	return h
}

// The JSON documents, with only the fields written (the OCI image spec's
// names; Docker's for manifest.json).

type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *ociPlatform      `json:"platform,omitempty"`
}

type ociPlatform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type ociIndex struct {
	SchemaVersion int             `json:"schemaVersion"`
	MediaType     string          `json:"mediaType"`
	Manifests     []ociDescriptor `json:"manifests"`
}

type ociManifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	Config        ociDescriptor     `json:"config"`
	Layers        []ociDescriptor   `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type ociConfig struct {
	Created      string       `json:"created"`
	Architecture string       `json:"architecture"`
	OS           string       `json:"os"`
	Config       ociRunConfig `json:"config"`
	RootFS       ociRootFS    `json:"rootfs"`
	History      []ociHistory `json:"history"`
}

// User and Cmd are left out when empty, as the guest's config always was:
// adding them changed no guest image's digest.
type ociRunConfig struct {
	User         string              `json:"User,omitempty"`
	Entrypoint   []string            `json:"Entrypoint"`
	Cmd          []string            `json:"Cmd,omitempty"`
	Env          []string            `json:"Env"`
	WorkingDir   string              `json:"WorkingDir"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts"`
	Labels       map[string]string   `json:"Labels"`
}

type ociRootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

type ociHistory struct {
	Created   string `json:"created"`
	CreatedBy string `json:"created_by"`
}

type dockerArchiveEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// layerStats describes a layer being or having been written.
type layerStats struct {
	Digest  string // of the gzip'd tar
	DiffID  string // of the tar
	Size    int64  // gzip'd
	TarSize int64
	Entries int
	Skipped int // device nodes and sockets
}

// countingHash hashes and counts what goes through it.
type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

func (c *countingHash) digest() string { return "sha256:" + hex.EncodeToString(c.h.Sum(nil)) }
