package testutil

import (
	"testing"
	"time"
)

// Poll checks cond every few milliseconds until it holds, and fails the test
// if it still does not after timeout. Tests wait for readiness this way,
// never by sleeping a guessed time.
func Poll(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not a readiness guess
	}
}
