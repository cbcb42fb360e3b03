package kubernetes

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/agent/builtin"
	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/store"
)

// TestClusterSessionTakesPooledPod is --warm-pool 1 with this driver: the
// session manager keeps a pod ready, and a new session of the default
// size takes it (a hit) and runs in it, relabelled for the session. With
// room for one sandbox the pool does not refill meanwhile (the test node
// has room for one pod of the default size).
func TestClusterSessionTakesPooledPod(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	d := c.driver("t10", clusterTemplate, nil)
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	agents, err := agent.NewRegistry(builtin.Kind)
	if err != nil {
		t.Fatal(err)
	}
	m := session.NewManager(session.Config{
		DataDir: t.TempDir(), Agents: agents, MaxSessions: 1, MemoryLimitPercent: 90,
		WarmPool: 1, PoolNetwork: "full", EndOnClose: true, StopTimeout: time.Minute,
	}, st, d, slog.New(slog.NewTextHandler(io.Discard, nil)))
	closed := false
	closeAll := func() {
		if closed {
			return
		}
		closed = true
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		m.Close(cctx)
		st.Close()
	}
	t.Cleanup(closeAll)
	m.Start()

	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("never %s (pool %+v)", what, m.Pool())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("a pooled pod ready", func() bool { return m.Pool().Ready == 1 })
	pods, err := c.cs.CoreV1().Pods(c.ns).List(ctx, metav1.ListOptions{LabelSelector: LabelPool + "=" + poolReady})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pooled pods: %d, %v", len(pods.Items), err)
	}
	pooledPod := pods.Items[0].Name

	user := session.User{ID: "alice"}
	begin := time.Now()
	v, err := m.Create(ctx, user, session.CreateRequest{Provider: "anthropic", APIKey: "k", Model: "claude-sonnet-4-20250514", Network: "full"})
	if err != nil {
		t.Fatal(err)
	}
	var state string
	waitFor("an active session", func() bool {
		view, err := m.View(ctx, user, v.ID)
		state = view.State
		return err == nil && state != session.StateCreating && state != session.StateBooting
	})
	if state != session.StateActive {
		t.Fatalf("session state %s", state)
	}
	t.Logf("session active %v after Create, from the pool", time.Since(begin).Round(time.Millisecond))
	if p := m.Pool(); p.Hits != 1 || p.Misses != 0 {
		t.Errorf("pool %+v, want one hit", p)
	}
	pod, err := c.cs.CoreV1().Pods(c.ns).Get(ctx, pooledPod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Labels[LabelSession] != v.ID || pod.Labels[LabelPool] != "" || !strings.HasPrefix(pod.Labels[LabelPooledAs], poolPrefix) {
		t.Errorf("the pooled pod's labels after the session took it: %v", pod.Labels)
	}

	closeAll()
	if left := c.left("t10"); left != "" {
		t.Errorf("left after Close: %s", left)
	}
}
