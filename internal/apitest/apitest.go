// Package apitest runs a complete ExeClaw server for tests: SQLite in a
// temporary data directory, the session manager with the process sandbox
// running the real execlaw-guest, and the HTTP API on a loopback listener.
// Only the LLM is a stand-in (internal/llm/llmtest).
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/agent/builtin"
	"github.com/execlaw/execlaw/internal/api"
	"github.com/execlaw/execlaw/internal/egress"
	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/metrics"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/process"
	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/store"
	"github.com/execlaw/execlaw/internal/testutil"
	"github.com/execlaw/execlaw/web"
)

// Wait is how long helpers wait for something to happen.
const Wait = 30 * time.Second

// Options tune the server; zero values mean the server's defaults, and token
// auth with the token "test-token".
type Options struct {
	Auth        api.Auth
	MaxSessions int
	MemPercent  float64
	LLMRetries  int
	MaxSteps    int
	Heartbeat   time.Duration
	Platform    api.Platform
	// Driver replaces the default process driver (built from the test guest binary).
	Driver sandbox.Driver
	// LLMClient carries model calls and model lists (default
	// llm.DefaultHTTPClient, whose outbound policy allows loopback, where
	// the llmtest fakes run).
	LLMClient *http.Client
	// Agents are the kinds of agent sessions may use, the default first
	// (default: the built-in agent alone).
	Agents []agent.Kind
	// Email and ExeDev configure mailing transcripts and creating exe.dev VMs.
	Email  api.EmailOptions
	ExeDev api.ExeDevOptions
	// HookTimeout bounds the session manager's idle hook (default: its own).
	HookTimeout time.Duration
	// EventLogQuota bounds each session's event log (default: the manager's).
	EventLogQuota int64
	// MinFreeDisk and DiskCheckInterval set the disk floor (default none).
	MinFreeDisk       uint64
	DiskCheckInterval time.Duration
	// DataDir replaces the test's temporary data directory.
	DataDir string
	// PauseOnStop pauses running sessions when the harness stops, as the
	// server does at SIGTERM; by default they end, which is quicker.
	PauseOnStop bool
	// PauseAfter, MaxPaused and Keys configure pausing (default: never by
	// itself, no cap, keys in memory only).
	PauseAfter time.Duration
	MaxPaused  int
	Keys       session.KeyStore
	// MetricsElsewhere leaves /metrics off the API's address.
	MetricsElsewhere bool
	// Log, when set, receives the server's log (debug level), for tests
	// that check what is logged.
	Log io.Writer
	// AllowedHosts replaces the server's default (loopback names only).
	AllowedHosts *api.HostPolicy
	// Timeouts are the HTTP server's (zero fields: the real server's).
	Timeouts api.Timeouts
	// TLS serves HTTPS with httptest's certificate; Do and Stream trust it.
	TLS bool
	// MaxSessionsPerUser and MemoryOvercommit are the session manager's.
	MaxSessionsPerUser int
	MemoryOvercommit   float64
	// WarmPool keeps that many VMs booted for new sessions of the default
	// size, on PoolNetwork (default full).
	WarmPool    int
	PoolNetwork string
	// Terminal and Preview are the server's; PreviewPorts starts that many
	// --preview-listen listeners on loopback (Harness.PreviewTS), and a
	// preview secret is made when none is given.
	Terminal     api.TerminalOptions
	Preview      api.PreviewOptions
	PreviewPorts int
	// Files bounds the workspace routes; RepoPolicy and RepoCA are where
	// repositories may be cloned from and what their clones trust.
	Files      api.FilesOptions
	RepoPolicy *egress.Policy
	RepoCA     []byte
}

// Harness is one running server.
type Harness struct {
	T       testing.TB
	DataDir string
	Opts    Options

	Store   *store.Store
	Mgr     *session.Manager
	Srv     *api.Server
	TS      *httptest.Server
	Metrics *metrics.Metrics
	// PreviewTS are the preview listeners (Options.PreviewPorts).
	PreviewTS []*httptest.Server
}

// New starts a server and stops it when the test ends.
func New(t testing.TB, opts Options) *Harness {
	t.Helper()
	if opts.Auth.Mode == "" {
		opts.Auth = api.Auth{Mode: api.AuthToken, Token: "test-token"}
	}
	h := &Harness{T: t, DataDir: opts.DataDir, Opts: opts}
	if h.DataDir == "" {
		h.DataDir = t.TempDir()
	}
	h.Start()
	t.Cleanup(h.Stop)
	return h
}

// Start starts the server on the harness's data directory.
func (h *Harness) Start() {
	t := h.T
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if h.Opts.Log != nil {
		w := h.Opts.Log
		if testing.Verbose() {
			w = io.MultiWriter(w, os.Stderr)
		}
		log = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(h.DataDir, "execlaw.db"))
	if err != nil {
		t.Fatal(err)
	}
	driver := h.Opts.Driver
	if driver == nil {
		var err error
		if driver, err = process.New(process.Config{GuestBinary: testutil.GuestBinary(t), Logger: log}); err != nil {
			t.Fatal(err)
		}
	}
	kinds := h.Opts.Agents
	if len(kinds) == 0 {
		kinds = []agent.Kind{builtin.Kind}
	}
	agents, err := agent.NewRegistry(kinds...)
	if err != nil {
		t.Fatal(err)
	}
	met := metrics.New()
	mgr := session.NewManager(session.Config{
		Agents:  agents,
		DataDir: h.DataDir, MaxSessions: h.Opts.MaxSessions, MemoryLimitPercent: h.Opts.MemPercent,
		MaxSessionsPerUser: h.Opts.MaxSessionsPerUser, MemoryOvercommit: h.Opts.MemoryOvercommit,
		LLMRetries: h.Opts.LLMRetries, MaxSteps: h.Opts.MaxSteps, StopTimeout: 10 * time.Second, LLMClient: h.Opts.LLMClient,
		Observer: met, HookTimeout: h.Opts.HookTimeout, EventLogQuota: h.Opts.EventLogQuota,
		MinFreeDisk: h.Opts.MinFreeDisk, DiskCheckInterval: h.Opts.DiskCheckInterval,
		EndOnClose: !h.Opts.PauseOnStop, PauseAfter: h.Opts.PauseAfter, MaxPaused: h.Opts.MaxPaused, Keys: h.Opts.Keys,
		RepoPolicy: h.Opts.RepoPolicy, RepoCA: h.Opts.RepoCA, WarmPool: h.Opts.WarmPool, PoolNetwork: h.Opts.PoolNetwork,
	}, st, driver, log)
	if err := mgr.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	met.SetStateSource(mgr.StateCounts)
	mgr.Start()
	h.Store, h.Mgr, h.Metrics = st, mgr, met
	platform := h.Opts.Platform
	if platform.Sandbox == "" {
		platform = api.Platform{Sandbox: driver.Name(), Isolated: driver.Isolated(), SandboxReason: "test", Version: "test"}
	}
	preview := h.Opts.Preview
	var previewLns []net.Listener
	for range h.Opts.PreviewPorts {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		previewLns = append(previewLns, ln)
		preview.Ports = append(preview.Ports, ln.Addr().(*net.TCPAddr).Port)
	}
	if (len(preview.Ports) > 0 || preview.Domain != "") && preview.Secret == nil {
		preview.Secret = bytes.Repeat([]byte("k"), 32)
	}
	h.Srv = api.NewServer(api.Options{
		Logger: log, Auth: h.Opts.Auth, Sessions: mgr, Store: st, Models: &llm.Lister{Client: h.Opts.LLMClient},
		Platform: platform, Assets: web.Assets, Heartbeat: h.Opts.Heartbeat,
		Email: h.Opts.Email, ExeDev: h.Opts.ExeDev, Metrics: met, MetricsElsewhere: h.Opts.MetricsElsewhere,
		AllowedHosts: h.Opts.AllowedHosts, Terminal: h.Opts.Terminal, Preview: preview, Files: h.Opts.Files,
	})
	h.PreviewTS = nil
	for i, ln := range previewLns {
		ts := httptest.NewUnstartedServer(h.Srv.PreviewHandler(preview.Ports[i]))
		ts.Listener.Close()
		ts.Listener = ln
		ts.Start()
		h.PreviewTS = append(h.PreviewTS, ts)
	}
	h.TS = httptest.NewUnstartedServer(h.Srv)
	h.Opts.Timeouts.Configure(h.TS.Config)
	if h.Opts.TLS {
		h.TS.StartTLS()
	} else {
		h.TS.Start()
	}
}

// Client is the HTTP client for this server (it trusts the test
// certificate when the server serves HTTPS).
func (h *Harness) Client() *http.Client {
	if h.Opts.TLS {
		return h.TS.Client()
	}
	return http.DefaultClient
}

// Stop shuts down like the real server: streams, HTTP, sessions, database.
func (h *Harness) Stop() {
	if h.TS == nil {
		return
	}
	h.Srv.CloseStreams()
	h.TS.Close()
	for _, ts := range h.PreviewTS {
		ts.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.Mgr.Close(ctx)
	h.Store.Close()
	h.TS = nil
}

// Crash stops the server the way a kill -9 leaves things: the database is
// closed first, so nothing the server does afterwards reaches it, and then the
// sandboxes are killed, as the kernel kills guests that die with the server.
func (h *Harness) Crash() {
	h.Srv.CloseStreams()
	h.TS.Close()
	h.Store.Close()
	h.Mgr.Abandon()
	h.TS = nil
}

// URL is the server's address plus path.
func (h *Harness) URL(path string) string { return h.TS.URL + path }

// AuthHeader is what a client of this harness sends.
func (h *Harness) AuthHeader() http.Header {
	hd := http.Header{}
	switch h.Opts.Auth.Mode {
	case api.AuthToken:
		hd.Set("Authorization", "Bearer "+h.Opts.Auth.Token)
	case api.AuthExeDev:
		hd.Set("X-ExeDev-UserID", "alice")
		hd.Set("X-ExeDev-Email", "alice@example.com")
	}
	return hd
}

// Response is a finished HTTP exchange.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v.
func (r Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Do sends a request with the harness's credentials (unless hdr is given).
// A body that is not a string or []byte is sent as JSON.
func (h *Harness) Do(method, path string, body any, hdr http.Header) Response {
	h.T.Helper()
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
			h.T.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, h.URL(path), rd)
	if err != nil {
		h.T.Fatal(err)
	}
	if hdr == nil {
		hdr = h.AuthHeader()
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.Client().Do(req)
	if err != nil {
		h.T.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		h.T.Fatal(err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
}

// Must sends a request and fails the test unless it gets want.
func (h *Harness) Must(want int, method, path string, body any) Response {
	h.T.Helper()
	r := h.Do(method, path, body, nil)
	if r.Status != want {
		h.T.Fatalf("%s %s: got %d, want %d: %s", method, path, r.Status, want, r.Body)
	}
	return r
}

// Create creates a session.
func (h *Harness) Create(req map[string]any) session.View {
	h.T.Helper()
	var v session.View
	h.Must(http.StatusCreated, "POST", "/api/sessions", req).JSON(h.T, &v)
	return v
}

// AnthropicSession creates a session against a fake Anthropic server.
func (h *Harness) AnthropicSession(fake *llmtest.Server, extra map[string]any) session.View {
	h.T.Helper()
	req := map[string]any{"provider": "anthropic", "apiKey": "sk-ant-test-key", "model": "claude-sonnet-4-20250514", "baseUrl": fake.BaseURL()}
	for k, v := range extra {
		req[k] = v
	}
	return h.Create(req)
}

// Stream opens a session's event stream, from lastEventID when not empty.
func (h *Harness) Stream(id, lastEventID string) *testutil.SSEStream {
	h.T.Helper()
	hdr := h.AuthHeader()
	if lastEventID != "" {
		hdr.Set("Last-Event-ID", lastEventID)
	}
	return testutil.OpenSSE(h.T, h.Client(), h.URL("/api/sessions/"+id+"/stream"), hdr)
}

// Input sends a message to a session.
func (h *Harness) Input(id, msg string) {
	h.T.Helper()
	h.Must(http.StatusAccepted, "POST", "/api/sessions/"+id+"/input", map[string]string{"message": msg})
}

// WaitState polls a session's status until it reaches state.
func (h *Harness) WaitState(id, state string) session.View {
	h.T.Helper()
	deadline := time.Now().Add(Wait)
	var v session.View
	for time.Now().Before(deadline) {
		h.Must(http.StatusOK, "GET", "/api/sessions/"+id+"/status", nil).JSON(h.T, &v)
		if v.State == state {
			return v
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not a readiness guess
	}
	h.T.Fatalf("session %s did not reach %s; last state %s", id, state, v.State)
	return v
}

// Workspace is the host directory of a process sandbox's workspace.
func (h *Harness) Workspace(id string) string {
	return filepath.Join(h.DataDir, "sandboxes", id, "workspace")
}

// ProcessesMentioning lists host processes whose command line contains s.
func ProcessesMentioning(s string) []int {
	var pids []int
	entries, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range entries {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), s) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			pids = append(pids, pid)
		}
	}
	return pids
}

// AssertNothingLeft waits until no sandbox process or directory of this
// harness remains, and fails the test if some still do at the deadline.
func (h *Harness) AssertNothingLeft() {
	h.T.Helper()
	deadline := time.Now().Add(Wait)
	for {
		pids := ProcessesMentioning(h.DataDir)
		entries, _ := os.ReadDir(filepath.Join(h.DataDir, "sandboxes"))
		if len(pids) == 0 && len(entries) == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.T.Fatalf("left behind: processes %v, sandbox directories %d", pids, len(entries))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
