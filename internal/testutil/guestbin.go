// Package testutil holds helpers shared by tests across packages.
package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var builds struct {
	mu    sync.Mutex
	paths map[string]string // by binary name
	pkgs  map[string]string // the package each name was built from
}

// GuestBinary builds ./cmd/execlaw-guest (static, CGO_ENABLED=0) once per
// test process and returns its path.
func GuestBinary(tb testing.TB) string {
	tb.Helper()
	return Binary(tb, "execlaw-guest")
}

// Binary builds ./cmd/<name> once per test process and returns its path. It
// fails tb with the build output if the build fails.
//
// The binary goes to a fixed directory per module checkout under the system
// temp dir and is swapped in with a rename, so parallel test processes never
// see a half-written file and repeated runs do not pile up copies.
func Binary(tb testing.TB, name string) string {
	tb.Helper()
	return BinaryFrom(tb, "./cmd/"+name, name)
}

// BinaryFrom builds the main package pkg, a path relative to the module root
// such as "./internal/agent/nullclaw/nullclawtest/standin", once per test
// process, as an executable called name, and returns its path. It is cached,
// placed and swapped in like Binary's, in the same directory, so name must
// not be used for two packages; a second package under the same name fails
// tb.
func BinaryFrom(tb testing.TB, pkg, name string) string {
	tb.Helper()
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		tb.Fatalf("building %s: %q is not a file name", pkg, name)
	}
	if filepath.IsAbs(pkg) {
		tb.Fatalf("building %s: the package must be relative to the module root", pkg)
	}
	if !strings.HasPrefix(pkg, "./") {
		pkg = "./" + pkg
	}
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if p, ok := builds.paths[name]; ok {
		if builds.pkgs[name] != pkg {
			tb.Fatalf("building %s: the name %q is already used for %s", pkg, name, builds.pkgs[name])
		}
		return p
	}
	p, err := build(pkg, name)
	if err != nil {
		tb.Fatalf("building %s: %v", name, err)
	}
	if builds.paths == nil {
		builds.paths, builds.pkgs = map[string]string{}, map[string]string{}
	}
	builds.paths[name], builds.pkgs[name] = p, pkg
	return p
}

func build(pkg, name string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("execlaw-testbin-%d", os.Getuid()), hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, name+".tmp-*")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name()) // only still there if the build failed

	// `go test` puts its own toolchain first on PATH, so this is the same go.
	cmd := exec.Command("go", "build", "-o", tmp.Name(), pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	final := filepath.Join(dir, name)
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", err
	}
	return final, nil
}

// moduleRoot finds the directory holding go.mod: from this source file's
// location when built without -trimpath, else from `go env GOMOD`.
func moduleRoot() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		root := filepath.Join(filepath.Dir(file), "..", "..")
		if fileExists(filepath.Join(root, "go.mod")) && fileExists(filepath.Join(root, "cmd", "execlaw-guest")) {
			return filepath.Clean(root), nil
		}
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("locating module root: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("locating module root: not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
