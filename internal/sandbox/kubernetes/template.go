package kubernetes

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// GuestContainer is the name of the container the guest runs in. A
// template may bring one of that name (its image, pull policy, resources,
// env...) and other containers beside it; without one the driver adds it.
const GuestContainer = "guest"

// WorkspaceVolume is the volume mounted at the guest's workspace. A
// template that makes it a generic ephemeral volume (ephemeral:
// volumeClaimTemplate) asks for a persistent workspace: the driver makes a
// claim of its own from that template instead, which outlives the pod, so
// that a paused session resumes on its files.
const WorkspaceVolume = "workspace"

// Template is the operator's pod template, every session's pod is made
// from: where pods go (namespace, runtime class, node selector,
// tolerations...), their defaults (resources, pull policy) and the
// workspace's storage.
type Template struct {
	Meta metav1.ObjectMeta
	Spec corev1.PodSpec
	// Workspace is the persistent workspace's claim template, when the
	// template asks for one (see WorkspaceVolume).
	Workspace *corev1.PersistentVolumeClaimTemplate
}

// Pausable says sessions keep their files across a pause: their workspace
// is a claim of its own, not a directory that dies with the pod.
func (t Template) Pausable() bool { return t.Workspace != nil }

// RuntimeClass is the pod's runtime class, "" for the cluster's default
// (usually runc: containers, not VMs).
func (t Template) RuntimeClass() string {
	if t.Spec.RuntimeClassName == nil {
		return ""
	}
	return *t.Spec.RuntimeClassName
}

// LoadTemplate reads a pod template file (see ParseTemplate).
func LoadTemplate(path string) (Template, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Template{}, fmt.Errorf("pod template: %w", err)
	}
	t, err := ParseTemplate(b)
	if err != nil {
		return Template{}, fmt.Errorf("pod template %s: %w", path, err)
	}
	return t, nil
}

// ParseTemplate reads a pod template: YAML (or JSON) of a Pod, a
// PodTemplate, or a bare PodTemplateSpec (metadata and spec, no kind).
// Unknown fields are errors, so that a misspelt setting is not silently
// dropped. A template that would weaken the sandbox is refused (see check).
func ParseTemplate(data []byte) (Template, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(data, &head); err != nil {
		return Template{}, err
	}
	if head.APIVersion != "" && head.APIVersion != "v1" {
		return Template{}, fmt.Errorf("apiVersion %q: want v1", head.APIVersion)
	}
	var t Template
	switch head.Kind {
	case "Pod":
		var p corev1.Pod
		if err := yaml.UnmarshalStrict(data, &p); err != nil {
			return Template{}, err
		}
		t.Meta, t.Spec = p.ObjectMeta, p.Spec
	case "PodTemplate":
		var p corev1.PodTemplate
		if err := yaml.UnmarshalStrict(data, &p); err != nil {
			return Template{}, err
		}
		t.Meta, t.Spec = p.Template.ObjectMeta, p.Template.Spec
		if t.Meta.Namespace == "" {
			t.Meta.Namespace = p.Namespace
		}
	case "":
		var p corev1.PodTemplateSpec
		if err := yaml.UnmarshalStrict(data, &p); err != nil {
			return Template{}, err
		}
		t.Meta, t.Spec = p.ObjectMeta, p.Spec
	default:
		return Template{}, fmt.Errorf("kind %q: want Pod, PodTemplate or a bare pod template (metadata and spec)", head.Kind)
	}
	if err := t.check(); err != nil {
		return Template{}, err
	}
	t.takeWorkspace()
	return t, nil
}

// check refuses what would let a guest out of its pod or reach the
// cluster: the host's namespaces and files, privileged containers, a
// shared process namespace, service account tokens. The operator writes
// the template, but guests run untrusted code, and one line of YAML copied
// from elsewhere should not undo the sandbox.
func (t Template) check() error {
	s := t.Spec
	var errs []error
	if s.HostNetwork || s.HostPID || s.HostIPC {
		errs = append(errs, errors.New("hostNetwork, hostPID and hostIPC are not allowed"))
	}
	if s.ShareProcessNamespace != nil && *s.ShareProcessNamespace {
		errs = append(errs, errors.New("shareProcessNamespace is not allowed: the guest must be the first process of its container"))
	}
	if len(s.EphemeralContainers) > 0 {
		errs = append(errs, errors.New("ephemeralContainers cannot be in a template"))
	}
	for _, v := range s.Volumes {
		switch {
		case v.HostPath != nil:
			errs = append(errs, fmt.Errorf("volume %q: hostPath volumes are not allowed", v.Name))
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.ServiceAccountToken != nil {
					errs = append(errs, fmt.Errorf("volume %q: service account tokens are not allowed", v.Name))
				}
			}
		case v.Name == secretVolume:
			errs = append(errs, fmt.Errorf("volume %q: the name is the driver's", v.Name))
		}
	}
	all := slices.Concat(s.InitContainers, s.Containers)
	for _, c := range all {
		if sc := c.SecurityContext; sc != nil && sc.Privileged != nil && *sc.Privileged {
			errs = append(errs, fmt.Errorf("container %q: privileged containers are not allowed", c.Name))
		}
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				errs = append(errs, fmt.Errorf("container %q: host ports are not allowed", c.Name))
			}
		}
	}
	for _, c := range s.InitContainers {
		if c.Name == GuestContainer {
			errs = append(errs, fmt.Errorf("init container %q: the name is the guest's", c.Name))
		}
	}
	return errors.Join(errs...)
}

// takeWorkspace moves a generic ephemeral workspace volume's claim template
// out of the spec: the driver makes that claim itself (see WorkspaceVolume).
func (t *Template) takeWorkspace() {
	for i, v := range t.Spec.Volumes {
		if v.Name == WorkspaceVolume && v.Ephemeral != nil && v.Ephemeral.VolumeClaimTemplate != nil {
			t.Workspace = v.Ephemeral.VolumeClaimTemplate.DeepCopy()
			t.Spec.Volumes = append(t.Spec.Volumes[:i:i], t.Spec.Volumes[i+1:]...)
			return
		}
	}
}

// guestContainer is the template's guest container, or nil.
func (t Template) guestContainer() *corev1.Container {
	for i := range t.Spec.Containers {
		if t.Spec.Containers[i].Name == GuestContainer {
			return &t.Spec.Containers[i]
		}
	}
	return nil
}

// Image is the guest image the template names, "" for none.
func (t Template) Image() string {
	if c := t.guestContainer(); c != nil {
		return strings.TrimSpace(c.Image)
	}
	return ""
}
