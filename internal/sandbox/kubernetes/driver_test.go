package kubernetes

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/execlaw/execlaw/internal/sandbox"
)

const testSession = "s_0123456789abcdef01234567"

func testSpec(id string) sandbox.Spec {
	return sandbox.Spec{SessionID: id, VCPUs: 1, MemoryMiB: 512, DiskMiB: 1024, Network: "full"}
}

func startOn(t *testing.T, d *Driver, spec sandbox.Spec) *Sandbox {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var phases []string
	spec.Progress = func(p string) { phases = append(phases, p) }
	sb, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if len(phases) == 0 || phases[0] != "pod" || phases[len(phases)-1] != "guest-api" {
		t.Errorf("phases %v", phases)
	}
	return sb.(*Sandbox)
}

func stop(t *testing.T, sb sandbox.Sandbox) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sb.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

func TestStartAndStopOnFakeCluster(t *testing.T) {
	fc := newFakeCluster(t)
	sessions := &fakeSessions{owner: map[string]string{testSession: "alice@example.com"}, over: map[string]bool{}}
	d := fc.driver("abc123", Template{}, sessions)
	sb := startOn(t, d, testSpec(testSession))

	ctx := context.Background()
	if h, err := sb.Guest().Health(ctx); err != nil || h.Version == "" {
		t.Fatalf("guest health: %+v, %v", h, err)
	}
	if sb.Workspace() != WorkspaceDir || sb.Node() != "node-1" {
		t.Errorf("workspace %s, node %s", sb.Workspace(), sb.Node())
	}
	n := objectNames("abc123", testSession)
	pod, err := fc.cs.CoreV1().Pods(fc.ns).Get(ctx, n.Pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Labels[LabelOwner] != ownerLabel("alice@example.com") || pod.Annotations[AnnotationOwnerID] != "alice@example.com" {
		t.Errorf("owner %v %v", pod.Labels, pod.Annotations)
	}
	if pod.Spec.DNSPolicy != corev1.DNSNone {
		t.Errorf("pod uses the cluster's DNS: %s", pod.Spec.DNSPolicy)
	}
	if _, err := fc.cs.CoreV1().Secrets(fc.ns).Get(ctx, n.Secret, metav1.GetOptions{}); err != nil {
		t.Error(err)
	}
	if _, err := fc.cs.NetworkingV1().NetworkPolicies(fc.ns).Get(ctx, n.Policy, metav1.GetOptions{}); err != nil {
		t.Error(err)
	}
	if _, err := d.Start(ctx, testSpec(testSession)); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("a second start of the session: %v", err)
	}

	stop(t, sb)
	select {
	case <-sb.Done():
	default:
		t.Error("Done is open after Stop")
	}
	if err := sb.ExitError(); err != nil {
		t.Errorf("ExitError after Stop: %v", err)
	}
	if p, s, np, c := fc.count(instanceSelector("abc123")); p+s+np+c != 0 {
		t.Errorf("left after Stop: %d pods, %d secrets, %d policies, %d claims", p, s, np, c)
	}
	stop(t, sb) // a second Stop is no error
}

func TestPodDeletedFromOutsideEndsSandbox(t *testing.T) {
	fc := newFakeCluster(t)
	d := fc.driver("abc123", Template{}, nil)
	sb := startOn(t, d, testSpec(testSession))
	if err := fc.cs.CoreV1().Pods(fc.ns).Delete(context.Background(), sb.Pod(), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sb.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the sandbox did not end when its pod was deleted")
	}
	if err := sb.ExitError(); err == nil || !strings.Contains(err.Error(), "deleted") && !strings.Contains(err.Error(), "gone") {
		t.Errorf("exit error %v, want one saying the pod was deleted", err)
	}
	stop(t, sb)
	if p, s, np, _ := fc.count(instanceSelector("abc123")); p+s+np != 0 {
		t.Errorf("left after Stop: %d pods, %d secrets, %d policies", p, s, np)
	}
}

func TestFailedStartCleansUp(t *testing.T) {
	fc := newFakeCluster(t)
	fc.podStatus = func(*corev1.Pod) *corev1.PodStatus {
		return &corev1.PodStatus{
			Phase:      corev1.PodPending,
			Conditions: []corev1.PodCondition{cond(corev1.PodScheduled, corev1.ConditionTrue, "", "")},
			ContainerStatuses: guestState(corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
				Reason: "ErrImagePull", Message: "execlaw-guest:test: not found",
			}}),
		}
	}
	d := fc.driver("abc123", mustTemplate(t, workspaceTemplate), nil)
	_, err := d.Start(context.Background(), testSpec(testSession))
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("start: %v, want the image pull's error", err)
	}
	if p, s, np, c := fc.count(instanceSelector("abc123")); p+s+np+c != 0 {
		t.Errorf("left after a failed start: %d pods, %d secrets, %d policies, %d claims", p, s, np, c)
	}
	if d.isLive(testSession) {
		t.Error("the failed session is still live")
	}
}

func TestStartTimesOutSayingWhy(t *testing.T) {
	fc := newFakeCluster(t)
	fc.podStatus = func(*corev1.Pod) *corev1.PodStatus {
		return &corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{
			cond(corev1.PodScheduled, corev1.ConditionFalse, "Unschedulable", "0/3 nodes are available: 3 Insufficient memory."),
		}}
	}
	d := fc.driver("abc123", Template{}, nil)
	d.cfg.StartTimeout = 2 * time.Second
	_, err := d.Start(context.Background(), testSpec(testSession))
	if err == nil || !strings.Contains(err.Error(), "Insufficient memory") {
		t.Fatalf("start: %v, want the scheduler's complaint", err)
	}
	if p, s, np, _ := fc.count(instanceSelector("abc123")); p+s+np != 0 {
		t.Errorf("left after a start that timed out: %d pods, %d secrets, %d policies", p, s, np)
	}
}

const workspaceTemplate = `spec:
  volumes:
  - name: workspace
    ephemeral:
      volumeClaimTemplate:
        spec: {resources: {requests: {storage: 1Gi}}}`

func TestPauseKeepsWorkspaceClaim(t *testing.T) {
	fc := newFakeCluster(t)
	sessions := &fakeSessions{owner: map[string]string{}, over: map[string]bool{}}
	d := fc.driver("abc123", mustTemplate(t, workspaceTemplate), sessions)
	if !d.Pausable() {
		t.Fatal("a template with a workspace claim is not pausable")
	}
	ctx := context.Background()
	claims := fc.cs.CoreV1().PersistentVolumeClaims(fc.ns)
	name := objectNames("abc123", testSession).Claim

	sb := startOn(t, d, testSpec(testSession))
	first, err := claims.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first.Annotations["test/marker"] = "first" // to know it again
	if _, err := claims.Update(ctx, first, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	stop(t, sb) // the session is not over: paused
	if p, s, np, c := fc.count(instanceSelector("abc123")); p+s+np != 0 || c != 1 {
		t.Fatalf("after a pause: %d pods, %d secrets, %d policies, %d claims; want the claim alone", p, s, np, c)
	}
	// A sweep (a restart) keeps a paused session's claim.
	if n, err := d.Sweep(ctx); err != nil || n.Claims != 0 {
		t.Fatalf("sweep: %v, %v", n, err)
	}

	spec := testSpec(testSession)
	spec.Resume = true
	sb = startOn(t, d, spec)
	again, err := claims.Get(ctx, name, metav1.GetOptions{})
	if err != nil || again.Annotations["test/marker"] != "first" {
		t.Fatalf("resumed on another claim: %v %v", again, err)
	}
	sessions.setOver(testSession, true)
	stop(t, sb)
	if p, s, np, c := fc.count(instanceSelector("abc123")); p+s+np+c != 0 {
		t.Errorf("after the end: %d pods, %d secrets, %d policies, %d claims", p, s, np, c)
	}
}

func TestSweepOnlyThisInstance(t *testing.T) {
	fc := newFakeCluster(t)
	const paused, over, running = "s_aaaaaaaaaaaaaaaaaaaaaaaa", "s_bbbbbbbbbbbbbbbbbbbbbbbb", "s_cccccccccccccccccccccccc"
	sessions := &fakeSessions{owner: map[string]string{}, over: map[string]bool{over: true}}
	d := fc.driver("abc123", mustTemplate(t, workspaceTemplate), sessions)
	sb := startOn(t, d, testSpec(running)) // live: the sweep leaves it alone

	ctx := context.Background()
	core, netv1 := fc.cs.CoreV1(), fc.cs.NetworkingV1()
	meta := func(name, instance, session string) metav1.ObjectMeta {
		labels := map[string]string{}
		if instance != "" {
			labels[LabelInstance] = instance
		}
		if session != "" {
			labels[LabelSession] = session
		}
		return metav1.ObjectMeta{Name: name, Namespace: fc.ns, Labels: labels}
	}
	mustCreate := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Leftovers of this instance: a crashed run's pod with its secret and
	// policy, and the claims of a paused and of an ended session.
	fc.podStatus = func(*corev1.Pod) *corev1.PodStatus { return &corev1.PodStatus{Phase: corev1.PodRunning} }
	mustCreate(core.Pods(fc.ns).Create(ctx, &corev1.Pod{ObjectMeta: meta("left-pod", "abc123", paused)}, metav1.CreateOptions{}))
	mustCreate(core.Secrets(fc.ns).Create(ctx, &corev1.Secret{ObjectMeta: meta("left-secret", "abc123", paused)}, metav1.CreateOptions{}))
	mustCreate(netv1.NetworkPolicies(fc.ns).Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: meta("left-policy", "abc123", paused)}, metav1.CreateOptions{}))
	mustCreate(core.PersistentVolumeClaims(fc.ns).Create(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: meta("paused-claim", "abc123", paused)}, metav1.CreateOptions{}))
	mustCreate(core.PersistentVolumeClaims(fc.ns).Create(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: meta("over-claim", "abc123", over)}, metav1.CreateOptions{}))
	// Decoys: another instance's, and unlabelled ones.
	for _, inst := range []string{"other9", ""} {
		mustCreate(core.Pods(fc.ns).Create(ctx, &corev1.Pod{ObjectMeta: meta("decoy-pod-"+inst, inst, over)}, metav1.CreateOptions{}))
		mustCreate(core.Secrets(fc.ns).Create(ctx, &corev1.Secret{ObjectMeta: meta("decoy-secret-"+inst, inst, over)}, metav1.CreateOptions{}))
		mustCreate(netv1.NetworkPolicies(fc.ns).Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: meta("decoy-policy-"+inst, inst, over)}, metav1.CreateOptions{}))
		mustCreate(core.PersistentVolumeClaims(fc.ns).Create(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: meta("decoy-claim-"+inst, inst, over)}, metav1.CreateOptions{}))
	}

	n, err := d.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != (Swept{Pods: 1, Secrets: 1, Policies: 1, Claims: 1}) {
		t.Errorf("swept %v", n)
	}
	want := map[string]bool{"paused-claim": true, "decoy-pod-other9": true, "decoy-pod-": true, "decoy-claim-other9": true, "decoy-claim-": true,
		"decoy-secret-other9": true, "decoy-secret-": true, "decoy-policy-other9": true, "decoy-policy-": true}
	left := map[string]bool{}
	pods, _ := core.Pods(fc.ns).List(ctx, metav1.ListOptions{})
	for _, o := range pods.Items {
		left[o.Name] = true
	}
	secrets, _ := core.Secrets(fc.ns).List(ctx, metav1.ListOptions{})
	for _, o := range secrets.Items {
		left[o.Name] = true
	}
	policies, _ := netv1.NetworkPolicies(fc.ns).List(ctx, metav1.ListOptions{})
	for _, o := range policies.Items {
		left[o.Name] = true
	}
	claims, _ := core.PersistentVolumeClaims(fc.ns).List(ctx, metav1.ListOptions{})
	for _, o := range claims.Items {
		left[o.Name] = true
	}
	runningNames := objectNames("abc123", running)
	for _, name := range []string{runningNames.Pod, runningNames.Secret, runningNames.Claim} {
		want[name] = true // the live sandbox's
	}
	for name := range want {
		if !left[name] {
			t.Errorf("%s was swept", name)
		}
	}
	for name := range left {
		if !want[name] {
			t.Errorf("%s was left", name)
		}
	}
	select {
	case <-sb.Done():
		t.Fatal("the sweep ended a live sandbox")
	default:
	}
	stop(t, sb)
}

// TestCollectDeletesEndedClaims: a paused session that ends without
// resuming gets no Stop; the periodic collection deletes its claim.
func TestCollectDeletesEndedClaims(t *testing.T) {
	fc := newFakeCluster(t)
	sessions := &fakeSessions{owner: map[string]string{}, over: map[string]bool{}}
	d := fc.driver("abc123", mustTemplate(t, workspaceTemplate), sessions)
	stop(t, startOn(t, d, testSpec(testSession))) // paused
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if n, err := d.collect(ctx, false); err != nil || n != (Swept{}) {
		t.Fatalf("collected %v (%v) of a paused session", n, err)
	}
	sessions.setOver(testSession, true)
	if n, err := d.collect(ctx, false); err != nil || n != (Swept{Claims: 1}) {
		t.Fatalf("collected %v (%v), want the ended session's claim", n, err)
	}
	if p, s, np, c := fc.count(instanceSelector("abc123")); p+s+np+c != 0 {
		t.Errorf("left: %d pods, %d secrets, %d policies, %d claims", p, s, np, c)
	}
}
