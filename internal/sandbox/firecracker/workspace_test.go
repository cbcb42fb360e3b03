package firecracker

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/execlaw/execlaw/internal/guest"
)

// The workspace file API streams over hybrid vsock like over any channel:
// a file larger than a JSON request could carry goes in and comes out whole,
// the tarball holds it, and an archive unpacks.
func TestWorkspaceFilesOverVsock(t *testing.T) {
	f := newFake(t, fakeConfig{})
	spec, _ := newSpec(t, "none")
	s, err := f.driver(nil).Start(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(t.Context()) })
	g := s.Guest()
	big := make([]byte, 20<<20) // past guest.MaxRequestBytes
	for i := range big {
		big[i] = byte(i % 251)
	}
	if r, err := g.WSWrite(t.Context(), "data/big.bin", bytes.NewReader(big), 64<<20); err != nil || r.Size != int64(len(big)) {
		t.Fatalf("write: %+v %v", r, err)
	}
	if b, _ := os.ReadFile(filepath.Join(f.cfg.Workspace, "data/big.bin")); !bytes.Equal(b, big) {
		t.Fatal("the guest wrote something else")
	}
	rc, size, err := g.WSRead(t.Context(), "data/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || size != int64(len(big)) || !bytes.Equal(got, big) {
		t.Fatalf("read back %d of %d bytes: %v", len(got), size, err)
	}
	tr, err := g.WSTar(t.Context(), guest.WSTarRequest{})
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(tr)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for r := tar.NewReader(zr); ; {
		h, err := r.Next()
		if err != nil {
			break
		}
		if h.Name == "workspace/data/big.bin" {
			b, _ := io.ReadAll(r)
			found = bytes.Equal(b, big)
		}
	}
	tr.Close()
	if !found {
		t.Error("the tarball lacks the file")
	}
	var arch bytes.Buffer
	zw := gzip.NewWriter(&arch)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "from-archive.txt", Mode: 0o644, Size: 2})
	tw.Write([]byte("hi"))
	tw.Close()
	zw.Close()
	if res, err := g.WSUnpack(t.Context(), &arch, guest.UnpackLimits{}); err != nil || res.Files != 1 {
		t.Fatalf("unpack: %+v %v", res, err)
	}
	if b, _ := os.ReadFile(filepath.Join(f.cfg.Workspace, "from-archive.txt")); string(b) != "hi" {
		t.Errorf("unpacked %q", b)
	}
}
