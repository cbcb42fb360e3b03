package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/testutil"
)

func TestServeFlags(t *testing.T) {
	env := map[string]string{
		"EXECLAW_LISTEN": "127.0.0.1:9999", "EXECLAW_DATA_DIR": "/tmp/x", "EXECLAW_AUTH": "none",
		"EXECLAW_MAX_SESSIONS": "3", "EXECLAW_MEMORY_LIMIT_PERCENT": "80",
	}
	getenv := func(k string) string { return env[k] }
	c, err := parseServeFlags(nil, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9999" || c.DataDir != "/tmp/x" || c.Auth != "none" || c.MaxSessions != 3 || c.MemoryPercent != 80 || c.Sandbox != "auto" {
		t.Fatalf("from env: %+v", c)
	}
	// Flags win over the environment.
	c, err = parseServeFlags([]string{"--listen", "127.0.0.1:1234", "--max-sessions", "7"}, getenv, io.Discard)
	if err != nil || c.Listen != "127.0.0.1:1234" || c.MaxSessions != 7 {
		t.Fatalf("flags over env: %+v %v", c, err)
	}
	// Defaults.
	c, err = parseServeFlags(nil, func(string) string { return "" }, io.Discard)
	if err != nil || c.Listen != "127.0.0.1:8000" || c.DataDir != "./data" || c.Auth != "token" || c.MaxSessions != 10 {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	for _, args := range [][]string{
		{"--auth", "none", "--listen", "0.0.0.0:8000"},
		{"--auth", "magic"},
		{"--max-sessions", "0"},
		{"--memory-limit-percent", "150"},
		{"--sandbox", "docker"},
		{"extra"},
	} {
		if _, err := parseServeFlags(args, func(string) string { return "" }, io.Discard); err == nil && args[0] != "--sandbox" {
			t.Errorf("%v accepted", args)
		}
	}
	if err := run(context.Background(), []string{"bogus"}, getenv, io.Discard, io.Discard); err == nil {
		t.Error("unknown command accepted")
	}
}

// server is a running execlaw binary.
type server struct {
	cmd  *exec.Cmd
	url  string
	out  *testutil.SyncBuffer // its stderr: its log
	done chan error
}

var listening = regexp.MustCompile(`listening on (http://\S+)`)

func startServer(t *testing.T, bin, dataDir string, args ...string) *server {
	t.Helper()
	return startServerCmd(t, exec.Command(bin, append([]string{"serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--auth", "none"}, args...)...))
}

// startServerCmd starts the server cmd runs, and waits for its address.
func startServerCmd(t *testing.T, cmd *exec.Cmd) *server {
	t.Helper()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errBuf := &testutil.SyncBuffer{}
	cmd.Stderr = errBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, out: errBuf, done: make(chan error, 1)}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(30 * time.Second)
	for s.url == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("server exited before listening: %s", errBuf.String())
			}
			if m := listening.FindStringSubmatch(line); m != nil {
				s.url = m[1]
			}
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("server did not start: %s", errBuf.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

// terminate stops the server with SIGTERM, as systemd or the kubelet does,
// and says how that went unless it exited 0 within timeout.
func (s *server) terminate(timeout time.Duration) error {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			return fmt.Errorf("the server's exit after SIGTERM: %v\n%s", err, s.out)
		}
		return nil
	case <-time.After(timeout):
		return errors.New("the server did not stop on SIGTERM")
	}
}

func (s *server) post(t *testing.T, path string, body any) []byte {
	t.Helper()
	raw, _ := json.Marshal(body)
	resp, err := http.Post(s.url+path, "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
	}
	return b
}

// The real binary, killed with SIGKILL in the middle of a session: its guest
// dies with it, and the next start replays the transcript unchanged and has
// the session paused, to resume cold on its files once given its key again
// (keys live in memory only). A SIGTERM then pauses the sessions and exits
// cleanly, leaving no process.
func TestKilledServerLosesNothing(t *testing.T) {
	bin := testutil.Binary(t, "execlaw")
	testutil.GuestBinary(t) // next to execlaw, where serve looks for it
	fake := llmtest.NewAnthropic(
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"echo persisted > note.txt; cat note.txt"}`}}},
		llmtest.Turn{Text: "Wrote the note."},
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"cat note.txt"}`}}},
		llmtest.Turn{Text: "Read the note."},
	).Attach(t)
	dataDir := t.TempDir()
	srv := startServer(t, bin, dataDir)
	var s struct{ ID string }
	json.Unmarshal(srv.post(t, "/api/sessions", map[string]any{
		"provider": "anthropic", "apiKey": "k", "model": "claude-sonnet-4-20250514", "baseUrl": fake.BaseURL(),
	}), &s)
	st := testutil.OpenSSE(t, http.DefaultClient, srv.url+"/api/sessions/"+s.ID+"/stream", nil)
	srv.post(t, "/api/sessions/"+s.ID+"/input", map[string]string{"message": "write a note"})
	st.WaitType(t, 30*time.Second, event.AgentIdle, 1)
	before := st.Events()
	sandboxDir := filepath.Join(dataDir, "sandboxes", s.ID)
	if len(processesMentioning(sandboxDir)) == 0 {
		t.Fatal("no guest process while the session runs")
	}

	srv.cmd.Process.Signal(syscall.SIGKILL)
	<-srv.done
	waitGone(t, sandboxDir)

	srv = startServer(t, bin, dataDir)
	replay := testutil.OpenSSE(t, http.DefaultClient, srv.url+"/api/sessions/"+s.ID+"/stream", http.Header{"Last-Event-ID": {"0"}})
	replay.WaitEnd(t, 30*time.Second)
	after := replay.Events()
	if len(after) <= len(before) || !reflect.DeepEqual(after[:len(before)], before) {
		t.Fatalf("replay after kill -9 differs:\nbefore %s\nafter  %s", testutil.Summary(before), testutil.Summary(after))
	}
	if last := after[len(after)-1]; last.Type != event.Status || last.Field("state") != "paused" || !strings.Contains(last.Field("message"), "killed") {
		t.Fatalf("last event after restart: %s %s", last.Type, last.Data)
	}
	// Without its key it cannot resume; with it, it does, cold, on its files.
	resp, err := http.Post(srv.url+"/api/sessions/"+s.ID+"/input", "application/json", strings.NewReader(`{"message":"read the note"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), `"keyNeeded":true`) {
		t.Fatalf("input to a session whose key is gone: %d %s", resp.StatusCode, body)
	}
	srv.post(t, "/api/sessions/"+s.ID+"/resume", map[string]string{"apiKey": "k"})
	srv.post(t, "/api/sessions/"+s.ID+"/input", map[string]string{"message": "read the note"})
	resumed := testutil.OpenSSE(t, http.DefaultClient, srv.url+"/api/sessions/"+s.ID+"/stream", http.Header{"Last-Event-ID": {strconv.FormatInt(after[len(after)-1].ID, 10)}})
	if e := resumed.WaitType(t, 30*time.Second, event.Resumed, 1); e.Field("kind") != event.ResumeCold {
		t.Fatalf("resumed: %s", e.Data)
	}
	resumed.WaitType(t, 30*time.Second, event.AgentIdle, 1)
	if i := slices.IndexFunc(resumed.Events(), func(e testutil.SSEEvent) bool { return e.Type == event.ToolResult }); i < 0 ||
		resumed.Events()[i].Field("output") != "persisted\n" {
		t.Fatalf("the note after a cold resume: %s", testutil.Summary(resumed.Events()))
	}

	// Graceful stop: SIGTERM pauses the sessions (keeping their files),
	// exit status 0, no process left.
	json.Unmarshal(srv.post(t, "/api/sessions", map[string]any{
		"provider": "anthropic", "apiKey": "k", "model": "claude-sonnet-4-20250514", "baseUrl": fake.BaseURL(),
	}), &s)
	if err := srv.terminate(time.Minute); err != nil {
		t.Fatal(err)
	}
	waitGone(t, filepath.Join(dataDir, "sandboxes"))
	if strings.Contains(srv.out.String(), `"k"`) {
		t.Error("log mentions the API key")
	}
}

func processesMentioning(s string) []string {
	var found []string
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), s) {
			found = append(found, p)
		}
	}
	return found
}

// waitGone waits until no process mentions dir.
func waitGone(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(processesMentioning(dir)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("processes still running for %s: %v", dir, processesMentioning(dir))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two servers on one data directory would sweep each other's sandboxes:
// the second refuses to start, naming the first.
func TestSecondServerOnDataDirRefused(t *testing.T) {
	bin := testutil.Binary(t, "execlaw")
	testutil.GuestBinary(t)
	dataDir := t.TempDir()
	first := startServer(t, bin, dataDir)
	out, err := exec.Command(bin, "serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--auth", "none", "--sandbox", "process").CombinedOutput()
	if err == nil || !strings.Contains(string(out), fmt.Sprintf("another execlaw serve (pid %d)", first.cmd.Process.Pid)) {
		t.Fatalf("a second server on the same data directory: %v\n%s", err, out)
	}
	if resp, err := http.Get(first.url + "/api/health"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the first server after the second's attempt: %v", err)
	}
}
