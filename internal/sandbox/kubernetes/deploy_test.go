package kubernetes

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

const deployDir = "../../../deploy/kubernetes"

// serverPods are the labels cmd/execlaw's --k8s-server-from selects the
// server by, in the cluster, by default.
var serverPods = map[string]string{"app.kubernetes.io/name": "execlaw", "app.kubernetes.io/component": "server"}

// readManifests decodes every document of the deploy directory's
// manifests into its client-go type, strictly: an unknown or misspelt
// field is an error, as it would be a silent no-op for kubectl.
func readManifests(t *testing.T, files []string) []runtime.Object {
	t.Helper()
	dec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var out []runtime.Object
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(deployDir, f))
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, _, err := dec.Decode(doc, nil, nil)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			out = append(out, obj)
		}
	}
	return out
}

func stripComments(doc []byte) []byte {
	var keep [][]byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			keep = append(keep, line)
		}
	}
	return bytes.Join(keep, []byte("\n"))
}

type kustomization struct {
	APIVersion         string   `json:"apiVersion"`
	Kind               string   `json:"kind"`
	Namespace          string   `json:"namespace"`
	Resources          []string `json:"resources"`
	ConfigMapGenerator []struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	} `json:"configMapGenerator"`
}

func TestDeployManifests(t *testing.T) {
	var k kustomization
	b, err := os.ReadFile(filepath.Join(deployDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml is a %q", k.Kind)
	}
	objs := readManifests(t, k.Resources)

	var (
		sa      *corev1.ServiceAccount
		role    *rbacv1.Role
		binding *rbacv1.RoleBinding
		deploy  *appsv1.Deployment
		svc     *corev1.Service
		claim   *corev1.PersistentVolumeClaim
		ns      *corev1.Namespace
	)
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.ServiceAccount:
			sa = o
		case *rbacv1.Role:
			role = o
		case *rbacv1.RoleBinding:
			binding = o
		case *appsv1.Deployment:
			deploy = o
		case *corev1.Service:
			svc = o
		case *corev1.PersistentVolumeClaim:
			claim = o
		case *corev1.Namespace:
			ns = o
		default:
			t.Errorf("unexpected %T", o)
		}
	}
	if sa == nil || role == nil || binding == nil || deploy == nil || svc == nil || claim == nil || ns == nil {
		t.Fatalf("missing objects: sa %v role %v binding %v deployment %v service %v claim %v namespace %v",
			sa != nil, role != nil, binding != nil, deploy != nil, svc != nil, claim != nil, ns != nil)
	}
	if ns.Name != k.Namespace || ns.Labels["pod-security.kubernetes.io/enforce"] != "baseline" {
		t.Errorf("namespace %s %v", ns.Name, ns.Labels)
	}

	// The Role grants what the driver uses, and nothing more.
	granted := map[string]bool{}
	for _, r := range role.Rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					if g == "*" || res == "*" || v == "*" {
						t.Errorf("wildcard rule %+v", r)
					}
					granted[g+"|"+res+"|"+v] = true
				}
			}
		}
	}
	needed := map[string]bool{}
	for _, p := range Permissions {
		res := p.Resource
		if p.Subresource != "" {
			res += "/" + p.Subresource
		}
		for _, v := range p.Verbs {
			needed[p.Group+"|"+res+"|"+v] = true
		}
	}
	for n := range needed {
		if !granted[n] {
			t.Errorf("the Role does not grant %s", n)
		}
	}
	for g := range granted {
		if !needed[g] {
			t.Errorf("the Role grants %s, which the driver does not use", g)
		}
	}
	if binding.RoleRef.Kind != "Role" || binding.RoleRef.Name != role.Name || len(binding.Subjects) != 1 ||
		binding.Subjects[0].Kind != "ServiceAccount" || binding.Subjects[0].Name != sa.Name {
		t.Errorf("binding %+v", binding)
	}

	// One server, never two on the SQLite volume; its pods carry the
	// labels guests let in; it reads the generated pod template.
	s := deploy.Spec
	if s.Replicas == nil || *s.Replicas != 1 || s.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("replicas %v, strategy %s", s.Replicas, s.Strategy.Type)
	}
	if !labels.SelectorFromSet(serverPods).Matches(labels.Set(s.Template.Labels)) {
		t.Errorf("server pods %v do not carry %v", s.Template.Labels, serverPods)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(s.Template.Labels)) {
		t.Errorf("the service selects %v, the pods are %v", svc.Spec.Selector, s.Template.Labels)
	}
	if s.Template.Spec.ServiceAccountName != sa.Name {
		t.Errorf("service account %s", s.Template.Spec.ServiceAccountName)
	}
	env := map[string]string{}
	for _, e := range s.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if env["EXECLAW_SANDBOX"] != "kubernetes" || env["EXECLAW_DATA_DIR"] != "/data" || env["EXECLAW_K8S_POD_TEMPLATE"] == "" {
		t.Errorf("env %v", env)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range s.Template.Spec.Volumes {
		vols[v.Name] = v
	}
	if v := vols["data"]; v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != claim.Name {
		t.Errorf("data volume %+v", v)
	}
	if len(k.ConfigMapGenerator) != 1 {
		t.Fatalf("config maps %+v", k.ConfigMapGenerator)
	}
	gen := k.ConfigMapGenerator[0]
	if v := vols["pod-template"]; v.ConfigMap == nil || v.ConfigMap.Name != gen.Name {
		t.Errorf("pod template volume %+v, generated %s", v, gen.Name)
	}
	mountedAt := ""
	for _, m := range s.Template.Spec.Containers[0].VolumeMounts {
		if m.Name == "pod-template" {
			mountedAt = m.MountPath
		}
	}
	key, file, _ := strings.Cut(gen.Files[0], "=")
	if filepath.Join(mountedAt, key) != env["EXECLAW_K8S_POD_TEMPLATE"] {
		t.Errorf("the template is at %s/%s, the server reads %s", mountedAt, key, env["EXECLAW_K8S_POD_TEMPLATE"])
	}
	if _, err := os.Stat(filepath.Join(deployDir, file)); err != nil {
		t.Error(err)
	}

	// Every manifest of the directory is used.
	entries, _ := os.ReadDir(deployDir)
	for _, e := range entries {
		if n := e.Name(); strings.HasSuffix(n, ".yaml") && n != "kustomization.yaml" && !slices.Contains(k.Resources, n) && !strings.HasPrefix(n, "pod-template-") {
			t.Errorf("%s is in no kustomization", n)
		}
	}
}

func TestDeployPodTemplates(t *testing.T) {
	for file, runtime := range map[string]string{"pod-template-kata.yaml": "kata", "pod-template-runc.yaml": ""} {
		tm, err := LoadTemplate(filepath.Join(deployDir, file))
		if err != nil {
			t.Fatal(err)
		}
		if tm.RuntimeClass() != runtime || !tm.Pausable() {
			t.Errorf("%s: runtime %q, pausable %v", file, tm.RuntimeClass(), tm.Pausable())
		}
		if labels.SelectorFromSet(serverPods).Matches(labels.Set(tm.Meta.Labels)) {
			t.Errorf("%s: session pods would pass for the server: %v", file, tm.Meta.Labels)
		}
		// The driver takes it as deploy/kubernetes runs it: in the cluster,
		// the server selected by its labels.
		if _, err := New(Config{
			Client: newFakeCluster(t).cs, Namespace: "execlaw", Instance: "abc123", Template: tm, Image: "execlaw-guest:1",
			Server: ServerPeers{PodLabels: serverPods},
		}); err != nil {
			t.Errorf("%s: %v", file, err)
		}
	}
}
