package kubernetes

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/image"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/testutil"
)

// TestDeployOnCluster applies deploy/kubernetes to the test cluster as a
// kustomize overlay would (its namespace, the images, the runc template, a
// storage class), with the server's image as `execlaw image server` writes
// it: the server runs in the cluster as the Deployment says (its service
// account and Role, its data claim, a read-only root, the Pod Security
// level of namespace.yaml), reaches the API server as pods do, and makes
// a session's pod, secret, policy and workspace claim, in which the
// agent's bash tool runs; deleting the session deletes them.
func TestDeployOnCluster(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	testutil.VMImage(t)
	guestImage := testutil.K8sImageOf(t, "minimal")
	serverImage := k8sServerImage(t)
	class := c.ns // a storage class of the test's own: only its claims bind its volumes
	dataDir := c.hostPathVolume("data", class, "2Gi", "execlaw-data")
	c.hostPathVolume("workspace", class, "8Gi", "")

	// namespace.yaml's Pod Security labels, on the test's namespace.
	for _, obj := range readManifests(t, []string{"namespace.yaml"}) {
		ns, err := c.cs.CoreV1().Namespaces().Get(ctx, c.ns, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ns.Labels = obj.(*corev1.Namespace).Labels
		if _, err := c.cs.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c.createConfigMap(t, class)

	// The fake model provider listens where the host meets the pods.
	fake := llmtest.NewAnthropic(
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"hostname; echo from-the-deployed-server > f.txt; cat f.txt"}`}}},
		llmtest.Turn{Text: "Done."},
	).Attach(t)
	gateway := testutil.K8sServerFrom(t).Addr()
	ln, err := net.Listen("tcp", net.JoinHostPort(gateway.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	baseURL := fake.ServeOn(ln)

	applied := time.Now()
	for _, obj := range readManifests(t, []string{"rbac.yaml", "data.yaml", "deployment.yaml", "service.yaml"}) {
		switch o := obj.(type) {
		case *appsv1.Deployment:
			g := &o.Spec.Template.Spec.Containers[0]
			g.Image = serverImage
			for i, e := range g.Env {
				if e.Name == "EXECLAW_K8S_IMAGE" {
					g.Env[i].Value = guestImage
				}
			}
			// The test cluster has no kube-proxy: pods reach the API server
			// where it listens, not at the kubernetes Service's address.
			api := c.apiServer(t)
			g.Env = append(g.Env,
				corev1.EnvVar{Name: "KUBERNETES_SERVICE_HOST", Value: api.Hostname()},
				corev1.EnvVar{Name: "KUBERNETES_SERVICE_PORT", Value: api.Port()},
				corev1.EnvVar{Name: "EXECLAW_MODEL_HOSTS", Value: gateway.String()},
				corev1.EnvVar{Name: "EXECLAW_LOG_LEVEL", Value: "debug"})
		case *corev1.PersistentVolumeClaim:
			o.Spec.StorageClassName = &class
		case *rbacv1.RoleBinding:
			for i := range o.Subjects {
				o.Subjects[i].Namespace = c.ns
			}
		}
		c.create(t, obj)
	}

	server := c.waitServerReady(t)
	t.Logf("the server's pod %s ready %s after the manifests were applied", server.Name, time.Since(applied).Round(time.Millisecond))
	token, err := os.ReadFile(filepath.Join(dataDir, "token"))
	if err != nil {
		t.Fatalf("the server's token on its data volume: %v", err)
	}
	api := &deployedServer{t: t, url: "http://" + net.JoinHostPort(server.Status.PodIP, "8000"), token: strings.TrimSpace(string(token))}

	var v struct{ ID, State, Sandbox string }
	created := time.Now()
	api.do("POST", "/api/sessions", map[string]any{"provider": "anthropic", "apiKey": "sk-ant-deployed-key-0123456789",
		"model": "claude-sonnet-4-20250514", "baseUrl": baseURL, "vcpus": 1, "memoryMiB": 512}, &v)
	deadline := time.Now().Add(3 * time.Minute)
	for v.State != "active" {
		if time.Now().After(deadline) || v.State == "error" || v.State == "stopped" {
			t.Fatalf("session %s is %s\n%s", v.ID, v.State, c.podLog(server.Name))
		}
		time.Sleep(200 * time.Millisecond)
		api.do("GET", "/api/sessions/"+v.ID+"/status", nil, &v)
	}
	t.Logf("session %s active %s after POST /api/sessions to the server in the cluster", v.ID, time.Since(created).Round(time.Millisecond))
	sessionSel := LabelSession + "=" + v.ID
	pods, err := c.cs.CoreV1().Pods(c.ns).List(ctx, metav1.ListOptions{LabelSelector: sessionSel})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("the session's pods: %v %v", pods, err)
	}
	pod := pods.Items[0]
	if !hasClaim(pod) {
		t.Errorf("the session's pod has no workspace claim: %+v", pod.Spec.Volumes)
	}

	st := testutil.OpenSSE(t, http.DefaultClient, api.url+"/api/sessions/"+v.ID+"/stream", api.header())
	api.do("POST", "/api/sessions/"+v.ID+"/input", map[string]string{"message": "go"}, nil)
	st.WaitType(t, 2*time.Minute, event.AgentIdle, 1)
	if out := st.WaitType(t, time.Second, event.ToolResult, 1).Field("output"); out != pod.Spec.Hostname+"\nfrom-the-deployed-server\n" {
		t.Errorf("the bash tool's output: %q (the session's pod is %s, host name %s)", out, pod.Name, pod.Spec.Hostname)
	}
	st.Close()

	api.do("DELETE", "/api/sessions/"+v.ID, nil, nil)
	deadline = time.Now().Add(2 * time.Minute)
	for {
		left := c.left(c.instanceOf(pod))
		if left == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left after the session was deleted: %s", left)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if log := c.podLog(server.Name); strings.Contains(log, "sk-ant-deployed-key") {
		t.Error("the server's log holds the API key")
	}
}

// apiServer is where the test cluster's API server listens.
func (c *cluster) apiServer(t *testing.T) *url.URL {
	t.Helper()
	u, err := url.Parse(c.host)
	if err != nil || u.Port() == "" {
		t.Fatalf("the API server's address %q: %v", c.host, err)
	}
	return u
}

func hasClaim(p corev1.Pod) bool {
	for _, v := range p.Spec.Volumes {
		if v.Name == "workspace" && v.PersistentVolumeClaim != nil {
			return true
		}
	}
	return false
}

// k8sServerImage writes this tree's execlaw as the server image and
// imports it into the test cluster.
func k8sServerImage(t *testing.T) string {
	t.Helper()
	archive := filepath.Join(t.TempDir(), "server.oci.tar")
	img, err := image.WriteServerOCI(context.Background(), image.ServerOCIOptions{
		Path: archive, Binary: testutil.Binary(t, "execlaw"), Version: "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.K8sImportImage(t, archive)
	return img.Name
}

// hostPathVolume makes a volume of storage class class on a directory of
// the test's (owned by the server image's user, which deployment.yaml
// runs as), bound ahead to the claim named claim when one is given, and
// returns the directory.
func (c *cluster) hostPathVolume(name, class, size, claim string) string {
	c.t.Helper()
	dir := filepath.Join(c.t.TempDir(), name)
	if err := os.Mkdir(dir, 0o750); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Chown(dir, image.OCIServerUID, image.OCIServerUID); err != nil {
		c.t.Fatal(err)
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: c.ns + "-" + name},
		Spec: corev1.PersistentVolumeSpec{
			StorageClassName:              class,
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: dir, Type: new(corev1.HostPathDirectory),
			}},
		},
	}
	if claim != "" {
		pv.Spec.ClaimRef = &corev1.ObjectReference{Namespace: c.ns, Name: claim}
	}
	if _, err := c.cs.CoreV1().PersistentVolumes().Create(context.Background(), pv, metav1.CreateOptions{}); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() {
		_ = c.cs.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{})
	})
	return dir
}

// createConfigMap is kustomization.yaml's configMapGenerator, with the
// runc template (the test cluster has no Kata) asking for claims of class.
func (c *cluster) createConfigMap(t *testing.T, class string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "pod-template-runc.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var tmpl corev1.PodTemplateSpec
	if err := yaml.UnmarshalStrict(b, &tmpl); err != nil {
		t.Fatal(err)
	}
	for _, v := range tmpl.Spec.Volumes {
		if v.Ephemeral != nil {
			v.Ephemeral.VolumeClaimTemplate.Spec.StorageClassName = &class
		}
	}
	if b, err = yaml.Marshal(tmpl); err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "execlaw-pod-template"}, Data: map[string]string{"pod-template.yaml": string(b)}}
	c.create(t, cm)
}

// create makes one object of the deploy manifests in the test's namespace.
func (c *cluster) create(t *testing.T, obj runtime.Object) {
	t.Helper()
	ctx, opts := context.Background(), metav1.CreateOptions{}
	var err error
	switch o := obj.(type) {
	case *corev1.ServiceAccount:
		_, err = c.cs.CoreV1().ServiceAccounts(c.ns).Create(ctx, o, opts)
	case *rbacv1.Role:
		_, err = c.cs.RbacV1().Roles(c.ns).Create(ctx, o, opts)
	case *rbacv1.RoleBinding:
		_, err = c.cs.RbacV1().RoleBindings(c.ns).Create(ctx, o, opts)
	case *corev1.PersistentVolumeClaim:
		_, err = c.cs.CoreV1().PersistentVolumeClaims(c.ns).Create(ctx, o, opts)
	case *corev1.ConfigMap:
		_, err = c.cs.CoreV1().ConfigMaps(c.ns).Create(ctx, o, opts)
	case *appsv1.Deployment:
		_, err = c.cs.AppsV1().Deployments(c.ns).Create(ctx, o, opts)
	case *corev1.Service:
		_, err = c.cs.CoreV1().Services(c.ns).Create(ctx, o, opts)
	default:
		err = fmt.Errorf("no create for %T", obj)
	}
	if err != nil {
		t.Fatalf("create %T: %v", obj, err)
	}
}

// waitServerReady waits until the Deployment's pod is ready (its
// readiness probe answered).
func (c *cluster) waitServerReady(t *testing.T) corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		pods, err := c.cs.CoreV1().Pods(c.ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=server"})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			if ready(&p) {
				return p
			}
		}
		if time.Now().After(deadline) {
			var why []string
			for _, p := range pods.Items {
				why = append(why, fmt.Sprintf("%s: %s %+v\n%s", p.Name, p.Status.Phase, p.Status.ContainerStatuses, c.podLog(p.Name)))
			}
			events, _ := c.cs.CoreV1().Events(c.ns).List(context.Background(), metav1.ListOptions{})
			for _, e := range events.Items {
				why = append(why, e.InvolvedObject.Name+": "+e.Reason+": "+e.Message)
			}
			t.Fatalf("the server's pod is not ready:\n%s", strings.Join(why, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// podLog is the end of a pod's log, for failure messages.
func (c *cluster) podLog(pod string) string {
	b, err := c.cs.CoreV1().Pods(c.ns).GetLogs(pod, &corev1.PodLogOptions{}).DoRaw(context.Background())
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

func (c *cluster) instanceOf(p corev1.Pod) string { return p.Labels[LabelInstance] }

// deployedServer is a client of the server running in the cluster.
type deployedServer struct {
	t     *testing.T
	url   string
	token string
}

func (s *deployedServer) header() http.Header {
	return http.Header{"Authorization": {"Bearer " + s.token}}
}

// do sends a request and decodes a 2xx answer into out (when not nil).
func (s *deployedServer) do(method, path string, body, out any) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header = s.header()
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		s.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			s.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
}
