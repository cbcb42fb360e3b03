package testutil

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/image"
)

// ClaudeCodeCLI installs the pinned Claude Code CLI (image.ClaudeCodeVersion,
// from npm) on the host, once per machine, next to the test images, and
// returns the path of its claude executable. It runs on the host's Node.js:
// with the process driver, tests drive the real CLI without a VM.
func ClaudeCodeCLI(tb testing.TB) string {
	tb.Helper()
	dir, unlock := lockedCacheDir(tb)
	defer unlock()
	prefix := filepath.Join(dir, "claude-code-"+image.ClaudeCodeVersion)
	bin := filepath.Join(prefix, "bin", "claude")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Into a fresh directory, renamed into place when complete, so an
	// interrupted install is never taken for a finished one.
	tmp, err := os.MkdirTemp(dir, ".claude-code-")
	if err != nil {
		tb.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	if _, err := image.InstallClaudeCode(ctx, tmp, image.ClaudeCodeVersion); err != nil {
		tb.Fatalf("installing Claude Code for the tests (needs npm and the npm registry): %v", err)
	}
	os.RemoveAll(prefix)
	if err := os.Rename(tmp, prefix); err != nil {
		tb.Fatal(err)
	}
	return bin
}
