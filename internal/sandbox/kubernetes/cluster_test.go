package kubernetes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/testutil"
)

// These tests run the driver against the real single-node cluster of
// scripts/k8s-testbed.sh (API server v1.34.4, containerd, runc, a bridge
// network the host reaches), with an image holding the static
// execlaw-guest alone. The test bed enforces no NetworkPolicy (no such
// network plugin): the policies are checked as objects the API server
// took, not as traffic.

// cluster is a namespace of its own in the test cluster, deleted after
// the test with all in it.
type cluster struct {
	t    testing.TB
	cs   k8s.Interface
	ns   string
	host string // the API server's address, as the kubeconfig gives it
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the Kubernetes test cluster (scripts/k8s-testbed.sh)")
	}
	conn, err := Connect(testutil.K8sCluster(t))
	if err != nil {
		t.Fatal(err)
	}
	var b [3]byte
	rand.Read(b[:])
	c := &cluster{t: t, cs: conn.Client, ns: "execlaw-test-" + hex.EncodeToString(b[:]), host: conn.Host}
	ctx := context.Background()
	if _, err := c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: c.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		grace := int64(0)
		_ = c.cs.CoreV1().Namespaces().Delete(context.Background(), c.ns, metav1.DeleteOptions{GracePeriodSeconds: &grace})
	})
	return c
}

const clusterTemplate = `spec:
  containers:
  - name: guest
    imagePullPolicy: Never`

func (c *cluster) driver(instance, template string, sessions Sessions) *Driver {
	c.t.Helper()
	tm, err := ParseTemplate([]byte(template))
	if err != nil {
		c.t.Fatal(err)
	}
	d, err := New(Config{
		Client: c.cs, Namespace: c.ns, Instance: instance, Template: tm, Image: testutil.K8sGuestImage(c.t),
		Server: ServerPeers{CIDRs: []netip.Prefix{testutil.K8sServerFrom(c.t)}}, Sessions: sessions,
		StartTimeout: 2 * time.Minute, StopTimeout: time.Minute,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return d
}

func (c *cluster) left(instance string) string {
	c.t.Helper()
	names, err := ListObjects(context.Background(), c.cs, c.ns, instanceSelector(instance))
	if err != nil {
		c.t.Fatal(err)
	}
	return strings.Join(names, " ")
}

func TestClusterLifecycle(t *testing.T) {
	c := newCluster(t)
	sessions := &fakeSessions{owner: map[string]string{testSession: "Bob <bob@example.com>"}, over: map[string]bool{}}
	d := c.driver("t1", clusterTemplate, sessions)
	if d.Isolated() || d.Pausable() {
		t.Errorf("runc without a claim: isolated %v, pausable %v", d.Isolated(), d.Pausable())
	}
	sb := startOn(t, d, testSpec(testSession))
	t.Cleanup(func() { _ = sb.Stop(context.Background()) })

	// What the API server took: its validation and defaults are the
	// cluster's, not the fake's.
	ctx := context.Background()
	n := objectNames("t1", testSession)
	pod, err := c.cs.CoreV1().Pods(c.ns).Get(ctx, n.Pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantLabels := map[string]string{LabelInstance: "t1", LabelSession: testSession, LabelOwner: ownerLabel("Bob <bob@example.com>"), LabelPart: partGuest}
	for k, v := range wantLabels {
		if pod.Labels[k] != v {
			t.Errorf("pod label %s = %q, want %q", k, pod.Labels[k], v)
		}
	}
	s := pod.Spec
	if s.RestartPolicy != corev1.RestartPolicyNever || *s.AutomountServiceAccountToken || *s.EnableServiceLinks || s.NodeName == "" {
		t.Errorf("pod spec: restart %s, token %v, links %v, node %q", s.RestartPolicy, *s.AutomountServiceAccountToken, *s.EnableServiceLinks, s.NodeName)
	}
	if pod.Status.QOSClass != corev1.PodQOSGuaranteed {
		t.Errorf("QoS class %s, want Guaranteed (requests = limits)", pod.Status.QOSClass)
	}
	g := s.Containers[0]
	if lim := g.Resources.Limits[corev1.ResourceMemory]; lim.Cmp(resource.MustParse("512Mi")) != 0 {
		t.Errorf("memory limit %v", lim.String())
	}
	if *g.SecurityContext.Privileged || *g.SecurityContext.AllowPrivilegeEscalation {
		t.Errorf("guest security %+v", g.SecurityContext)
	}
	secret, err := c.cs.CoreV1().Secrets(c.ns).Get(ctx, n.Secret, metav1.GetOptions{})
	if err != nil || secret.Labels[LabelInstance] != "t1" || len(secret.Data[guest.PodTokenFile]) < guest.MinPodTokenBytes {
		t.Errorf("secret %v: %v", secret.ObjectMeta, err)
	}
	policy, err := c.cs.NetworkingV1().NetworkPolicies(c.ns).Get(ctx, n.Policy, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if policy.Labels[LabelInstance] != "t1" || len(policy.Spec.Ingress) != 1 || policy.Spec.Ingress[0].From[0].IPBlock.CIDR != testutil.K8sServerFrom(t).String() ||
		len(policy.Spec.Egress) != 1 || policy.Spec.Egress[0].To[0].IPBlock.CIDR != "0.0.0.0/0" {
		t.Errorf("policy %+v", policy.Spec)
	}

	// The guest answers, over TLS with the session's token: it works in
	// the workspace, and reads its credentials, which only it may.
	cl := sb.Guest()
	if err := cl.Write(ctx, guest.WriteRequest{Path: "hello.txt", Data: []byte("hi")}); err != nil {
		t.Fatalf("write in the workspace: %v", err)
	}
	if fi, err := cl.Stat(ctx, WorkspaceDir+"/hello.txt"); err != nil || fi.Size != 2 {
		t.Errorf("stat in the workspace: %+v %v", fi, err)
	}
	if fi, err := cl.Stat(ctx, SecretDir+"/"+guest.PodTokenFile); err != nil || fi.Mode != "-r--------" {
		t.Errorf("the token file: %+v %v, want mode -r--------", fi, err)
	}

	stopCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := sb.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	if left := c.left("t1"); left != "" {
		t.Errorf("left after Stop: %s", left)
	}
	if sb.ExitError() != nil {
		t.Errorf("exit error after Stop: %v", sb.ExitError())
	}
}

func TestClusterPodDeletedEndsSandbox(t *testing.T) {
	c := newCluster(t)
	d := c.driver("t2", clusterTemplate, nil)
	sb := startOn(t, d, testSpec(testSession))
	grace := int64(0)
	if err := c.cs.CoreV1().Pods(c.ns).Delete(context.Background(), sb.Pod(), metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sb.Done():
	case <-time.After(90 * time.Second):
		t.Fatal("the sandbox did not end when its pod was deleted")
	}
	err := sb.ExitError()
	if err == nil || !strings.Contains(err.Error(), "delet") {
		t.Errorf("exit error %v, want one saying the pod was deleted", err)
	}
	t.Logf("exit error: %v", err)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if left := c.left("t2"); left != "" {
		t.Errorf("left after Stop: %s", left)
	}
}

func TestClusterEvictionEndsSandbox(t *testing.T) {
	c := newCluster(t)
	d := c.driver("t6", clusterTemplate, nil)
	sb := startOn(t, d, testSpec(testSession))
	// What a node drain does.
	ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: sb.Pod(), Namespace: c.ns}}
	if err := c.cs.CoreV1().Pods(c.ns).EvictV1(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sb.Done():
	case <-time.After(90 * time.Second):
		t.Fatal("the sandbox did not end when its pod was evicted")
	}
	if err := sb.ExitError(); err == nil || !strings.Contains(err.Error(), "evicted") {
		t.Errorf("exit error %v, want one saying the pod was evicted", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if left := c.left("t6"); left != "" {
		t.Errorf("left after Stop: %s", left)
	}
}

func TestClusterMissingImageFailsClean(t *testing.T) {
	c := newCluster(t)
	d := c.driver("t7", clusterTemplate, nil)
	d.cfg.Image = "execlaw-guest:no-such-tag"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var phases []string
	spec := testSpec(testSession)
	spec.Progress = func(p string) { phases = append(phases, p) }
	_, err := d.Start(ctx, spec)
	if err == nil || !strings.Contains(err.Error(), "ErrImageNeverPull") {
		t.Fatalf("start: %v, want the kubelet's ErrImageNeverPull", err)
	}
	t.Logf("start error: %v; phases %v", err, phases)
	if left := c.left("t7"); left != "" {
		t.Errorf("left after a failed start: %s", left)
	}
}

func TestClusterGuestExitEndsSandbox(t *testing.T) {
	c := newCluster(t)
	d := c.driver("t3", clusterTemplate, nil)
	sb := startOn(t, d, testSpec(testSession))
	// The guest's own shutdown ends its container; restartPolicy Never
	// ends the pod with it.
	if err := sb.Guest().Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sb.Done():
	case <-time.After(90 * time.Second):
		t.Fatal("the sandbox did not end when its guest exited")
	}
	if err := sb.ExitError(); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("exit error %v, want one saying the guest exited", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestClusterSweepOnlyThisInstance(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	// A run of instance t4 that died with a session running.
	crashed := c.driver("t4", clusterTemplate, nil)
	sb := startOn(t, crashed, testSpec(testSession))
	t.Cleanup(func() { _ = sb.Stop(context.Background()) })

	// Another server's objects (other instance), and some of nobody's.
	for _, inst := range []string{"other", ""} {
		labels := map[string]string{LabelSession: testSession}
		if inst != "" {
			labels[LabelInstance] = inst
		}
		meta := metav1.ObjectMeta{Name: "decoy-" + inst + "x", Labels: labels}
		if _, err := c.cs.CoreV1().Secrets(c.ns).Create(ctx, &corev1.Secret{ObjectMeta: meta}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.cs.NetworkingV1().NetworkPolicies(c.ns).Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: meta}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// A pod that never schedules: it needs no image.
		pod := &corev1.Pod{ObjectMeta: meta, Spec: corev1.PodSpec{
			NodeSelector: map[string]string{"execlaw.dev/no-such-node": "true"},
			Containers:   []corev1.Container{{Name: "c", Image: "none:none"}},
		}}
		if _, err := c.cs.CoreV1().Pods(c.ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// The next run of t4 sweeps at its start.
	restarted := c.driver("t4", clusterTemplate, nil)
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	n, err := restarted.Sweep(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != (Swept{Pods: 1, Secrets: 1, Policies: 1}) {
		t.Errorf("swept %v", n)
	}
	if left := c.left("t4"); left != "" {
		t.Errorf("t4's objects left: %s", left)
	}
	for _, inst := range []string{"other", ""} {
		name := "decoy-" + inst + "x"
		if _, err := c.cs.CoreV1().Pods(c.ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("decoy pod %s: %v", name, err)
		}
		if _, err := c.cs.CoreV1().Secrets(c.ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("decoy secret %s: %v", name, err)
		}
		if _, err := c.cs.NetworkingV1().NetworkPolicies(c.ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("decoy policy %s: %v", name, err)
		}
	}
	// The crashed run's sandbox sees its pod go.
	select {
	case <-sb.Done():
	case <-time.After(90 * time.Second):
		t.Error("the swept pod's sandbox did not end")
	}
}

// TestClusterPauseKeepsFiles pauses a session on a workspace claim and
// resumes it: its files are there again, in a new pod. The test bed has
// no volume provisioner, so the claim binds a hostPath volume made here.
func TestClusterPauseKeepsFiles(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	class := c.ns // unique, so only this test's claim binds the volume
	c.hostPathVolume("ws", class, "1Gi", "")

	sessions := &fakeSessions{owner: map[string]string{}, over: map[string]bool{}}
	d := c.driver("t5", clusterTemplate+`
  volumes:
  - name: workspace
    ephemeral:
      volumeClaimTemplate:
        spec:
          storageClassName: `+class+`
          resources: {requests: {storage: 1Gi}}`, sessions)
	if !d.Pausable() {
		t.Fatal("not pausable with a workspace claim")
	}
	sb := startOn(t, d, testSpec(testSession))
	if err := sb.Guest().Write(ctx, guest.WriteRequest{Path: "kept.txt", Data: []byte("still here")}); err != nil {
		t.Fatal(err)
	}
	stopCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := sb.Stop(stopCtx); err != nil { // paused: not over
		t.Fatal(err)
	}
	if left := c.left("t5"); left != "pvc/"+objectNames("t5", testSession).Claim {
		t.Fatalf("after the pause: %q, want the claim alone", left)
	}

	spec := testSpec(testSession)
	spec.Resume = true
	sb = startOn(t, d, spec)
	r, err := sb.Guest().Read(ctx, guest.ReadRequest{Path: "kept.txt"})
	if err != nil || string(r.Data) != "still here" {
		t.Errorf("after the resume: %q, %v", r.Data, err)
	}
	sessions.setOver(testSession, true)
	if err := sb.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	if left := c.left("t5"); left != "" {
		t.Errorf("after the end: %s", left)
	}
}
