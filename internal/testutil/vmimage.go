package testutil

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/execlaw/execlaw/internal/image"
)

// TestImageDirEnv overrides where VMImage keeps its images.
const TestImageDirEnv = "EXECLAW_TEST_IMAGES"

var vmImages struct {
	mu   sync.Mutex
	imgs map[string]image.Boot
}

// TestKernel is the kernel the test images boot: the one execlaw builds from
// Debian's kernel source, as new images do by default.
const TestKernel = image.KernelBuilt

// VMImage builds (or brings up to date) the "minimal" guest image for tests
// and returns it. Its kernel and root filesystem are kept between runs in
// /var/tmp/execlaw-test-images (or $EXECLAW_TEST_IMAGES), so only the first
// run on a machine pays for compiling the kernel and for debootstrap (the
// images share both where they can); the initramfs is rebuilt whenever
// execlaw-guest changed. Test processes of different packages share the
// directory under a file lock.
func VMImage(tb testing.TB) image.Boot {
	tb.Helper()
	return buildVMImage(tb, "minimal", "minimal", TestKernel, image.AgentSpec{})
}

// VMImageWithKernel is VMImage with the kernel from source (image.KernelBuilt
// or image.KernelDebian), for comparing the two.
func VMImageWithKernel(tb testing.TB, source string) image.Boot {
	tb.Helper()
	if source == TestKernel {
		return VMImage(tb)
	}
	return buildVMImage(tb, "minimal-"+source, "minimal", source, image.AgentSpec{})
}

// VMImageWithClaudeCode is VMImage plus Claude Code (and the Node.js it runs
// on): the image for tests of in-VM agents.
func VMImageWithClaudeCode(tb testing.TB) image.Boot {
	tb.Helper()
	return buildVMImage(tb, "agents", "minimal", TestKernel, image.AgentSpec{ClaudeCode: true})
}

// VMImageDir is the data directory the test images are built in: its
// images/ holds VMImage's image as "minimal", for a server that boots it.
func VMImageDir(tb testing.TB) string {
	tb.Helper()
	VMImage(tb)
	dir := os.Getenv(TestImageDirEnv)
	if dir == "" {
		dir = filepath.Join("/var/tmp", "execlaw-test-images")
	}
	return dir
}

func buildVMImage(tb testing.TB, name, profile, kernel string, agents image.AgentSpec) image.Boot {
	tb.Helper()
	vmImages.mu.Lock()
	defer vmImages.mu.Unlock()
	if img, ok := vmImages.imgs[name]; ok {
		return img
	}
	dir, unlock := lockedCacheDir(tb)
	defer unlock()

	var out io.Writer = io.Discard
	if testing.Verbose() {
		out = os.Stderr
	}
	_, err := image.Build(context.Background(), image.BuildOptions{
		DataDir: dir, Name: name, Profile: profile, GuestBinary: GuestBinary(tb), Version: "test", Out: out,
		Agents: agents, KernelSource: kernel,
	})
	if err != nil {
		tb.Fatalf("building the test guest image (needs root, debootstrap, apt and, for its kernel, scripts/deps.sh --test): %v", err)
	}
	st, err := image.NewStore(dir)
	if err != nil {
		tb.Fatal(err)
	}
	img, _, err := st.VMImage(name)
	if err != nil {
		tb.Fatal(err)
	}
	if vmImages.imgs == nil {
		vmImages.imgs = map[string]image.Boot{}
	}
	vmImages.imgs[name] = img
	return img
}

// lockedCacheDir returns the directory tests keep what they build between
// runs in (/var/tmp/execlaw-test-images or $EXECLAW_TEST_IMAGES), locked
// against test processes of other packages until unlock is called.
func lockedCacheDir(tb testing.TB) (dir string, unlock func()) {
	tb.Helper()
	dir = os.Getenv(TestImageDirEnv)
	if dir == "" {
		dir = filepath.Join("/var/tmp", "execlaw-test-images")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		tb.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		lock.Close()
		tb.Fatal(err)
	}
	return dir, func() {
		syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
		lock.Close()
	}
}
