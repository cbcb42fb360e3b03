package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// The server's own image, for deploy/kubernetes: the static execlaw binary
// and the little of a system it reads (CA certificates for model APIs and
// git hosts, a passwd entry for its user, name service order), with a
// writable /tmp and /data. It has no shell and no libc, which is why the
// binary must be static. It is written as the guest's archive is, so the
// same tools load it.

const (
	// OCIServerRepository is the server image's name when
	// ServerOCIOptions.Ref does not give one.
	OCIServerRepository = "execlaw"
	// OCIServerPath is where the layer puts execlaw.
	OCIServerPath = "/usr/local/bin/execlaw"
	// OCIServerPort is the port the image's EXECLAW_LISTEN has it serve on.
	OCIServerPort = 8000
	// OCIServerUID is the user, and group, the image runs execlaw as.
	OCIServerUID = 10001
	// OCIServerDataDir is the image's EXECLAW_DATA_DIR: a volume goes there.
	OCIServerDataDir = "/data"
	// DefaultCACerts is the CA bundle the image gets by default: Debian's,
	// from its ca-certificates package. Go reads the same path in the image.
	DefaultCACerts = "/etc/ssl/certs/ca-certificates.crt"

	serverMainPackage = "github.com/execlaw/execlaw/cmd/execlaw"
	serverVersionVar  = "github.com/execlaw/execlaw/internal/version.Version"
)

// serverImageTime is every entry's and document's time: a constant (the
// Unix epoch, as ko and SOURCE_DATE_EPOCH=0 builds have it), so that the
// same binary and certificates give the same archive, byte for byte.
var serverImageTime = time.Unix(0, 0).UTC()

// ServerOCIOptions say how WriteServerOCI writes the server's image.
type ServerOCIOptions struct {
	Path string // the archive to write; replaced whole when it is complete
	// Ref names the image as OCIOptions.Ref does, with "execlaw" for
	// "execlaw-guest": "execlaw:<short hash>" when empty.
	Ref     string
	Binary  string // the static execlaw to put at OCIServerPath
	CACerts string // PEM CA bundle for the image; default DefaultCACerts
	// Version is execlaw's version for the labels; default: the binary's,
	// as its build info records it.
	Version string
	Out     io.Writer
}

// WriteServerOCI writes the server's image, o.Binary with CA certificates
// and a user to run as, as an OCI image archive. It refuses a binary that
// is not a static Linux build of execlaw before writing anything.
func WriteServerOCI(ctx context.Context, o ServerOCIOptions) (OCIImage, error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.CACerts == "" {
		o.CACerts = DefaultCACerts
	}
	if err := CheckOCIPath(o.Path); err != nil {
		return OCIImage{}, err
	}
	ref, err := ociRef(o.Ref, OCIServerRepository)
	if err != nil {
		return OCIImage{}, err
	}
	// Read once: what is checked, hashed and written is the same bytes even
	// if the file is rebuilt meanwhile.
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return OCIImage{}, fmt.Errorf("server binary: %w", err)
	}
	arch, err := staticLinuxArch(bin)
	if err != nil {
		return OCIImage{}, fmt.Errorf("server binary %s: %w", o.Binary, err)
	}
	info, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		return OCIImage{}, fmt.Errorf("server binary %s: not a Go program: %w", o.Binary, err)
	}
	if info.Path != serverMainPackage {
		return OCIImage{}, fmt.Errorf("server binary %s is %s, not execlaw (%s)", o.Binary, info.Path, serverMainPackage)
	}
	if o.Version == "" {
		o.Version = binaryVersion(info)
	}
	certs, err := os.ReadFile(o.CACerts)
	if err != nil {
		return OCIImage{}, fmt.Errorf("CA certificates: %w (Debian's ca-certificates package has %s)", err, DefaultCACerts)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(certs) {
		return OCIImage{}, fmt.Errorf("CA certificates %s: no PEM certificate in it", o.CACerts)
	}
	sum := sha256.Sum256(bin)
	binSum := hex.EncodeToString(sum[:])

	spec := ociSpec{
		arch: arch, created: serverImageTime, ref: ref,
		history: fmt.Sprintf("execlaw image server (execlaw %s)", o.Version),
		run: ociRunConfig{
			User:       fmt.Sprintf("%d:%d", OCIServerUID, OCIServerUID),
			Entrypoint: []string{OCIServerPath},
			Cmd:        []string{"serve"},
			// As deploy/kubernetes/deployment.yaml sets them too. The image
			// has no execlaw-guest or VMM, so kubernetes is the only
			// sandbox it can serve with; --auth stays token, which may
			// listen on every address.
			Env: []string{ociPath, "EXECLAW_SANDBOX=kubernetes", "EXECLAW_DATA_DIR=" + OCIServerDataDir,
				fmt.Sprintf("EXECLAW_LISTEN=0.0.0.0:%d", OCIServerPort)},
			WorkingDir:   OCIServerDataDir,
			ExposedPorts: map[string]struct{}{fmt.Sprintf("%d/tcp", OCIServerPort): {}},
			Labels: map[string]string{
				"io.execlaw.version":       o.Version,
				"io.execlaw.component":     "server",
				"io.execlaw.server.sha256": binSum,
			},
		},
	}
	start := time.Now()
	fmt.Fprintf(o.Out, "oci: server image of %s (execlaw %s, static linux/%s, %s, sha256:%s) and the CA certificates of %s\n",
		o.Binary, o.Version, arch, mib(int64(len(bin))), short(binSum), o.CACerts)
	img, err := writeOCIFile(o.Path, spec, func(out io.Writer) (layerStats, error) {
		return writeServerLayer(ctx, out, serverLayer(bin, certs))
	})
	if err != nil {
		return OCIImage{}, err
	}
	fmt.Fprintf(o.Out, "oci: layer %d entries, %s of tar, %s gzip'd\n", img.Entries, mib(img.TarSize), mib(img.LayerSize))
	fmt.Fprintf(o.Out, "oci: %s: %s (%s), %s in %s\n", o.Path, img.Ref, img.Name, mib(img.Size), time.Since(start).Round(100*time.Millisecond))
	return img, nil
}

// serverEntry is one entry of the server's layer.
type serverEntry struct {
	name string // without a leading slash; a directory's ends in /
	mode int64
	uid  int // and gid
	data []byte
}

// serverLayer is the server image's tree, parents first and each
// directory's entries by name, as the guest's layer has them.
func serverLayer(bin, certs []byte) []serverEntry {
	u := OCIServerUID
	return []serverEntry{
		// The data volume is mounted over it; without one, it still works.
		{name: "data/", mode: 0o700, uid: u},
		{name: "etc/", mode: 0o755},
		{name: "etc/group", mode: 0o644, data: fmt.Appendf(nil, "root:x:0:\nexeclaw:x:%d:\n", u)},
		// Go's resolver would ask DNS before /etc/hosts without it.
		{name: "etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{name: "etc/passwd", mode: 0o644, data: fmt.Appendf(nil,
			"root:x:0:0:root:/root:/sbin/nologin\nexeclaw:x:%d:%d::%s:/sbin/nologin\n", u, u, OCIServerDataDir)},
		{name: "etc/ssl/", mode: 0o755},
		{name: "etc/ssl/certs/", mode: 0o755},
		{name: strings.TrimPrefix(DefaultCACerts, "/"), mode: 0o644, data: certs},
		{name: "tmp/", mode: 0o1777},
		{name: "usr/", mode: 0o755},
		{name: "usr/local/", mode: 0o755},
		{name: "usr/local/bin/", mode: 0o755},
		{name: strings.TrimPrefix(OCIServerPath, "/"), mode: 0o755, data: bin},
	}
}

// writeServerLayer writes ents to out as a layer.
func writeServerLayer(ctx context.Context, out io.Writer, ents []serverEntry) (layerStats, error) {
	lw, err := newLayerWriter(out)
	if err != nil {
		return layerStats{}, err
	}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return layerStats{}, err
		}
		hdr := tarHeader(e.name, int64(len(e.data)), e.mode, serverImageTime)
		hdr.Uid, hdr.Gid = e.uid, e.uid
		if err := lw.tw.WriteHeader(hdr); err != nil {
			return layerStats{}, err
		}
		if _, err := lw.tw.Write(e.data); err != nil {
			return layerStats{}, fmt.Errorf("/%s: %w", e.name, err)
		}
	}
	stats, err := lw.close()
	stats.Entries = len(ents)
	return stats, err
}

// staticLinuxArch returns the GOARCH a Linux executable is built for. It
// refuses one that needs a dynamic loader or shared libraries: the image
// has neither, and the container would fail to start with "no such file
// or directory", the loader's.
func staticLinuxArch(bin []byte) (string, error) {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return "", fmt.Errorf("not a Linux executable: %w", err)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN || f.OSABI != elf.ELFOSABI_NONE && f.OSABI != elf.ELFOSABI_LINUX {
		return "", fmt.Errorf("not a Linux executable (ELF %v, %v)", f.Type, f.OSABI)
	}
	arch, ok := map[elf.Machine]string{elf.EM_X86_64: "amd64", elf.EM_AARCH64: "arm64"}[f.Machine]
	if !ok {
		return "", fmt.Errorf("built for %v; the server image is for amd64 or arm64", f.Machine)
	}
	const rebuild = "the image has no libc or loader: build it with CGO_ENABLED=0 (make build does)"
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			interp, _ := io.ReadAll(p.Open())
			return "", fmt.Errorf("dynamically linked (its loader is %s); %s", bytes.TrimRight(interp, "\x00"), rebuild)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return "", fmt.Errorf("reading its dynamic section: %w", err)
	}
	if len(libs) > 0 {
		return "", fmt.Errorf("needs shared libraries (%s); %s", strings.Join(libs, ", "), rebuild)
	}
	return arch, nil
}

// binaryVersion is what `execlaw version` of the binary info describes
// prints (version.String's rule), read rather than run: the binary may be
// built for another machine. A -trimpath build does not record its
// -ldflags, so its version is unknown.
func binaryVersion(info *buildinfo.BuildInfo) string {
	v, rev, trimpath := "dev", "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "-ldflags":
			if x := ldflagsValue(s.Value, serverVersionVar); x != "" {
				v = x
			}
		case "-trimpath":
			trimpath = s.Value == "true"
		case "vcs.revision":
			rev = s.Value
		}
	}
	if trimpath && v == "dev" {
		v = "unknown"
	}
	if len(rev) >= 12 {
		v += " (" + rev[:12] + ")"
	}
	return v
}

// ldflagsValue is what -ldflags sets name to with -X ("" if nothing).
func ldflagsValue(ldflags, name string) string {
	fields := strings.Fields(ldflags)
	val := ""
	for i, f := range fields {
		var x string
		switch {
		case (f == "-X" || f == "--X") && i+1 < len(fields):
			x = fields[i+1]
		case strings.HasPrefix(f, "-X="):
			x = strings.TrimPrefix(f, "-X=")
		default:
			continue
		}
		if v, ok := strings.CutPrefix(strings.Trim(x, `'"`), name+"="); ok {
			val = v // the last -X wins, as in the linker
		}
	}
	return val
}
