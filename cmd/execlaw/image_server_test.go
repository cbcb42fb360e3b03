package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/execlaw/execlaw/internal/image"
	"github.com/execlaw/execlaw/internal/testutil"
)

// TestImageServerFlags: what `execlaw image server` cannot do is said
// before anything is read.
func TestImageServerFlags(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "server.tar")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--oci FILE is required"},
		{[]string{"--oci", dir}, "--oci: OCI archive " + dir + ": is a directory"},
		{[]string{"--oci", p, "--oci-tag", "Execlaw:v1"}, "--oci-tag: image reference"},
		{[]string{"--oci", p, "extra"}, "unexpected arguments"},
		{[]string{"--oci", p, "--binary", filepath.Join(dir, "missing")}, "server binary: open " + filepath.Join(dir, "missing")},
		// This test binary is not execlaw, and may not be static either.
		{[]string{"--oci", p}, "server binary " + exe},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), append([]string{"image", "server"}, c.args...), func(string) string { return "" }, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("image server %q: %v, want %q", c.args, err, c.want)
		}
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("%s was written: %v", p, err)
	}
}

// TestImageServer puts the real execlaw, as the tests build it (static),
// in an image, and checks what the command says and writes.
func TestImageServer(t *testing.T) {
	if _, err := os.Stat(image.DefaultCACerts); err != nil {
		t.Fatalf("the server image takes Debian's CA certificates: apt-get install ca-certificates (scripts/deps.sh does): %v", err)
	}
	bin := testutil.Binary(t, "execlaw")
	p := filepath.Join(t.TempDir(), "server.tar")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"image", "server", "--oci", p, "--oci-tag", "execlaw:cli-test", "--binary", bin},
		func(string) string { return "" }, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s%s", err, stdout.String(), stderr.String())
	}
	t.Log(stdout.String())
	for _, want := range []string{"ctr -n k8s.io images import " + p, "podman load -i " + p, "docker load -i " + p,
		"deploy/kubernetes/deployment.yaml then runs image: execlaw:cli-test"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("the command does not say %q:\n%s", want, stdout.String())
		}
	}
	dm, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(p) })
	if err != nil || len(dm) != 1 || len(dm[0].RepoTags) != 1 || dm[0].RepoTags[0] != "execlaw:cli-test" {
		t.Fatalf("manifest.json: %+v, %v", dm, err)
	}
	img, err := tarball.ImageFromPath(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	// The label says what the binary itself says it is.
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimPrefix(strings.TrimSpace(string(out)), "execlaw "); cf.Config.Labels["io.execlaw.version"] != want {
		t.Errorf("version label %q, `execlaw version` says %q", cf.Config.Labels["io.execlaw.version"], want)
	}
}
