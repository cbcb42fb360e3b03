package testutil

import (
	"testing"

	"github.com/execlaw/execlaw/internal/image"
)

// VMImageWithGit is VMImage with git installed (the "minimal-git"
// profile): the image for tests of sessions that start from a repository.
// It is built and kept like VMImage's, sharing its kernel.
func VMImageWithGit(tb testing.TB) image.Boot {
	tb.Helper()
	return buildVMImage(tb, "minimal-git", "minimal-git", TestKernel, image.AgentSpec{})
}
