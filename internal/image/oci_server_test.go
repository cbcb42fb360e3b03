package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/execlaw/execlaw/internal/image"
)

// serverStandIn builds a stand-in for execlaw: an empty main package at
// pkg of a module with execlaw's path, which is what WriteServerOCI looks
// at (the real binary takes minutes to build on a small machine; the
// cmd/execlaw test puts that one in an image). env and flags go to go build.
func serverStandIn(t *testing.T, pkg string, env []string, flags ...string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range map[string]string{
		"go.mod":         "module github.com/execlaw/execlaw\n\ngo 1.22\n",
		pkg + "/main.go": "package main\n\nfunc main() {}\n",
	} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "execlaw")
	cmd := exec.Command("go", append(append([]string{"build", "-o", out}, flags...), "./"+pkg)...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "GOWORK=off", "GOFLAGS=", "GOTOOLCHAIN=local", "CGO_ENABLED=0"), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// testCACerts writes a PEM file of one self-signed CA certificate.
func testCACerts(t *testing.T) string {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "execlaw test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const versionFlag = "-X github.com/execlaw/execlaw/internal/version.Version="

// TestServerOCIArchive writes the server image of a stand-in binary and
// reads every part of it back.
func TestServerOCIArchive(t *testing.T) {
	bin := serverStandIn(t, "cmd/execlaw", nil, "-ldflags", "-s -w "+versionFlag+"v9.9-test")
	certs := testCACerts(t)
	out := t.TempDir()
	archive := filepath.Join(out, "server.tar")
	var progress bytes.Buffer
	img, err := image.WriteServerOCI(context.Background(), image.ServerOCIOptions{
		Path: archive, Binary: bin, CACerts: certs, Out: &progress,
	})
	if err != nil {
		t.Fatalf("WriteServerOCI: %v\n%s", err, progress.String())
	}
	t.Logf("%s: archive %d bytes, layer %d gzip'd (%d of tar, %d entries)\n%s",
		img.Ref, img.Size, img.LayerSize, img.TarSize, img.Entries, progress.String())
	for _, want := range []string{bin, "execlaw v9.9-test", "static linux/amd64", certs, archive, img.Ref} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress does not say %q:\n%s", want, progress.String())
		}
	}
	ociImg := checkWritten(t, archive, img, "execlaw")
	t.Run("config", func(t *testing.T) {
		cf, err := ociImg.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if c.User != "10001:10001" || !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/execlaw"}) || !slices.Equal(c.Cmd, []string{"serve"}) {
			t.Errorf("user %q, entrypoint %q, cmd %q", c.User, c.Entrypoint, c.Cmd)
		}
		wantEnv := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "EXECLAW_SANDBOX=kubernetes",
			"EXECLAW_DATA_DIR=/data", "EXECLAW_LISTEN=0.0.0.0:8000"}
		if !slices.Equal(c.Env, wantEnv) {
			t.Errorf("env %q, want %q", c.Env, wantEnv)
		}
		if _, ok := c.ExposedPorts["8000/tcp"]; !ok || len(c.ExposedPorts) != 1 || c.WorkingDir != "/data" {
			t.Errorf("exposed ports %v, working dir %q", c.ExposedPorts, c.WorkingDir)
		}
		wantLabels := map[string]string{
			"io.execlaw.version": "v9.9-test", "io.execlaw.component": "server", "io.execlaw.server.sha256": fileSum(t, bin),
		}
		if len(c.Labels) != len(wantLabels) {
			t.Errorf("labels %v, want %v", c.Labels, wantLabels)
		}
		for k, v := range wantLabels {
			if c.Labels[k] != v {
				t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
			}
		}
		if cf.OS != "linux" || cf.Architecture != "amd64" || cf.Created.Unix() != 0 || len(cf.History) != 1 ||
			!strings.Contains(cf.History[0].CreatedBy, "execlaw image server") {
			t.Errorf("config: os %q arch %q, created %v, history %+v", cf.OS, cf.Architecture, cf.Created, cf.History)
		}
	})
	t.Run("docker manifest.json", func(t *testing.T) {
		dm, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(archive) })
		if err != nil {
			t.Fatal(err)
		}
		if len(dm) != 1 || !slices.Equal(dm[0].RepoTags, []string{img.Ref}) {
			t.Fatalf("manifest.json: %+v, want one image tagged %s", dm, img.Ref)
		}
		dimg, err := tarball.ImageFromPath(archive, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Image(dimg, validate.Fast); err != nil {
			t.Errorf("docker side: %v", err)
		}
	})
	t.Run("layer", func(t *testing.T) {
		ents, order := layerEntries(t, ociImg)
		checkOrder(t, ents, order)
		type want struct {
			typ  byte
			mode int64
			uid  int // and gid
			data string
		}
		dir := func(mode int64, uid int) want { return want{tar.TypeDir, mode, uid, ""} }
		file := func(mode int64, data string) want { return want{tar.TypeReg, mode, 0, data} }
		wants := map[string]want{
			"data": dir(0o700, 10001), "etc": dir(0o755, 0), "etc/ssl": dir(0o755, 0), "etc/ssl/certs": dir(0o755, 0),
			"tmp": dir(0o1777, 0), "usr": dir(0o755, 0), "usr/local": dir(0o755, 0), "usr/local/bin": dir(0o755, 0),
			"etc/passwd":                        file(0o644, "root:x:0:0:root:/root:/sbin/nologin\nexeclaw:x:10001:10001::/data:/sbin/nologin\n"),
			"etc/group":                         file(0o644, "root:x:0:\nexeclaw:x:10001:\n"),
			"etc/nsswitch.conf":                 file(0o644, "hosts: files dns\n"),
			"etc/ssl/certs/ca-certificates.crt": file(0o644, string(readFile(t, certs))),
			"usr/local/bin/execlaw":             file(0o755, string(readFile(t, bin))),
		}
		if len(order) != len(wants) {
			t.Errorf("the layer has %q; want %d entries", order, len(wants))
		}
		for name, w := range wants {
			e, ok := ents[name]
			if !ok {
				t.Errorf("%s is not in the layer", name)
				continue
			}
			h := e.hdr
			if h.Typeflag != w.typ || h.Mode != w.mode || h.Uid != w.uid || h.Gid != w.uid || h.ModTime.Unix() != 0 {
				t.Errorf("%s: type %c mode %o owner %d:%d time %v; want type %c mode %o owner %d:%[9]d at the epoch",
					name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime, w.typ, w.mode, w.uid)
			}
			if sum := sha256.Sum256([]byte(w.data)); w.typ == tar.TypeReg && e.sum != hex.EncodeToString(sum[:]) {
				t.Errorf("%s: other contents (%d bytes, want %d): %.200q", name, h.Size, len(w.data), e.data)
			}
		}
	})
	t.Run("deterministic", func(t *testing.T) {
		again := filepath.Join(t.TempDir(), "again.tar")
		img2, err := image.WriteServerOCI(context.Background(), image.ServerOCIOptions{Path: again, Binary: bin, CACerts: certs})
		if err != nil {
			t.Fatal(err)
		}
		if img2.ManifestDigest != img.ManifestDigest || fileSum(t, again) != fileSum(t, archive) {
			t.Errorf("a second archive differs: manifest %s, first %s", img2.ManifestDigest, img.ManifestDigest)
		}
		// Another name changes the manifest (it carries the name), not the
		// image; another version changes the image.
		img3, err := image.WriteServerOCI(context.Background(), image.ServerOCIOptions{
			Path: again, Binary: bin, CACerts: certs, Ref: "registry.example.com:5000/team/execlaw:v1",
		})
		if err != nil {
			t.Fatal(err)
		}
		if img3.ConfigDigest != img.ConfigDigest || img3.LayerDigest != img.LayerDigest || img3.ManifestDigest == img.ManifestDigest ||
			img3.Ref != "registry.example.com:5000/team/execlaw:v1" || img3.Name != img3.Ref {
			t.Errorf("with a name: %+v", img3)
		}
		img4, err := image.WriteServerOCI(context.Background(), image.ServerOCIOptions{
			Path: again, Binary: bin, CACerts: certs, Version: "other", Ref: "execlaw",
		})
		if err != nil {
			t.Fatal(err)
		}
		if img4.LayerDigest != img.LayerDigest || img4.ConfigDigest == img.ConfigDigest || !strings.HasPrefix(img4.Ref, "execlaw:") {
			t.Errorf("with another version: %+v", img4)
		}
	})
	t.Run("arm64", func(t *testing.T) {
		// The architecture is the binary's: patching the ELF header's
		// e_machine is cheaper than a cross build and all it reads.
		arm := patchMachine(t, bin, 183) // EM_AARCH64
		p := filepath.Join(t.TempDir(), "arm64.tar")
		img, err := image.WriteServerOCI(context.Background(), image.ServerOCIOptions{Path: p, Binary: arm, CACerts: certs})
		if err != nil {
			t.Fatal(err)
		}
		// readOCILayout checks that the index's platform agrees.
		cf, err := readOCILayout(t, p, img).ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != "arm64" {
			t.Errorf("config architecture %q, want arm64", cf.Architecture)
		}
	})
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// patchMachine copies an ELF file with another e_machine.
func patchMachine(t *testing.T, src string, machine uint16) string {
	t.Helper()
	b := readFile(t, src)
	b[18], b[19] = byte(machine), byte(machine>>8) // little-endian
	p := filepath.Join(t.TempDir(), "patched")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestServerOCIRefusals: a binary that could not run in the image, or is
// not execlaw, and CA certificates that are not, are refused before an
// archive is written.
func TestServerOCIRefusals(t *testing.T) {
	static := serverStandIn(t, "cmd/execlaw", nil)
	certs := testCACerts(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexec execlaw \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, binary, certs string
		want                []string
	}{
		// A PIE build needs the loader even without cgo.
		{"pie", serverStandIn(t, "cmd/execlaw", nil, "-buildmode=pie"), certs,
			[]string{"dynamically linked", "ld-linux-x86-64.so.2", "CGO_ENABLED=0"}},
		{"script", script, certs, []string{"not a Linux executable"}},
		{"riscv64", patchMachine(t, static, 243), certs, []string{"built for EM_RISCV", "amd64 or arm64"}},
		{"another program", serverStandIn(t, "cmd/execlaw-guest", nil), certs,
			[]string{"is github.com/execlaw/execlaw/cmd/execlaw-guest, not execlaw"}},
		{"no binary", filepath.Join(dir, "missing"), certs, []string{"server binary", "no such file"}},
		{"no CA certificates", static, filepath.Join(dir, "missing.pem"), []string{"CA certificates", "no such file", "ca-certificates"}},
		{"CA certificates not PEM", static, notPEM, []string{"no PEM certificate"}},
	}
	if cc, err := exec.LookPath("cc"); err == nil {
		// A shared library needs others (DT_NEEDED) but names no loader.
		src := filepath.Join(dir, "lib.c")
		if err := os.WriteFile(src, []byte("double f(double x) { return x; }\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		lib := filepath.Join(dir, "lib.so")
		if out, err := exec.Command(cc, "-shared", "-fPIC", "-Wl,--no-as-needed", "-o", lib, src, "-lm").CombinedOutput(); err != nil {
			t.Fatalf("cc: %v\n%s", err, out)
		}
		cases = append(cases, struct {
			name, binary, certs string
			want                []string
		}{"needs libraries", lib, certs, []string{"needs shared libraries", "libm.so.6", "CGO_ENABLED=0"}})
	} else {
		t.Log("no C compiler: a library without a loader is not tried")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := t.TempDir()
			p := filepath.Join(out, "server.tar")
			_, err := image.WriteServerOCI(context.Background(), image.ServerOCIOptions{Path: p, Binary: c.binary, CACerts: c.certs})
			t.Log(err)
			for _, w := range c.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v, want one saying %q", err, w)
				}
			}
			if left, _ := os.ReadDir(out); len(left) > 0 {
				t.Errorf("written: %v", left)
			}
		})
	}
	// The control: the static stand-in the refused ones were made from.
	if _, err := image.WriteServerOCI(context.Background(), image.ServerOCIOptions{
		Path: filepath.Join(dir, "ok.tar"), Binary: static, CACerts: certs,
	}); err != nil {
		t.Errorf("the static stand-in: %v", err)
	}
}

// TestServerOCIBadPathAndRef: a path or a name the archive cannot have is
// refused first, before the binary is even read.
func TestServerOCIBadPathAndRef(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-binary")
	for _, c := range []struct{ path, ref, want string }{
		{filepath.Join(dir, "missing", "x.tar"), "", "does not exist"},
		{dir, "", "is a directory"},
		{"", "", "no file name"},
		{filepath.Join(dir, "x.tar"), "Execlaw:v1", "image reference"},
		{filepath.Join(dir, "x.tar"), "execlaw@sha256:" + strings.Repeat("0", 64), "a digest cannot be given"},
		{filepath.Join(dir, "x.tar"), "execlaw:-v1", "image reference"},
	} {
		_, err := image.WriteServerOCI(context.Background(), image.ServerOCIOptions{Path: c.path, Ref: c.ref, Binary: missing})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("path %q ref %q: %v, want %q", c.path, c.ref, err, c.want)
		}
	}
}
