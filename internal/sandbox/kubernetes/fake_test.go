package kubernetes

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/execlaw/execlaw/internal/guest"
)

// fakeCluster is a fake API server with a fake kubelet: a pod created in
// it runs at once, on a loopback address of its own, a real execlaw-guest
// server that serves with the credentials of the pod's Secret, as the
// container would. Tests of what a cluster does between (scheduling,
// pulling) are podstate_test.go's and the real cluster's.
type fakeCluster struct {
	t      *testing.T
	cs     *fake.Clientset
	port   int
	ns     string
	mu     sync.Mutex
	next   int                     // the last loopback address handed out
	guests map[string]net.Listener // by pod name
	// podStatus, when set, is the status a new pod gets instead of
	// running its guest.
	podStatus func(*corev1.Pod) *corev1.PodStatus
}

var (
	podsGVR    = corev1.SchemeGroupVersion.WithResource("pods")
	secretsGVR = corev1.SchemeGroupVersion.WithResource("secrets")
)

func newFakeCluster(t *testing.T) *fakeCluster {
	t.Helper()
	// A port free on 127.0.0.1 is taken as every guest's, each on an
	// address of its own, as pods share a port on addresses of their own.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	fc := &fakeCluster{t: t, cs: fake.NewClientset(), port: port, ns: "sandboxes", next: 1, guests: map[string]net.Listener{}}
	fc.cs.PrependReactor("create", "pods", fc.createPod)
	fc.cs.PrependReactor("delete", "pods", fc.deletePod)
	t.Cleanup(func() {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		for _, ln := range fc.guests {
			ln.Close()
		}
	})
	return fc
}

// createPod is the kubelet: it starts the pod's guest and stores the pod
// as running. It runs under the fake's lock, so it reaches the stored
// objects through the tracker.
func (fc *fakeCluster) createPod(a k8stesting.Action) (bool, runtime.Object, error) {
	pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod).DeepCopy()
	pod.ResourceVersion = ""
	if fc.podStatus != nil {
		pod.Status = *fc.podStatus(pod)
		return true, pod, fc.cs.Tracker().Create(podsGVR, pod, pod.Namespace)
	}
	ip, err := fc.startGuest(pod)
	if err != nil {
		return true, nil, err
	}
	pod.Spec.NodeName = "node-1"
	pod.Status = *runningPod().Status.DeepCopy()
	pod.Status.PodIP = ip
	return true, pod, fc.cs.Tracker().Create(podsGVR, pod, pod.Namespace)
}

func (fc *fakeCluster) startGuest(pod *corev1.Pod) (string, error) {
	var secret string
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil {
			secret = v.Secret.SecretName
		}
	}
	obj, err := fc.cs.Tracker().Get(secretsGVR, pod.Namespace, secret)
	if err != nil {
		return "", fmt.Errorf("the pod's secret: %w", err)
	}
	data := obj.(*corev1.Secret).Data
	cred := guest.PodCredentials{Token: string(data[guest.PodTokenFile]), CertPEM: data[guest.PodCertFile], KeyPEM: data[guest.PodKeyFile]}
	fc.mu.Lock()
	fc.next++
	ip := fmt.Sprintf("127.0.0.%d", fc.next)
	fc.mu.Unlock()
	ln, err := guest.ListenPod(context.Background(), fmt.Sprintf("%s:%d", ip, fc.port), cred, nil)
	if err != nil {
		return "", err
	}
	srv := guest.NewServer(guest.ServerConfig{Workspace: fc.t.TempDir()})
	go srv.Serve(context.Background(), ln)
	fc.mu.Lock()
	fc.guests[pod.Name] = ln
	fc.mu.Unlock()
	return ip, nil
}

// deletePod stops the pod's guest; the tracker deletes the pod (at once:
// the fake knows no grace periods).
func (fc *fakeCluster) deletePod(a k8stesting.Action) (bool, runtime.Object, error) {
	name := a.(k8stesting.DeleteAction).GetName()
	fc.mu.Lock()
	if ln := fc.guests[name]; ln != nil {
		ln.Close()
		delete(fc.guests, name)
	}
	fc.mu.Unlock()
	return false, nil, nil
}

// driver is a driver on the fake cluster.
func (fc *fakeCluster) driver(instance string, tm Template, sessions Sessions) *Driver {
	fc.t.Helper()
	d, err := New(Config{
		Client: fc.cs, Namespace: fc.ns, Instance: instance, Template: tm, Image: "execlaw-guest:test",
		Server:   ServerPeers{CIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}},
		Sessions: sessions, guestPort: fc.port,
	})
	if err != nil {
		fc.t.Fatal(err)
	}
	return d
}

// count is how many objects of each kind the namespace holds with labels.
func (fc *fakeCluster) count(selector string) (pods, secrets, policies, claims int) {
	fc.t.Helper()
	ctx, o := context.Background(), metav1.ListOptions{LabelSelector: selector}
	p, err1 := fc.cs.CoreV1().Pods(fc.ns).List(ctx, o)
	s, err2 := fc.cs.CoreV1().Secrets(fc.ns).List(ctx, o)
	n, err3 := fc.cs.NetworkingV1().NetworkPolicies(fc.ns).List(ctx, o)
	c, err4 := fc.cs.CoreV1().PersistentVolumeClaims(fc.ns).List(ctx, o)
	for _, err := range []error{err1, err2, err3, err4} {
		if err != nil {
			fc.t.Fatal(err)
		}
	}
	return len(p.Items), len(s.Items), len(n.Items), len(c.Items)
}

// fakeSessions answers for owners and ends as a test says.
type fakeSessions struct {
	mu    sync.Mutex
	owner map[string]string
	over  map[string]bool
}

func (f *fakeSessions) Owner(_ context.Context, id string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.owner[id], nil
}

func (f *fakeSessions) Over(_ context.Context, id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.over[id], nil
}

func (f *fakeSessions) setOver(id string, over bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.over[id] = over
}
