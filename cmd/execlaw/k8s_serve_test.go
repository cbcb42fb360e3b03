package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/sandbox/kubernetes"
	"github.com/execlaw/execlaw/internal/testutil"
)

// These tests run the real binary with --sandbox kubernetes against the
// single-node cluster of scripts/k8s-testbed.sh, its session pods running
// the test guest image as `execlaw image build --oci` writes it.

// clusterNS is a namespace of the test cluster for one test, deleted with
// all in it after the test.
type clusterNS struct {
	t    *testing.T
	cs   k8s.Interface
	name string
	kube string // the kubeconfig
}

func newClusterNS(t *testing.T) *clusterNS {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the Kubernetes test cluster (scripts/k8s-testbed.sh)")
	}
	kube := testutil.K8sCluster(t)
	conn, err := kubernetes.Connect(kube)
	if err != nil {
		t.Fatal(err)
	}
	var b [3]byte
	rand.Read(b[:])
	c := &clusterNS{t: t, cs: conn.Client, name: "execlaw-serve-" + hex.EncodeToString(b[:]), kube: kube}
	if _, err := c.cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: c.name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		grace := int64(0)
		_ = c.cs.CoreV1().Namespaces().Delete(context.Background(), c.name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
	})
	return c
}

// serveArgs are serve's flags for sessions in this namespace, running image.
func (c *clusterNS) serveArgs(image string, more ...string) []string {
	c.t.Helper()
	tmpl := filepath.Join(c.t.TempDir(), "pod.yaml")
	if err := os.WriteFile(tmpl, []byte("spec:\n  containers:\n  - name: guest\n    imagePullPolicy: Never\n"), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return append([]string{"--sandbox", "kubernetes", "--kubeconfig", c.kube, "--k8s-namespace", c.name,
		"--k8s-image", image, "--k8s-pod-template", tmpl, "--k8s-server-from", testutil.K8sServerFrom(c.t).String(),
		"--warm-pool", "0"}, more...)
}

// objects names what the cluster holds under a label selector.
func (c *clusterNS) objects(selector string) []string {
	c.t.Helper()
	names, err := kubernetes.ListObjects(context.Background(), c.cs, c.name, selector)
	if err != nil {
		c.t.Fatal(err)
	}
	return names
}

// waitObjects waits until the objects under selector are want (in the
// order objects lists them), and fails saying what is there.
func (c *clusterNS) waitObjects(selector string, want ...string) {
	c.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got := c.objects(selector)
		if strings.Join(got, " ") == strings.Join(want, " ") {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("objects labelled %s: %v, want %v", selector, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sessionPod is the one pod of a session.
func (c *clusterNS) sessionPod(id string) corev1.Pod {
	c.t.Helper()
	pods, err := c.cs.CoreV1().Pods(c.name).List(context.Background(), metav1.ListOptions{LabelSelector: kubernetes.LabelSession + "=" + id})
	if err != nil || len(pods.Items) != 1 {
		c.t.Fatalf("pods of session %s: %v, %v", id, pods, err)
	}
	return pods.Items[0]
}

func (s *server) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	resp, err := http.Get(s.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, b)
	}
}

// sessionView is the part of a session's view these tests read.
type sessionView struct {
	ID, State, Sandbox, Agent, Error string
	Isolated                         bool
}

// createSession starts a session of one vCPU (two fit the test node) and
// waits until it is active.
func (s *server) createSession(t *testing.T, fake *llmtest.Server, extra map[string]any) sessionView {
	t.Helper()
	req := map[string]any{"provider": "anthropic", "apiKey": "sk-ant-k8s-serve-test-key", "model": "claude-sonnet-4-20250514",
		"baseUrl": fake.BaseURL(), "vcpus": 1, "memoryMiB": 512}
	for k, v := range extra {
		req[k] = v
	}
	var v sessionView
	if err := json.Unmarshal(s.post(t, "/api/sessions", req), &v); err != nil {
		t.Fatal(err)
	}
	return s.waitState(t, v.ID, "active")
}

func (s *server) waitState(t *testing.T, id, state string) sessionView {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var v sessionView
		s.getJSON(t, "/api/sessions/"+id+"/status", &v)
		if v.State == state {
			return v
		}
		if time.Now().After(deadline) || (state == "active" && (v.State == "error" || v.State == "stopped")) {
			t.Fatalf("session %s is %s (%s), want %s\n%s", id, v.State, v.Error, state, s.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *server) delete(t *testing.T, path string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, s.url+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE %s: %d", path, resp.StatusCode)
	}
}

// The whole product on a cluster: a session's agent runs its bash tool in
// the session's pod (its host name, its files, the guest as its PID 1);
// a pod deleted from outside ends its session with an exit event saying
// so; deleting a session leaves no pod, secret or policy; a server killed
// while a pod runs deletes that pod when it starts again, and nothing of
// another instance's.
func TestServeOnCluster(t *testing.T) {
	c := newClusterNS(t)
	testutil.VMImage(t)
	img := testutil.K8sImageOf(t, "minimal")
	bin := testutil.Binary(t, "execlaw")
	fake := llmtest.NewAnthropic(
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash",
			Input: `{"command":"hostname; echo written-in-the-pod > note.txt; cat note.txt; pwd; tr '\\0' ' ' < /proc/1/cmdline"}`}}},
		llmtest.Turn{Text: "Done."},
	).Attach(t)
	dataDir := t.TempDir()
	srv := startServer(t, bin, dataDir, c.serveArgs(img)...)
	instance, err := os.ReadFile(filepath.Join(dataDir, k8sInstanceFile))
	if err != nil {
		t.Fatal(err)
	}
	mine := kubernetes.LabelInstance + "=" + strings.TrimSpace(string(instance))

	// A session's tools run in its pod.
	a := srv.createSession(t, fake, nil)
	if a.Sandbox != "kubernetes" || a.Isolated {
		t.Errorf("session on %q, isolated %v: want kubernetes, not isolated (runc)", a.Sandbox, a.Isolated)
	}
	pod := c.sessionPod(a.ID)
	st := testutil.OpenSSE(t, http.DefaultClient, srv.url+"/api/sessions/"+a.ID+"/stream", nil)
	srv.post(t, "/api/sessions/"+a.ID+"/input", map[string]string{"message": "where are you?"})
	st.WaitType(t, 2*time.Minute, event.AgentIdle, 1)
	out := st.WaitType(t, time.Second, event.ToolResult, 1).Field("output")
	st.Close()
	// PID 1 is the image's entrypoint, with the driver's arguments.
	want := pod.Spec.Hostname + "\nwritten-in-the-pod\n/workspace\n/usr/local/bin/execlaw-guest --pod "
	if pod.Spec.Hostname == "" || !strings.HasPrefix(out, want) {
		t.Errorf("the bash tool's output:\n%q\nwant (pod %s)\n%q", out, pod.Name, want)
	}
	var files struct {
		Entries []struct{ Name string }
	}
	srv.getJSON(t, "/api/sessions/"+a.ID+"/files?path=.", &files)
	if len(files.Entries) != 1 || files.Entries[0].Name != "note.txt" {
		t.Errorf("the workspace's files: %+v", files)
	}

	// A pod deleted from outside ends its session, saying why.
	b := srv.createSession(t, fake, nil)
	bStream := testutil.OpenSSE(t, http.DefaultClient, srv.url+"/api/sessions/"+b.ID+"/stream", nil)
	grace := int64(0)
	if err := c.cs.CoreV1().Pods(c.name).Delete(context.Background(), c.sessionPod(b.ID).Name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		t.Fatal(err)
	}
	exit := bStream.WaitType(t, 2*time.Minute, event.Exit, 1)
	if !strings.Contains(exit.Field("reason"), "deleted") {
		t.Errorf("exit event after the pod was deleted: %s", exit.Data)
	}
	bStream.Close()
	c.waitObjects(kubernetes.LabelSession + "=" + b.ID)

	// Deleting a session deletes all it had.
	srv.delete(t, "/api/sessions/"+a.ID)
	c.waitObjects(kubernetes.LabelSession + "=" + a.ID)

	// Killed with a session's pod running, the server deletes that pod
	// when it starts again, and leaves another instance's objects alone.
	running := srv.createSession(t, fake, nil)
	runningSel := kubernetes.LabelSession + "=" + running.ID
	others := kubernetes.LabelInstance + "=someone-else"
	decoy := metav1.ObjectMeta{Name: "another-servers", Labels: map[string]string{kubernetes.LabelInstance: "someone-else", kubernetes.LabelSession: running.ID}}
	ctx := context.Background()
	if _, err := c.cs.CoreV1().Secrets(c.name).Create(ctx, &corev1.Secret{ObjectMeta: decoy}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.cs.NetworkingV1().NetworkPolicies(c.name).Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: decoy}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A pod that never schedules: it needs no image or room.
	if _, err := c.cs.CoreV1().Pods(c.name).Create(ctx, &corev1.Pod{ObjectMeta: decoy, Spec: corev1.PodSpec{
		NodeSelector: map[string]string{"execlaw.dev/no-such-node": "true"},
		Containers:   []corev1.Container{{Name: "c", Image: "none:none"}},
	}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	srv.cmd.Process.Signal(syscall.SIGKILL)
	<-srv.done
	if left := c.objects(mine + "," + runningSel); len(left) != 3 {
		t.Fatalf("the killed server's session objects: %v, want its pod, secret and policy", left)
	}
	srv = startServer(t, bin, dataDir, c.serveArgs(img)...)
	c.waitObjects(mine)
	c.waitObjects(others, "pod/another-servers", "secret/another-servers", "networkpolicy/another-servers")
	// Its session is paused, saying its files went with the pod (the
	// template has no workspace claim).
	srv.waitState(t, running.ID, "paused")
	replay := testutil.OpenSSE(t, http.DefaultClient, srv.url+"/api/sessions/"+running.ID+"/stream", http.Header{"Last-Event-ID": {"0"}})
	if p := replay.WaitType(t, 30*time.Second, event.Paused, 1); !strings.Contains(p.Field("reason"), "resumes on an empty one") {
		t.Errorf("the killed server's session after a restart: %s", p.Data)
	}
	replay.Close()

	// SIGTERM: an orderly stop leaves nothing of this instance.
	if err := srv.terminate(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	c.waitObjects(mine)
	if strings.Contains(srv.out.String(), "sk-ant-k8s-serve-test-key") {
		t.Error("the server's log holds the API key")
	}
}

// The real Claude Code CLI runs in a session's pod as in a VM: offered
// because --k8s-image-agents says the image carries it, its tool calls run
// in the pod, its model calls go through the credential proxy tunnelled
// over the guest connection, and the pod holds only the session's token:
// the provider sees the real key, nothing in the pod does.
func TestServeClaudeCodeOnCluster(t *testing.T) {
	const key = "sk-ant-api03-REALKEY-k8s-claude-0123456789"
	c := newClusterNS(t)
	testutil.VMImageWithClaudeCode(t)
	img := testutil.K8sImageOf(t, "agents")
	bin := testutil.Binary(t, "execlaw")
	// The key is looked for in two halves joined at run time, so that the
	// command (which Claude Code keeps in its transcript) holds no copy.
	checks := `hostname; tr '\0' ' ' < /proc/1/cmdline; echo; ` +
		`[ -n "$ANTHROPIC_API_KEY" ] && echo token-in-env; ` +
		`a=sk-ant-api03-REAL; b=KEY-k8s-claude; cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep -c -e "$a$b"; ` +
		`grep -rIl --exclude-dir=proc --exclude-dir=sys -e "$a$b" / 2>/dev/null | head -3; echo grep-done`
	input, _ := json.Marshal(map[string]string{"command": checks, "description": "where am I"})
	fake := llmtest.NewAnthropic(
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "Bash", Input: string(input)}}},
		llmtest.Turn{Text: "Checked **the pod**.", InputTokens: 900, OutputTokens: 30},
	).Attach(t)
	srv := startServer(t, bin, t.TempDir(), c.serveArgs(img, "--k8s-image-agents", "claude-code")...)
	var platform struct{ Agents []string }
	srv.getJSON(t, "/api/platform", &platform)
	if strings.Join(platform.Agents, ",") != "builtin,claude-code" {
		t.Fatalf("agents offered: %+v, want the built-in one and claude-code", platform.Agents)
	}
	v := srv.createSession(t, fake, map[string]any{"agent": "claude-code", "apiKey": key, "memoryMiB": 1024})
	pod := c.sessionPod(v.ID)
	st := testutil.OpenSSE(t, http.DefaultClient, srv.url+"/api/sessions/"+v.ID+"/stream", nil)
	srv.post(t, "/api/sessions/"+v.ID+"/input", map[string]string{"message": "where are you?"})
	st.WaitType(t, 6*time.Minute, event.AgentIdle, 1)
	out := st.WaitType(t, time.Second, event.ToolResult, 1).Field("output")
	first, rest, _ := strings.Cut(out, "\n/usr/local/bin/execlaw-guest --pod ")
	_, rest, _ = strings.Cut(rest, "\n")
	// Claude Code trims its tool's output.
	if first != pod.Spec.Hostname || strings.TrimSpace(rest) != "token-in-env\n0\ngrep-done" {
		want := pod.Spec.Hostname + "\n/usr/local/bin/execlaw-guest --pod ...\ntoken-in-env\n0\ngrep-done\n"
		t.Errorf("Claude Code's Bash tool in the pod:\n%q\nwant\n%q", out, want)
	}
	st.WaitFor(t, time.Minute, "the final message", func(ev testutil.SSEEvent) bool {
		return ev.Type == event.Message && ev.Field("content") == "Checked **the pod**."
	})
	reqs := fake.Requests()
	if len(reqs) != 2 {
		t.Errorf("model requests: %d, want 2", len(reqs))
	}
	for _, r := range reqs {
		if r.Header.Get("X-Api-Key") != key {
			t.Errorf("the provider got key %q", r.Header.Get("X-Api-Key"))
		}
	}
	for _, ev := range st.Events() {
		if strings.Contains(string(ev.Data), key) {
			t.Errorf("event %d %s holds the key", ev.ID, ev.Type)
		}
	}
	st.Close()
	srv.delete(t, "/api/sessions/"+v.ID)
	c.waitObjects(kubernetes.LabelSession + "=" + v.ID)
	if strings.Contains(srv.out.String(), key) {
		t.Error("the server's log holds the API key")
	}
}
