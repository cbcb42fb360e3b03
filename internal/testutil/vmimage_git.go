package testutil

import (
	"context"
	"io"
	"os"
	"testing"

	"github.com/execlaw/execlaw/internal/image"
)

// VMImageWithGit is VMImage with git installed (the "minimal-git"
// profile): the image for tests of sessions that start from a repository.
// It is built and kept like VMImage's, sharing its kernel.
func VMImageWithGit(tb testing.TB) image.Boot {
	tb.Helper()
	const name = "minimal-git"
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
	if _, err := image.Build(context.Background(), image.BuildOptions{
		DataDir: dir, Name: name, Profile: "minimal-git", GuestBinary: GuestBinary(tb), Version: "test", Out: out,
		KernelSource: TestKernel,
	}); err != nil {
		tb.Fatalf("building the test guest image with git (needs root, debootstrap and apt): %v", err)
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
