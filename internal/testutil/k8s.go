package testutil

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/execlaw/execlaw/internal/image"
)

// K8sCacheEnv overrides where scripts/k8s-testbed.sh keeps the Kubernetes
// binaries it compiles (and, below it, the running cluster's files).
const K8sCacheEnv = "EXECLAW_K8S_CACHE"

var k8sTestbed struct {
	mu         sync.Mutex
	kubeconfig string
	env        map[string]string
	failed     string
}

// K8sCluster brings up the single-node Kubernetes test cluster
// (scripts/k8s-testbed.sh up: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, containerd and a kubelet on this machine) once per test
// process and returns the path of its admin kubeconfig. The first run on a
// machine compiles Kubernetes (about 15 minutes on 2 cores); later ones
// start it in well under a minute, and a cluster already up is used as it
// is. Test processes of different packages share the cluster: they run the
// script one at a time, under a file lock in /var/tmp/execlaw-k8s (or
// $EXECLAW_K8S_CACHE). The cluster stays up after the tests;
// `scripts/k8s-testbed.sh down` removes it.
//
// Pods run images imported with K8sImportImage and imagePullPolicy: Never.
// The cluster fails tb, with the end of the script's output, when it cannot
// be brought up: it never skips.
func K8sCluster(tb testing.TB) (kubeconfig string) {
	tb.Helper()
	k8sTestbed.mu.Lock()
	defer k8sTestbed.mu.Unlock()
	if k8sTestbed.kubeconfig != "" {
		return k8sTestbed.kubeconfig
	}
	if k8sTestbed.failed != "" {
		tb.Fatal(k8sTestbed.failed)
	}
	fail := func(format string, args ...any) {
		tb.Helper()
		k8sTestbed.failed = fmt.Sprintf(format, args...)
		tb.Fatal(k8sTestbed.failed)
	}
	script, err := k8sTestbedScript()
	if err != nil {
		fail("k8s test cluster: %v", err)
	}
	unlock, err := k8sLock()
	if err != nil {
		fail("k8s test cluster: %v", err)
	}
	defer unlock()

	var out SyncBuffer
	var w io.Writer = &out
	if testing.Verbose() {
		w = io.MultiWriter(&out, os.Stderr)
	}
	cmd := exec.Command("bash", script, "up")
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		fail("k8s test cluster: %s up: %v (needs root and scripts/deps.sh --test; logs under /var/tmp/execlaw-k8s/run/logs); its last lines:\n%s",
			script, err, lastLines(out.String(), 60))
	}
	envOut, err := exec.Command("bash", script, "env").Output()
	if err != nil {
		fail("k8s test cluster: %s env: %v", script, err)
	}
	env := parseExports(string(envOut))
	if env["KUBECONFIG"] == "" {
		fail("k8s test cluster: %s env printed no KUBECONFIG:\n%s", script, envOut)
	}
	k8sTestbed.env = env
	k8sTestbed.kubeconfig = env["KUBECONFIG"]
	return k8sTestbed.kubeconfig
}

// K8sServerFrom is where the host's connections to the test cluster's pods
// come from (its address on the pod bridge), as --k8s-server-from takes it.
func K8sServerFrom(tb testing.TB) netip.Prefix {
	tb.Helper()
	s := k8sEnv(tb, "EXECLAW_K8S_SERVER_FROM")
	p, err := netip.ParsePrefix(s)
	if err != nil {
		tb.Fatalf("k8s test cluster: scripts/k8s-testbed.sh env printed EXECLAW_K8S_SERVER_FROM %q: %v", s, err)
	}
	return p
}

// K8sImportImage imports an image archive (OCI or docker-archive, as
// `ctr images import` takes; scripts/k8s-testbed.sh image makes one from a
// static binary) into the test cluster's containerd, in the k8s.io namespace
// the kubelet uses, bringing the cluster up first if needed. Pods use it
// with imagePullPolicy: Never.
func K8sImportImage(tb testing.TB, archivePath string) {
	tb.Helper()
	addr := k8sEnv(tb, "CONTAINERD_ADDRESS")
	if addr == "" {
		tb.Fatal("k8s test cluster: scripts/k8s-testbed.sh env printed no CONTAINERD_ADDRESS")
	}
	out, err := exec.Command("ctr", "--address", addr, "--namespace", "k8s.io", "images", "import", archivePath).CombinedOutput()
	if err != nil {
		tb.Fatalf("k8s test cluster: ctr images import %s: %v\n%s", archivePath, err, out)
	}
}

// k8sEnv is a variable of `scripts/k8s-testbed.sh env`, bringing the test
// cluster up first if needed.
func k8sEnv(tb testing.TB, name string) string {
	tb.Helper()
	K8sCluster(tb)
	k8sTestbed.mu.Lock()
	defer k8sTestbed.mu.Unlock()
	return k8sTestbed.env[name]
}

// K8sTestbedBin is the path of a binary scripts/k8s-testbed.sh builds
// (`k8s-testbed.sh bin NAME`: kwok, or one of Kubernetes'), built the
// first time.
func K8sTestbedBin(tb testing.TB, name string) string {
	tb.Helper()
	script, err := k8sTestbedScript()
	if err != nil {
		tb.Fatalf("k8s test bed: %v", err)
	}
	out, err := exec.Command("bash", script, "bin", name).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%v: %s", err, ee.Stderr)
		}
		tb.Fatalf("k8s test bed: %s bin %s: %v", script, name, err)
	}
	return strings.TrimSpace(string(out))
}

var k8sGuestImage struct {
	once sync.Once
	ref  string
	err  error
}

// K8sGuestImage imports an image holding this tree's static execlaw-guest
// alone (scripts/k8s-testbed.sh image) into the test cluster, once per test
// process, and returns the name pods use with imagePullPolicy: Never.
func K8sGuestImage(tb testing.TB) string {
	tb.Helper()
	bin := GuestBinary(tb)
	k8sGuestImage.once.Do(func() {
		b, err := os.ReadFile(bin)
		if err != nil {
			k8sGuestImage.err = err
			return
		}
		script, err := k8sTestbedScript()
		if err != nil {
			k8sGuestImage.err = err
			return
		}
		sum := sha256.Sum256(b)
		tag := "execlaw-guest:test-" + hex.EncodeToString(sum[:6])
		archive := filepath.Join(tb.TempDir(), "guest.tar")
		out, err := exec.Command("bash", script, "image", "docker.io/library/"+tag, bin, archive).CombinedOutput()
		if err != nil {
			k8sGuestImage.err = fmt.Errorf("k8s-testbed.sh image: %v\n%s", err, out)
			return
		}
		K8sImportImage(tb, archive)
		k8sGuestImage.ref = tag
	})
	if k8sGuestImage.err != nil {
		tb.Fatal(k8sGuestImage.err)
	}
	return k8sGuestImage.ref
}

var k8sVMImages struct {
	mu    sync.Mutex
	names map[string]string
}

// K8sImageOf writes the test guest image called name (VMImage's "minimal",
// VMImageWithClaudeCode's "agents": build it first) as the OCI archive
// `execlaw image build --oci` makes, imports it into the test cluster once
// per test process, and returns the name pods use: the product's own path
// from a guest image to a session pod.
func K8sImageOf(tb testing.TB, name string) string {
	tb.Helper()
	k8sVMImages.mu.Lock()
	defer k8sVMImages.mu.Unlock()
	if ref, ok := k8sVMImages.names[name]; ok {
		return ref
	}
	guest := GuestBinary(tb)
	dir, unlock := lockedCacheDir(tb)
	st, err := image.NewStore(dir)
	if err != nil {
		unlock()
		tb.Fatal(err)
	}
	m, err := st.Load(name)
	if err != nil {
		unlock()
		tb.Fatalf("the test image %q (build it before K8sImageOf): %v", name, err)
	}
	archive := filepath.Join(tb.TempDir(), name+".oci.tar")
	img, err := st.WriteOCI(context.Background(), m, image.OCIOptions{Path: archive, GuestBinary: guest, Version: "test"})
	unlock()
	if err != nil {
		tb.Fatalf("OCI archive of the test image %q: %v", name, err)
	}
	K8sImportImage(tb, archive)
	os.Remove(archive)
	if k8sVMImages.names == nil {
		k8sVMImages.names = map[string]string{}
	}
	k8sVMImages.names[name] = img.Name
	return img.Name
}

// k8sTestbedScript is the path of scripts/k8s-testbed.sh.
func k8sTestbedScript() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "scripts", "k8s-testbed.sh"), nil
}

// k8sLock takes the test processes' lock on the k8s test bed's cache
// directory, as lockedCacheDir does for the VM images.
func k8sLock() (unlock func(), err error) {
	dir := os.Getenv(K8sCacheEnv)
	if dir == "" {
		dir = filepath.Join("/var/tmp", "execlaw-k8s")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// Not the script's own .lock: it takes that itself.
	f, err := os.OpenFile(filepath.Join(dir, ".tests.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// parseExports reads `export NAME=VALUE` lines (VALUE as bash's printf %q
// writes a path: no quoting beyond backslashes).
func parseExports(s string) map[string]string {
	env := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		name, value, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "export "), "=")
		if !ok || strings.ContainsAny(value, `"'$`) {
			continue
		}
		env[name] = strings.ReplaceAll(value, `\`, "")
	}
	return env
}

// lastLines is the end of s: its last n lines.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
