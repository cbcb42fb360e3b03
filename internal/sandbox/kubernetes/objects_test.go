package kubernetes

import (
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func testParams() podParams {
	return podParams{
		Instance: "abc123", Session: "s_0123456789abcdef01234567", Owner: ownerLabel("alice"), OwnerID: "alice",
		Names: objectNames("abc123", "s_0123456789abcdef01234567"), Namespace: "sandboxes", Image: "execlaw-guest:1",
		VCPUs: 2, MemoryMiB: 2048, DiskMiB: 8192, Args: guestArgs(GuestPort),
	}
}

func mustTemplate(t *testing.T, doc string) Template {
	t.Helper()
	tm, err := ParseTemplate([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func TestBuildPodDecidesWhatTheTemplateMayNot(t *testing.T) {
	tm := mustTemplate(t, `metadata:
  labels: {team: a, execlaw.dev/instance: forged}
  annotations: {note: kept}
spec:
  restartPolicy: Always
  automountServiceAccountToken: true
  enableServiceLinks: true
  serviceAccountName: builder
  runtimeClassName: kata
  tolerations: [{key: sandbox, operator: Exists}]
  containers:
  - name: guest
    image: from-template:1
    env: [{name: HTTP_PROXY, value: "http://proxy:3128"}]
    securityContext:
      allowPrivilegeEscalation: true
      capabilities: {add: [SYS_ADMIN, NET_RAW]}
      seccompProfile: {type: Unconfined}
    resources:
      requests: {cpu: 100m, memory: 1Gi, ephemeral-storage: 1Gi}
      limits: {cpu: 8, memory: 64Gi, ephemeral-storage: 10Gi}
    volumeMounts: [{name: cache, mountPath: /workspace}]
  - name: sidecar
    image: side:1
    securityContext: {capabilities: {add: [NET_ADMIN]}}
  volumes: [{name: cache, emptyDir: {}}]`)
	p := testParams()
	pod := buildPod(tm, p)
	s := pod.Spec

	for k, v := range map[string]string{LabelInstance: "abc123", LabelSession: p.Session, LabelOwner: p.Owner, LabelPart: partGuest, "team": "a"} {
		if pod.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, pod.Labels[k], v)
		}
	}
	if pod.Annotations["note"] != "kept" || pod.Annotations[AnnotationOwnerID] != "alice" {
		t.Errorf("annotations %v", pod.Annotations)
	}
	if pod.Name != p.Names.Pod || pod.Namespace != "sandboxes" || s.Hostname != "execlaw-0123456789ab" {
		t.Errorf("named %s/%s, host %s", pod.Namespace, pod.Name, s.Hostname)
	}
	if s.RestartPolicy != corev1.RestartPolicyNever || *s.AutomountServiceAccountToken || *s.EnableServiceLinks {
		t.Errorf("restart %s, token %v, service links %v", s.RestartPolicy, *s.AutomountServiceAccountToken, *s.EnableServiceLinks)
	}
	if *s.RuntimeClassName != "kata" || s.Tolerations[0].Key != "sandbox" || s.ServiceAccountName != "builder" {
		t.Errorf("template placement lost: %+v", s)
	}
	if s.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault || *s.TerminationGracePeriodSeconds != defaultTerminationGrace {
		t.Errorf("pod security %+v, grace %d", s.SecurityContext, *s.TerminationGracePeriodSeconds)
	}
	if len(s.Containers) != 2 || s.Containers[0].Name != GuestContainer {
		t.Fatalf("containers %+v", s.Containers)
	}
	g := s.Containers[0]
	if g.Image != "execlaw-guest:1" || g.ImagePullPolicy != corev1.PullIfNotPresent || !slices.Equal(g.Args, guestArgs(GuestPort)) {
		t.Errorf("guest image %s (%s), args %v", g.Image, g.ImagePullPolicy, g.Args)
	}
	if g.Env[0].Name != "HTTP_PROXY" || g.WorkingDir != WorkspaceDir {
		t.Errorf("env %v, dir %s", g.Env, g.WorkingDir)
	}
	sc := g.SecurityContext
	if *sc.Privileged || *sc.AllowPrivilegeEscalation || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		!slices.Equal(sc.Capabilities.Add, guestCaps) || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("guest security %+v", sc)
	}
	if side := s.Containers[1].SecurityContext; len(side.Capabilities.Add) != 0 || *side.AllowPrivilegeEscalation {
		t.Errorf("sidecar keeps privileges: %+v", side)
	}
	for _, c := range guestCaps {
		if c == "SYS_ADMIN" || c == "NET_RAW" || c == "NET_ADMIN" {
			t.Errorf("guest keeps %s", c)
		}
	}

	// Session size as request and limit; what else the template gives stays.
	r := g.Resources
	want := map[corev1.ResourceName]string{corev1.ResourceCPU: "2", corev1.ResourceMemory: "2Gi"}
	for name, q := range want {
		req, lim := r.Requests[name], r.Limits[name]
		if req.Cmp(resource.MustParse(q)) != 0 || lim.Cmp(resource.MustParse(q)) != 0 {
			t.Errorf("%s: request %v, limit %v, want %s", name, r.Requests[name], r.Limits[name], q)
		}
	}
	if eph := r.Limits[corev1.ResourceEphemeralStorage]; eph.Cmp(resource.MustParse("10Gi")) != 0 {
		t.Errorf("template's ephemeral-storage limit lost: %v", r.Limits)
	}

	// The credentials, read-only 0400; the workspace at /workspace, not the
	// template's volume that was mounted there.
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range g.VolumeMounts {
		mounts[m.MountPath] = m
	}
	if m := mounts[SecretDir]; m.Name != secretVolume || !m.ReadOnly {
		t.Errorf("secret mount %+v", m)
	}
	if m := mounts[WorkspaceDir]; m.Name != WorkspaceVolume || len(g.VolumeMounts) != 2 {
		t.Errorf("workspace mount %+v of %v", m, g.VolumeMounts)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range s.Volumes {
		vols[v.Name] = v
	}
	if v := vols[secretVolume]; v.Secret == nil || v.Secret.SecretName != p.Names.Secret || *v.Secret.DefaultMode != 0o400 {
		t.Errorf("secret volume %+v", v)
	}
	if v := vols[WorkspaceVolume]; v.EmptyDir == nil || v.EmptyDir.SizeLimit.Cmp(resource.MustParse("8Gi")) != 0 {
		t.Errorf("workspace volume %+v", v)
	}
	if s.DNSPolicy != "" || s.DNSConfig != nil {
		t.Errorf("DNS set without being asked: %s %+v", s.DNSPolicy, s.DNSConfig)
	}
	// The template is not changed by building from it.
	if tm.Spec.Containers[0].Image != "from-template:1" || len(tm.Spec.Volumes) != 1 || tm.Spec.RestartPolicy != corev1.RestartPolicyAlways {
		t.Errorf("template changed: %+v", tm.Spec)
	}
}

func TestBuildPodAddsGuestAndDNS(t *testing.T) {
	p := testParams()
	p.DNS = []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("8.8.8.8")}
	pod := buildPod(Template{}, p)
	if len(pod.Spec.Containers) != 1 || pod.Spec.Containers[0].Name != GuestContainer || pod.Spec.Containers[0].Image != p.Image {
		t.Fatalf("containers %+v", pod.Spec.Containers)
	}
	if pod.Spec.DNSPolicy != corev1.DNSNone || !slices.Equal(pod.Spec.DNSConfig.Nameservers, []string{"1.1.1.1", "8.8.8.8"}) {
		t.Errorf("dns %s %+v", pod.Spec.DNSPolicy, pod.Spec.DNSConfig)
	}
}

func TestBuildClaimAndPodOnIt(t *testing.T) {
	tm := mustTemplate(t, `spec:
  volumes:
  - name: workspace
    ephemeral:
      volumeClaimTemplate:
        metadata: {labels: {backup: "yes"}}
        spec: {storageClassName: fast}`)
	p := testParams()
	c := buildClaim(tm, p)
	if c.Name != p.Names.Claim || c.Labels[LabelInstance] != "abc123" || c.Labels[LabelSession] != p.Session ||
		c.Labels[LabelPart] != partWorkspace || c.Labels["backup"] != "yes" {
		t.Errorf("claim meta %+v", c.ObjectMeta)
	}
	if *c.Spec.StorageClassName != "fast" || c.Spec.AccessModes[0] != corev1.ReadWriteOnce ||
		c.Spec.Resources.Requests.Storage().Cmp(resource.MustParse("8Gi")) != 0 {
		t.Errorf("claim spec %+v", c.Spec)
	}
	pod := buildPod(tm, p)
	var ws *corev1.Volume
	for i, v := range pod.Spec.Volumes {
		if v.Name == WorkspaceVolume {
			ws = &pod.Spec.Volumes[i]
		}
	}
	if ws == nil || ws.PersistentVolumeClaim == nil || ws.PersistentVolumeClaim.ClaimName != p.Names.Claim {
		t.Errorf("workspace volume %+v", ws)
	}
}

func TestBuildSecret(t *testing.T) {
	p := testParams()
	s := buildSecret(p, map[string][]byte{"token": []byte("t")})
	if s.Name != p.Names.Secret || s.Labels[LabelInstance] != "abc123" || s.Labels[LabelSession] != p.Session ||
		s.Labels[LabelPart] != partSecret || !*s.Immutable || string(s.Data["token"]) != "t" {
		t.Errorf("secret %+v", s)
	}
}
