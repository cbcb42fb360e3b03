package kubernetes

import (
	"strings"
	"testing"
)

func TestParseTemplateKinds(t *testing.T) {
	for name, doc := range map[string]string{
		"pod": `apiVersion: v1
kind: Pod
metadata: {namespace: sandboxes, labels: {team: a}}
spec:
  runtimeClassName: kata
  nodeSelector: {pool: sandboxes}
  containers: [{name: guest, image: reg/guest:1, imagePullPolicy: Always}]`,
		"podtemplate": `apiVersion: v1
kind: PodTemplate
metadata: {name: t, namespace: sandboxes}
template:
  metadata: {labels: {team: a}}
  spec:
    runtimeClassName: kata
    nodeSelector: {pool: sandboxes}
    containers: [{name: guest, image: reg/guest:1, imagePullPolicy: Always}]`,
		"bare": `metadata: {namespace: sandboxes, labels: {team: a}}
spec:
  runtimeClassName: kata
  nodeSelector: {pool: sandboxes}
  containers: [{name: guest, image: reg/guest:1, imagePullPolicy: Always}]`,
	} {
		tm, err := ParseTemplate([]byte(doc))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if tm.Meta.Namespace != "sandboxes" || tm.Meta.Labels["team"] != "a" || tm.RuntimeClass() != "kata" ||
			tm.Spec.NodeSelector["pool"] != "sandboxes" || tm.Image() != "reg/guest:1" || tm.Pausable() {
			t.Errorf("%s: read as %+v", name, tm)
		}
	}
}

func TestParseTemplateRefuses(t *testing.T) {
	for name, tc := range map[string]struct{ doc, want string }{
		"unknown field": {`spec: {containers: [{name: guest, imagePullPolcy: Always}]}`, "unknown field"},
		"other kind":    {"apiVersion: v1\nkind: Service\n", "want Pod"},
		"other version": {"apiVersion: v2\nkind: Pod\n", "apiVersion"},
		"host network":  {`spec: {hostNetwork: true}`, "hostNetwork"},
		"host path":     {`spec: {volumes: [{name: h, hostPath: {path: /}}]}`, "hostPath"},
		"privileged":    {`spec: {containers: [{name: side, securityContext: {privileged: true}}]}`, "privileged"},
		"host port":     {`spec: {containers: [{name: guest, ports: [{containerPort: 1, hostPort: 80}]}]}`, "host ports"},
		"shared pids":   {`spec: {shareProcessNamespace: true}`, "shareProcessNamespace"},
		"token": {`spec: {volumes: [{name: t, projected: {sources: [{serviceAccountToken: {path: t}}]}}]}`,
			"service account tokens"},
		"our volume": {`spec: {volumes: [{name: execlaw-secret, emptyDir: {}}]}`, "driver's"},
	} {
		_, err := ParseTemplate([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error about %q", name, err, tc.want)
		}
	}
}

func TestParseTemplateWorkspaceClaim(t *testing.T) {
	tm, err := ParseTemplate([]byte(`spec:
  volumes:
  - name: cache
    emptyDir: {}
  - name: workspace
    ephemeral:
      volumeClaimTemplate:
        metadata: {labels: {backup: "yes"}}
        spec:
          storageClassName: fast
          accessModes: [ReadWriteOnce]
          resources: {requests: {storage: 20Gi}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !tm.Pausable() || *tm.Workspace.Spec.StorageClassName != "fast" || tm.Workspace.Labels["backup"] != "yes" {
		t.Fatalf("workspace claim not taken: %+v", tm.Workspace)
	}
	if len(tm.Spec.Volumes) != 1 || tm.Spec.Volumes[0].Name != "cache" {
		t.Errorf("the ephemeral volume stays in the spec: %+v", tm.Spec.Volumes)
	}
}
