package session

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/agent/builtin"
	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/hostinfo"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/store"
)

// vmDriver stands in for a VM driver: its sandboxes start at once and hold
// no memory, but each reserves its guest memory plus an overhead, as a VM
// whose guest has not touched its memory yet.
type vmDriver struct{ overheadMiB int }

func (d vmDriver) Name() string   { return "fake-vm" }
func (d vmDriver) Isolated() bool { return true }
func (d vmDriver) ReservedMiB(spec sandbox.Spec) int {
	return spec.MemoryMiB + d.overheadMiB
}
func (d vmDriver) Start(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	return &idleSandbox{done: make(chan struct{})}, nil
}

type idleSandbox struct{ done chan struct{} }

func (s *idleSandbox) Guest() *guest.Client {
	return guest.NewClient(func(context.Context) (net.Conn, error) { return nil, errors.New("no guest") })
}
func (s *idleSandbox) Workspace() string              { return "/workspace" }
func (s *idleSandbox) Done() <-chan struct{}          { return s.done }
func (s *idleSandbox) ExitError() error               { return nil }
func (s *idleSandbox) Stop(ctx context.Context) error { return nil }

func newAdmitManager(t *testing.T, cfg Config, d sandbox.Driver) *Manager {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	agents, err := agent.NewRegistry(builtin.Kind)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Agents, cfg.DataDir = agents, t.TempDir()
	m := NewManager(cfg, st, d, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		m.Close(ctx)
		st.Close()
	})
	return m
}

// create starts a session of memMiB for user and waits for its boot to end.
func create(t *testing.T, m *Manager, user string, memMiB int) error {
	t.Helper()
	v, err := m.Create(context.Background(), User{ID: user}, CreateRequest{
		Provider: "anthropic", APIKey: "k", Model: "claude-sonnet-4-20250514", MemoryMiB: &memMiB,
	})
	if err != nil {
		return err
	}
	m.mu.Lock()
	s := m.sessions[v.ID]
	m.mu.Unlock()
	<-s.ready
	if !s.stateIs(StateActive) {
		t.Fatalf("session %s did not become active", v.ID)
	}
	return nil
}

// The memory gate counts the memory every running VM may take, not only
// what is touched now: two idle VMs that would together pass the limit are
// not both admitted, though the host has plenty free. Overcommit lets them.
func TestMemoryGateCountsDeclaredMemory(t *testing.T) {
	mem, err := hostinfo.ReadMemory()
	if err != nil {
		t.Fatal(err)
	}
	limit := float64(mem.TotalMiB) * 0.9
	// One fits, two do not.
	each := min(int(limit*0.6), MaxMemoryMiB-256)
	if float64(mem.UsedMiB()+int64(each)+192) > limit || 2*float64(each+192) <= limit {
		t.Skipf("host memory %+v does not allow the test's sizes", mem)
	}
	m := newAdmitManager(t, Config{MaxSessions: 10, MemoryLimitPercent: 90}, vmDriver{overheadMiB: 192})
	if err := create(t, m, "alice", each); err != nil {
		t.Fatalf("first VM of %d MiB: %v", each, err)
	}
	err = create(t, m, "alice", each)
	var le *LimitError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "not enough host memory") || !strings.Contains(err.Error(), "may use") {
		t.Fatalf("second VM of %d MiB: %v; want the committed-memory refusal", each, err)
	}
	t.Log(err)

	m2 := newAdmitManager(t, Config{MaxSessions: 10, MemoryLimitPercent: 90, MemoryOvercommit: 2}, vmDriver{overheadMiB: 192})
	for i := range 2 {
		if err := create(t, m2, "alice", each); err != nil {
			t.Fatalf("VM %d with overcommit 2: %v", i, err)
		}
	}
}

// One user cannot take every slot: past MaxSessionsPerUser they are
// refused with a UserLimitError (a LimitError too), while another user can
// still start sessions.
func TestPerUserLimit(t *testing.T) {
	m := newAdmitManager(t, Config{MaxSessions: 4, MaxSessionsPerUser: 2}, vmDriver{})
	for range 2 {
		if err := create(t, m, "alice", 256); err != nil {
			t.Fatal(err)
		}
	}
	err := create(t, m, "alice", 256)
	var ue *UserLimitError
	var le *LimitError
	if !errors.As(err, &ue) || ue.Limit != 2 || !errors.As(err, &le) || !strings.Contains(err.Error(), "2 sessions") {
		t.Fatalf("alice's third session: %v", err)
	}
	for range 2 {
		if err := create(t, m, "bob", 256); err != nil {
			t.Fatalf("bob: %v", err)
		}
	}
	// The server is full now: that is the global limit, not bob's.
	if err := create(t, m, "carol", 256); !errors.As(err, &le) || errors.As(err, &ue) {
		t.Fatalf("a fifth session: %v", err)
	}
}

// clusterDriver is vmDriver whose sandboxes run on other machines (the
// Kubernetes driver's pods).
type clusterDriver struct{ vmDriver }

func (clusterDriver) RunsElsewhere() bool { return true }

// Sandboxes that run elsewhere take none of this host's memory: the gate
// that refuses a VM here lets a cluster's pod through, while the session
// limits still hold.
func TestMemoryGateLeavesClusterSandboxes(t *testing.T) {
	cfg := Config{MaxSessions: 2, MemoryLimitPercent: 0.01} // no VM fits under 0.01%
	if err := create(t, newAdmitManager(t, cfg, vmDriver{}), "alice", 256); err == nil || !strings.Contains(err.Error(), "not enough host memory") {
		t.Fatalf("a VM under a 0.01%% memory limit: %v; want the memory refusal", err)
	}
	m := newAdmitManager(t, cfg, clusterDriver{})
	for range 2 {
		if err := create(t, m, "alice", 4096); err != nil {
			t.Fatalf("a pod: %v", err)
		}
	}
	var le *LimitError
	if err := create(t, m, "alice", 256); !errors.As(err, &le) || !strings.Contains(err.Error(), "at most 2 sessions") {
		t.Fatalf("a third pod on a server of 2 sessions: %v", err)
	}
}
