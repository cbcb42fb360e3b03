// Package kwok runs sigs.k8s.io/kwok against the Kubernetes test cluster
// (testutil.K8sCluster) to simulate nodes: fake nodes that the scheduler
// places pods on and whose pods kwok reports Running, with nothing run.
// It is a package of its own so that testutil's users do not link
// client-go.
package kwok

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/execlaw/execlaw/internal/testutil"
)

const (
	// FakeKey is kwok's annotation on the nodes it manages (value "fake"),
	// and the key of their NoSchedule taint.
	FakeKey = "kwok.x-k8s.io/node"
	// RunKey labels and annotates one Start's nodes with its run id: its
	// kwok manages only those, and its pods select them.
	RunKey = "execlaw.dev/kwok-run"
)

// Nodes are one Start's fake nodes.
type Nodes struct {
	// Run names them: kwok-<run>-NNN, labelled RunKey=<run>.
	Run   string
	Names []string
	// NodeSelector and Toleration put a pod on these nodes, and only them.
	NodeSelector map[string]string
	Toleration   corev1.Toleration
}

// Start runs kwok as a child process, managing only the n nodes it
// registers (annotated FakeKey=fake and RunKey=<run>, tainted NoSchedule),
// and returns once all are Ready. On tb's cleanup kwok is stopped and the
// nodes and their leases are deleted, and gone. It fails tb, with the end
// of kwok's log, when the nodes are not Ready within two minutes.
func Start(tb testing.TB, kubeconfig string, n int) *Nodes {
	tb.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	cs, err := k8s.NewForConfig(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	var b [3]byte
	rand.Read(b[:])
	run := hex.EncodeToString(b[:])
	nodes := &Nodes{
		Run:          run,
		NodeSelector: map[string]string{RunKey: run},
		Toleration:   corev1.Toleration{Key: FakeKey, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	}

	bin := testutil.K8sTestbedBin(tb, "kwok")
	// Not in tb.TempDir: a failed run's log is kept, and its path logged.
	logPath := filepath.Join(os.TempDir(), "execlaw-kwok-"+run+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("kwok's log: %s", logPath)
			return
		}
		os.Remove(logPath)
	})
	cmd := exec.Command(bin,
		"--kubeconfig", filepath.Join(filepath.Dir(kubeconfig), "kwok.kubeconfig"),
		"--manage-all-nodes=false", "--manage-nodes-with-label-selector=",
		"--manage-nodes-with-annotation-selector="+FakeKey+"=fake,"+RunKey+"="+run,
		"--cidr=10.245.0.1/16", "--node-ip=10.245.0.1", "--node-lease-duration-seconds=0")
	// Known: kwok's client-go (v0.33) asks for watch-list streams, which
	// the test bed's API server refuses (its etcd gives no watch
	// progress), so kwok's watches end at once and it sees changes when
	// it lists again: pods Running and deleted in batches, seconds to
	// tens of seconds late. KUBE_FEATURE_WatchListClient=false does not
	// turn it off. No node leases (duration 0, heartbeats in the node's
	// status): renewed from that stale cache they conflicted, and kwok
	// left a node's pods alone until it held its lease again.
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		tb.Fatalf("kwok: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	logTail := func() string {
		b, _ := os.ReadFile(logPath)
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		return strings.Join(lines[max(0, len(lines)-30):], "\n")
	}
	// Registered first, so it runs last: the nodes go before kwok does.
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	tb.Cleanup(func() {
		if err := nodes.delete(cs); err != nil {
			tb.Errorf("kwok: removing the fake nodes of run %s: %v", run, err)
		}
	})

	ctx := context.Background()
	for i := range n {
		name := fmt.Sprintf("kwok-%s-%03d", run, i)
		if _, err := cs.CoreV1().Nodes().Create(ctx, fakeNode(name, run), metav1.CreateOptions{}); err != nil {
			tb.Fatalf("kwok: register node %s: %v", name, err)
		}
		nodes.Names = append(nodes.Names, name)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	go func() {
		select {
		case <-exited:
			cancel()
		case <-wctx.Done():
		}
	}()
	if err := waitReady(wctx, cs, run, n); err != nil {
		select {
		case <-exited:
			err = fmt.Errorf("kwok exited: %v", cmd.ProcessState)
		default:
		}
		tb.Fatalf("kwok: %d nodes not Ready: %v; kwok's log ends:\n%s", n, err, logTail())
	}
	return nodes
}

func fakeNode(name, run string) *corev1.Node {
	res := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				RunKey: run, "type": "kwok", "kubernetes.io/hostname": name,
				"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			},
			Annotations: map[string]string{FakeKey: "fake", RunKey: run, "node.alpha.kubernetes.io/ttl": "0"},
		},
		Spec: corev1.NodeSpec{
			Taints: []corev1.Taint{{Key: FakeKey, Value: "fake", Effect: corev1.TaintEffectNoSchedule}},
		},
		Status: corev1.NodeStatus{Capacity: res, Allocatable: res},
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func runListWatch(cs k8s.Interface, run string) *cache.ListWatch {
	sel := RunKey + "=" + run
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (k8sruntime.Object, error) {
			o.LabelSelector = sel
			return cs.CoreV1().Nodes().List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = sel
			return cs.CoreV1().Nodes().Watch(ctx, o)
		},
	}
}

// waitReady watches the run's nodes until n of them are Ready.
func waitReady(ctx context.Context, cs k8s.Interface, run string, n int) error {
	ready := map[string]bool{}
	pre := func(store cache.Store) (bool, error) {
		for _, o := range store.List() {
			node := o.(*corev1.Node)
			ready[node.Name] = nodeReady(node)
		}
		return count(ready) >= n, nil
	}
	cond := func(ev watch.Event) (bool, error) {
		node, ok := ev.Object.(*corev1.Node)
		if !ok {
			return false, nil
		}
		ready[node.Name] = ev.Type != watch.Deleted && nodeReady(node)
		return count(ready) >= n, nil
	}
	_, err := watchtools.UntilWithSync(ctx, runListWatch(cs, run), &corev1.Node{}, pre, cond)
	if err != nil {
		return fmt.Errorf("%d of %d Ready: %w", count(ready), n, err)
	}
	return nil
}

func count(m map[string]bool) int {
	c := 0
	for _, v := range m {
		if v {
			c++
		}
	}
	return c
}

// delete deletes the run's nodes, waits until they are gone, and deletes
// the leases kwok kept for them.
func (nodes *Nodes) delete(cs k8s.Interface) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sel := metav1.ListOptions{LabelSelector: RunKey + "=" + nodes.Run}
	if err := cs.CoreV1().Nodes().DeleteCollection(ctx, metav1.DeleteOptions{}, sel); err != nil {
		return err
	}
	present := map[string]bool{}
	pre := func(store cache.Store) (bool, error) {
		for _, o := range store.List() {
			present[o.(*corev1.Node).Name] = true
		}
		return len(present) == 0, nil
	}
	cond := func(ev watch.Event) (bool, error) {
		if node, ok := ev.Object.(*corev1.Node); ok {
			present[node.Name] = ev.Type != watch.Deleted
			if ev.Type == watch.Deleted {
				delete(present, node.Name)
			}
		}
		return len(present) == 0, nil
	}
	if _, err := watchtools.UntilWithSync(ctx, runListWatch(cs, nodes.Run), &corev1.Node{}, pre, cond); err != nil {
		return fmt.Errorf("nodes not gone: %w", err)
	}
	var errs []error
	for _, name := range nodes.Names {
		err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("lease %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
