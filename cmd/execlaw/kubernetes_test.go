package main

import (
	"context"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/store"
)

func TestParseServerFrom(t *testing.T) {
	p, err := parseServerFrom("10.0.0.5, 192.0.2.0/24")
	if err != nil || !slices.Equal(p.CIDRs, []netip.Prefix{netip.MustParsePrefix("10.0.0.5/32"), netip.MustParsePrefix("192.0.2.0/24")}) || p.PodLabels != nil {
		t.Errorf("CIDRs: %+v, %v", p, err)
	}
	p, err = parseServerFrom(defaultServerPods)
	if err != nil || len(p.PodLabels) != 2 || p.PodLabels["app.kubernetes.io/component"] != "server" || p.CIDRs != nil {
		t.Errorf("labels: %+v, %v", p, err)
	}
	if p, err := parseServerFrom(""); err != nil || len(p.CIDRs)+len(p.PodLabels) != 0 {
		t.Errorf("empty: %+v, %v", p, err)
	}
	for _, bad := range []string{"app in (a,b)", "!app", "10.0.0.0/33,x"} {
		if _, err := parseServerFrom(bad); err == nil {
			t.Errorf("%q taken", bad)
		}
	}
}

func TestK8sInstanceIsKept(t *testing.T) {
	dir := t.TempDir()
	if id, err := loadOrCreateK8sInstance(dir, false); err != nil || id != "" {
		t.Fatalf("doctor made one: %q, %v", id, err)
	}
	id, err := loadOrCreateK8sInstance(dir, true)
	if err != nil || len(id) != 8 {
		t.Fatalf("made %q, %v", id, err)
	}
	if again, err := loadOrCreateK8sInstance(dir, true); err != nil || again != id {
		t.Errorf("not kept: %q then %q (%v)", id, again, err)
	}
	if other, _ := loadOrCreateK8sInstance(t.TempDir(), true); other == id {
		t.Error("two data directories share an instance id")
	}
	if err := os.WriteFile(filepath.Join(dir, k8sInstanceFile), []byte("Not-An-Id\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOrCreateK8sInstance(dir, true); err == nil {
		t.Error("a damaged instance file was taken")
	}
}

func TestServeFlagsK8s(t *testing.T) {
	env := map[string]string{
		"EXECLAW_SANDBOX": "kubernetes", "EXECLAW_K8S_NAMESPACE": "ns", "EXECLAW_K8S_POD_TEMPLATE": "/t.yaml",
		"EXECLAW_K8S_IMAGE": "img:1", "EXECLAW_KUBECONFIG": "/kc", "EXECLAW_K8S_SERVER_FROM": "app=x", "EXECLAW_K8S_CLUSTER_DNS": "true",
		"EXECLAW_K8S_IMAGE_AGENTS": "claude-code",
	}
	c, err := parseServeFlags([]string{"--k8s-image", "img:2"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := k8sConfig{Kubeconfig: "/kc", Namespace: "ns", PodTemplate: "/t.yaml", Image: "img:2", ServerFrom: "app=x", ClusterDNS: true, ImageAgents: "claude-code"}
	if c.Sandbox != "kubernetes" || c.K8s != want {
		t.Errorf("read %s %+v, want %+v", c.Sandbox, c.K8s, want)
	}
	env["EXECLAW_K8S_CLUSTER_DNS"] = "maybe"
	if _, err := parseServeFlags(nil, func(k string) string { return env[k] }, io.Discard); err == nil || !strings.Contains(err.Error(), "EXECLAW_K8S_CLUSTER_DNS") {
		t.Errorf("a bad EXECLAW_K8S_CLUSTER_DNS: %v", err)
	}
}

func TestParseImageAgents(t *testing.T) {
	for in, want := range map[string]string{
		"": "", " claude-code ": "claude-code", "nullclaw,claude-code,nullclaw": "nullclaw,claude-code", ",,": "",
	} {
		got, err := parseImageAgents(in)
		if err != nil || strings.Join(got, ",") != want {
			t.Errorf("parseImageAgents(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	// The built-in agent runs on the server; anything else is no CLI.
	for _, in := range []string{"builtin", "claude", "claude-code;rm -rf /", "CLAUDE-CODE", "claude-code,\x00"} {
		if got, err := parseImageAgents(in); err == nil {
			t.Errorf("parseImageAgents(%q) = %v, want an error", in, got)
		}
	}
}

// TestStoreSessionsOver: a session's workspace claim goes when the session
// ends, and stays while it runs or is paused (a pause's Stop comes while
// the record still says active).
func TestStoreSessionsOver(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := &storeSessions{st: st}
	if over, err := s.Over(ctx, "s_unknown"); err != nil || !over {
		t.Errorf("an unknown session: over %v, %v", over, err)
	}
	if err := st.EnsureUser(ctx, "u1", "u1@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateSession(ctx, store.Session{ID: "s_1", UserID: "u1", State: session.StateActive}); err != nil {
		t.Fatal(err)
	}
	if owner, err := s.Owner(ctx, "s_1"); err != nil || owner != "u1" {
		t.Errorf("owner %q, %v", owner, err)
	}
	for state, want := range map[string]bool{
		session.StateActive: false, session.StatePausing: false, session.StatePaused: false, session.StateResuming: false,
		session.StateStopping: true, session.StateStopped: true, session.StateError: true,
	} {
		if err := st.SetState(ctx, "s_1", state, ""); err != nil {
			t.Fatal(err)
		}
		if over, err := s.Over(ctx, "s_1"); err != nil || over != want {
			t.Errorf("%s: over %v (%v), want %v", state, over, err, want)
		}
	}
	if _, err := (&storeSessions{}).Over(ctx, "s_1"); err == nil {
		t.Error("no store, yet an answer")
	}
}

func TestNotIsolatedWarning(t *testing.T) {
	if w := notIsolatedWarning("kubernetes"); !strings.Contains(w, "runtimeClassName") {
		t.Errorf("kubernetes: %s", w)
	}
	if w := notIsolatedWarning("process"); !strings.Contains(w, "process sandbox") {
		t.Errorf("process: %s", w)
	}
}
