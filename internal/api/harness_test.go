package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/api"
	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/sandbox/process"
	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/store"
	"github.com/execlaw/execlaw/internal/testutil"
	"github.com/execlaw/execlaw/web"
)

const wait = 30 * time.Second

// harness is a real server: SQLite in a temp data dir, the session manager
// with the process sandbox driver running the real execlaw-guest, the HTTP
// API on a loopback listener, and a fake LLM provider.
type harness struct {
	t       testing.TB
	dataDir string
	opts    harnessOptions

	store *store.Store
	mgr   *session.Manager
	srv   *api.Server
	ts    *httptest.Server
}

type harnessOptions struct {
	auth        api.Auth
	maxSessions int
	memPercent  float64
	llmRetries  int
	maxSteps    int
	heartbeat   time.Duration
}

func newHarness(t testing.TB, opts harnessOptions) *harness {
	t.Helper()
	if opts.auth.Mode == "" {
		opts.auth = api.Auth{Mode: api.AuthToken, Token: "test-token"}
	}
	h := &harness{t: t, dataDir: t.TempDir(), opts: opts}
	h.start()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) start() {
	t := h.t
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(h.dataDir, "execlaw.db"))
	if err != nil {
		t.Fatal(err)
	}
	driver, err := process.New(process.Config{GuestBinary: testutil.GuestBinary(t), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	mgr := session.NewManager(session.Config{
		DataDir: h.dataDir, MaxSessions: h.opts.maxSessions, MemoryLimitPercent: h.opts.memPercent,
		LLMRetries: h.opts.llmRetries, MaxSteps: h.opts.maxSteps, StopTimeout: 10 * time.Second,
	}, st, driver, log)
	if err := mgr.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	mgr.Start()
	h.store, h.mgr = st, mgr
	h.srv = api.NewServer(api.Options{
		Logger: log, Auth: h.opts.auth, Sessions: mgr, Store: st, Models: &llm.Lister{},
		Platform: api.Platform{Sandbox: driver.Name(), Isolated: driver.Isolated(), SandboxReason: "test"},
		Assets:   web.Assets, Heartbeat: h.opts.heartbeat,
	})
	h.ts = httptest.NewServer(h.srv)
}

// stop shuts down like the real server: streams, HTTP, sessions, database.
func (h *harness) stop() {
	if h.ts == nil {
		return
	}
	h.srv.CloseStreams()
	h.ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.mgr.Close(ctx)
	h.store.Close()
	h.ts = nil
}

// kill stops the server without ending its sessions, the way a crash or
// kill -9 leaves things: sandboxes are killed (as the kernel would kill the
// guests with the server) but the database is not told.
func (h *harness) crash() {
	h.srv.CloseStreams()
	h.ts.Close()
	// Closing the store first means nothing the manager does afterwards can
	// reach the database, like a process that is gone.
	h.store.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.mgr.Close(ctx)
	h.ts = nil
}

func (h *harness) restart() {
	h.stop()
	h.start()
}

func (h *harness) url(path string) string { return h.ts.URL + path }

// authHeader is what a client of this harness sends.
func (h *harness) authHeader() http.Header {
	hd := http.Header{}
	switch h.opts.auth.Mode {
	case api.AuthToken:
		hd.Set("Authorization", "Bearer "+h.opts.auth.Token)
	case api.AuthExeDev:
		hd.Set("X-ExeDev-UserID", "alice")
		hd.Set("X-ExeDev-Email", "alice@example.com")
	}
	return hd
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// do sends a request with the harness's credentials (unless hdr overrides).
func (h *harness) do(method, path string, body any, hdr http.Header) response {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, h.url(path), rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if hdr == nil {
		hdr = h.authHeader()
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: raw}
}

// must sends a request and fails the test unless it gets want.
func (h *harness) must(want int, method, path string, body any) response {
	h.t.Helper()
	r := h.do(method, path, body, nil)
	if r.status != want {
		h.t.Fatalf("%s %s: got %d, want %d: %s", method, path, r.status, want, r.body)
	}
	return r
}

func (h *harness) create(req map[string]any) session.View {
	h.t.Helper()
	var v session.View
	h.must(http.StatusCreated, "POST", "/api/sessions", req).json(h.t, &v)
	return v
}

func (h *harness) stream(id string, lastEventID string) *testutil.SSEStream {
	h.t.Helper()
	hdr := h.authHeader()
	if lastEventID != "" {
		hdr.Set("Last-Event-ID", lastEventID)
	}
	return testutil.OpenSSE(h.t, http.DefaultClient, h.url("/api/sessions/"+id+"/stream"), hdr)
}

func (h *harness) input(id, msg string) {
	h.t.Helper()
	h.must(http.StatusAccepted, "POST", "/api/sessions/"+id+"/input", map[string]string{"message": msg})
}

// waitState polls a session's status until it reaches state.
func (h *harness) waitState(id, state string) session.View {
	h.t.Helper()
	deadline := time.Now().Add(wait)
	var v session.View
	for time.Now().Before(deadline) {
		h.must(http.StatusOK, "GET", "/api/sessions/"+id+"/status", nil).json(h.t, &v)
		if v.State == state {
			return v
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not a readiness guess
	}
	h.t.Fatalf("session %s did not reach %s; last state %s", id, state, v.State)
	return v
}

func (h *harness) workspace(id string) string {
	return filepath.Join(h.dataDir, "sandboxes", id, "workspace")
}

// anthropicSession creates a session against a fake Anthropic server.
func (h *harness) anthropicSession(fake *llmtest.Server, extra map[string]any) session.View {
	req := map[string]any{"provider": "anthropic", "apiKey": "sk-ant-test-key", "model": "claude-sonnet-4-20250514", "baseUrl": fake.BaseURL()}
	for k, v := range extra {
		req[k] = v
	}
	return h.create(req)
}

// types lists the event types in order.
func types(events []testutil.SSEEvent) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Type
	}
	return out
}

// indexOf finds the first event of a type at or after from; -1 if none.
func indexOf(events []testutil.SSEEvent, typ string, from int) int {
	for i := from; i < len(events); i++ {
		if events[i].Type == typ {
			return i
		}
	}
	return -1
}
