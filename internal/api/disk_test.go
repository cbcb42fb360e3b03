package api_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/testutil"
)

// smallDisk mounts a tmpfs of size bytes for a test's data directory: a
// disk that a test can really fill.
func smallDisk(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)); err != nil {
		t.Fatalf("mount a small tmpfs (the test needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// Below the free-space floor a new session is refused; a session whose
// guest fills the disk past the floor is ended with an event saying why,
// and its transcript is kept.
func TestDiskFloor(t *testing.T) {
	dir := smallDisk(t, 96<<20)
	fake := llmtest.NewAnthropic(llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash",
		Input: `{"command":"head -c 60000000 /dev/zero > fill; sleep 60"}`}}}).Attach(t)
	h := apitest.New(t, apitest.Options{DataDir: dir, MinFreeDisk: 48 << 20, DiskCheckInterval: 50 * time.Millisecond})
	s := h.AnthropicSession(fake, nil)
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "fill the disk")
	v := h.WaitState(s.ID, "stopped")
	st.WaitType(t, apitest.Wait, event.Exit, 1)
	if !strings.Contains(v.Error+st.Events()[len(st.Events())-1].Field("reason"), "disk is almost full") {
		t.Fatalf("the session ended, but not for the disk: %s", testutil.Summary(st.Events()))
	}
	if _, err := os.Stat(filepath.Join(dir, "sandboxes", s.ID)); !os.IsNotExist(err) {
		t.Errorf("the session's directory is still there: %v", err)
	}

	// Now fill the disk from outside: a new session is refused, clearly.
	if err := os.WriteFile(filepath.Join(dir, "ballast"), make([]byte, 60<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	r := h.Do("POST", "/api/sessions", map[string]any{"provider": "anthropic", "apiKey": "sk-ant-x", "model": "claude-sonnet-4-20250514", "baseUrl": fake.BaseURL()}, nil)
	if r.Status != http.StatusServiceUnavailable || !strings.Contains(string(r.Body), "disk is almost full") {
		t.Fatalf("create below the floor: %d %s", r.Status, r.Body)
	}
	md := h.Must(http.StatusOK, "GET", "/api/sessions/"+s.ID+"/transcript", nil)
	if !strings.Contains(string(md.Body), "fill the disk") {
		t.Errorf("transcript lost: %.300s", md.Body)
	}
}
