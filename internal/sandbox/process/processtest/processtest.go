// Package processtest starts process sandboxes for tests of what runs in
// one (agents, adapters): the real execlaw-guest on the host.
package processtest

import (
	"context"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/process"
	"github.com/execlaw/execlaw/internal/testutil"
)

// Start starts a process sandbox with no network in a temporary directory,
// stopped when the test ends.
func Start(t *testing.T, sessionID string) sandbox.Sandbox {
	t.Helper()
	d, err := process.New(process.Config{GuestBinary: testutil.GuestBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	sb, err := d.Start(ctx, sandbox.Spec{SessionID: sessionID, Dir: t.TempDir(), Network: "none"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sb.Stop(ctx); err != nil {
			t.Errorf("stop sandbox: %v", err)
		}
	})
	return sb
}
