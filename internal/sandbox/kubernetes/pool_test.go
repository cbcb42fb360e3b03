package kubernetes

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/sandbox"
)

const testPoolID = "p_00112233445566778899aabb"

func poolSpec(id string) sandbox.Spec {
	spec := testSpec(id)
	spec.Movable = true
	return spec
}

func TestPoolableWithoutWorkspaceClaim(t *testing.T) {
	for _, tc := range []struct {
		template string
		want     bool
	}{
		{"spec: {containers: [{name: guest, image: g}]}", true},
		{`spec:
  containers: [{name: guest, image: g}]
  volumes:
  - name: workspace
    ephemeral: {volumeClaimTemplate: {spec: {resources: {requests: {storage: 1Gi}}}}}`, false},
	} {
		tm, err := ParseTemplate([]byte(tc.template))
		if err != nil {
			t.Fatal(err)
		}
		d := &Driver{cfg: Config{Template: tm}}
		if d.Poolable() != tc.want {
			t.Errorf("Poolable() = %v, want %v, for %s", d.Poolable(), tc.want, tc.template)
		}
	}
}

func TestPoolParams(t *testing.T) {
	var p podParams
	p.Instance, p.Session = "i1", testPoolID
	if err := poolParams(&p, poolSpec(testPoolID)); err != nil {
		t.Fatal(err)
	}
	l := p.labels(partGuest)
	if l[LabelPool] != poolReady || l[LabelPooledAs] != testPoolID || l[LabelOwner] != poolOwner || l[LabelSession] != testPoolID {
		t.Errorf("pooled labels %v", l)
	}
	// The selector holds the pod whatever its session label becomes.
	l[LabelSession], l[LabelOwner] = testSession, "bob"
	delete(l, LabelPool)
	if !labels.SelectorFromSet(p.podSelector()).Matches(labels.Set(l)) {
		t.Errorf("selector %v does not match the claimed pod's labels %v", p.podSelector(), l)
	}
	p2 := podParams{Instance: "i1", Session: "s_x"}
	if err := poolParams(&p2, poolSpec("s_x")); err == nil {
		t.Error("a session id taken as a pool id")
	}
	if _, ok := p2.labels(partGuest)[LabelPooledAs]; ok || p2.podSelector()[LabelSession] != "s_x" {
		t.Errorf("a session's own labels %v selector %v", p2.labels(partGuest), p2.podSelector())
	}
}

// TestClusterPoolClaim starts a pooled sandbox, claims it for a session,
// and checks that its objects are the session's, its policy still holds
// its pod, its guest still answers, and Stop leaves nothing.
func TestClusterPoolClaim(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	sessions := &fakeSessions{owner: map[string]string{testSession: "Bob <bob@example.com>"}, over: map[string]bool{}}
	d := c.driver("t8", clusterTemplate, sessions)
	if !d.Poolable() {
		t.Fatal("not poolable without a workspace claim")
	}
	sb := startOn(t, d, poolSpec(testPoolID))
	t.Cleanup(func() { _ = sb.Stop(context.Background()) })
	n := objectNames("t8", testPoolID)
	if sb.Pod() != n.Pod {
		t.Fatalf("pod %s, want %s", sb.Pod(), n.Pod)
	}
	check := func(what string, want map[string]string, noPool bool) {
		t.Helper()
		pod, err := c.cs.CoreV1().Pods(c.ns).Get(ctx, n.Pod, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		secret, err := c.cs.CoreV1().Secrets(c.ns).Get(ctx, n.Secret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		policy, err := c.cs.NetworkingV1().NetworkPolicies(c.ns).Get(ctx, n.Policy, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for obj, l := range map[string]map[string]string{"pod": pod.Labels, "secret": secret.Labels, "policy": policy.Labels} {
			for k, v := range want {
				if l[k] != v {
					t.Errorf("%s: %s label %s = %q, want %q", what, obj, k, l[k], v)
				}
			}
			if _, ok := l[LabelPool]; ok == noPool {
				t.Errorf("%s: %s label %s: %v", what, obj, LabelPool, l)
			}
		}
		sel, err := metav1.LabelSelectorAsSelector(&policy.Spec.PodSelector)
		if err != nil || !sel.Matches(labels.Set(pod.Labels)) {
			t.Errorf("%s: the policy's selector %v does not select the pod %v (%v)", what, policy.Spec.PodSelector, pod.Labels, err)
		}
		if pods, err := c.cs.CoreV1().Pods(c.ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()}); err != nil || len(pods.Items) != 1 {
			t.Errorf("%s: the policy selects %d pods (%v), want its own alone", what, len(pods.Items), err)
		}
	}
	check("pooled", map[string]string{LabelInstance: "t8", LabelSession: testPoolID, LabelOwner: poolOwner, LabelPool: poolReady, LabelPooledAs: testPoolID}, false)
	if err := sb.Guest().Write(ctx, guest.WriteRequest{Path: "before.txt", Data: []byte("pooled")}); err != nil {
		t.Fatal(err)
	}

	begin := time.Now()
	if err := sb.Claim(ctx, testSpec(testSession)); err != nil {
		t.Fatal(err)
	}
	claimed := time.Since(begin)
	h, err := sb.Guest().Health(ctx)
	if err != nil {
		t.Fatalf("the guest after the claim: %v", err)
	}
	t.Logf("claim %v, guest answering %v (host name %s)", claimed.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond), h.Hostname)

	owner := ownerLabel("Bob <bob@example.com>")
	check("claimed", map[string]string{LabelInstance: "t8", LabelSession: testSession, LabelOwner: owner, LabelPooledAs: testPoolID}, true)
	pod, err := c.cs.CoreV1().Pods(c.ns).Get(ctx, n.Pod, metav1.GetOptions{})
	if err != nil || pod.Annotations[AnnotationOwnerID] != "Bob <bob@example.com>" {
		t.Errorf("pod annotations %v, %v", pod.Annotations, err)
	}
	if d.isLive(testPoolID) || !d.isLive(testSession) {
		t.Errorf("live: pool id %v, session %v", d.isLive(testPoolID), d.isLive(testSession))
	}
	// A collect now finds everything in use.
	if swept, err := d.collect(ctx, false); err != nil || swept != (Swept{}) {
		t.Errorf("collect after the claim: %v, %v", swept, err)
	}
	// The same guest, the same workspace.
	r, err := sb.Guest().Read(ctx, guest.ReadRequest{Path: "before.txt"})
	if err != nil || string(r.Data) != "pooled" {
		t.Errorf("read after the claim: %q, %v", r.Data, err)
	}
	if err := sb.Guest().Write(ctx, guest.WriteRequest{Path: "after.txt", Data: []byte("claimed")}); err != nil {
		t.Errorf("write after the claim: %v", err)
	}
	if err := sb.Claim(ctx, testSpec("s_other")); err == nil {
		t.Error("a claimed sandbox claimed again")
	}

	stopCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := sb.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	if left := c.left("t8"); left != "" {
		t.Errorf("left after Stop: %s", left)
	}
	if sb.ExitError() != nil || d.isLive(testSession) {
		t.Errorf("after Stop: exit error %v, live %v", sb.ExitError(), d.isLive(testSession))
	}
}

// TestClusterPoolSweep: the pool's pods a run left belong to no session,
// and the next run's sweep deletes them.
func TestClusterPoolSweep(t *testing.T) {
	c := newCluster(t)
	crashed := c.driver("t9", clusterTemplate, nil)
	sb := startOn(t, crashed, poolSpec(testPoolID))
	t.Cleanup(func() { _ = sb.Stop(context.Background()) })
	restarted := c.driver("t9", clusterTemplate, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, err := restarted.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != (Swept{Pods: 1, Secrets: 1, Policies: 1}) {
		t.Errorf("swept %v", n)
	}
	if left := c.left("t9"); left != "" {
		t.Errorf("left after the sweep: %s", left)
	}
}

// BenchmarkPodClaim is a pooled pod's claim until its guest answers (the
// three patches and a Health call), against BenchmarkPodStart's cold
// start. Each pooled pod is started first, as the pool does ahead of need,
// and stopped after; one at a time, as the test node has room for few.
func BenchmarkPodClaim(b *testing.B) {
	c := newCluster(b)
	n := max(b.N, 5)
	sessions := &fakeSessions{owner: map[string]string{}, over: map[string]bool{}}
	for i := range n {
		sessions.owner[fmt.Sprintf("s_bench%04d", i)] = "bench"
	}
	d := c.driver("benchp", clusterTemplate, sessions)
	var claim []time.Duration
	b.ResetTimer()
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		b.StopTimer()
		sb, err := d.Start(ctx, poolSpec(fmt.Sprintf("p_bench%04d", i)))
		b.StartTimer()
		if err != nil {
			cancel()
			b.Fatalf("start %d: %v", i, err)
		}
		start := time.Now()
		err = sb.(*Sandbox).Claim(ctx, testSpec(fmt.Sprintf("s_bench%04d", i)))
		if err == nil {
			_, err = sb.Guest().Health(ctx)
		}
		took := time.Since(start)
		cancel()
		if err != nil {
			b.Fatalf("claim %d: %v", i, err)
		}
		claim = append(claim, took)
		b.StopTimer()
		if err := sb.Stop(context.Background()); err != nil {
			b.Fatalf("stop %d: %v", i, err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	p50, p95 := percentiles(claim)
	b.ReportMetric(float64(p50.Microseconds())/1000, "claim-p50-ms")
	b.ReportMetric(float64(p95.Microseconds())/1000, "claim-p95-ms")
	b.Logf("claim p50 %v  p95 %v  (%d pods)", p50.Round(100*time.Microsecond), p95.Round(100*time.Microsecond), len(claim))
	if left := c.left("benchp"); left != "" {
		b.Errorf("left behind: %s", left)
	}
	b.ReportMetric(0, "ns/op")
}
