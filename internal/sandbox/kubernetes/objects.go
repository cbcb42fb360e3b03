package kubernetes

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/execlaw/execlaw/internal/guest"
)

// Where the guest finds what the driver gives it.
const (
	// WorkspaceDir is where the agent works, in the guest container.
	WorkspaceDir = "/workspace"
	// SecretDir is where the session's guest credentials are mounted.
	SecretDir = guest.DefaultPodSecretDir
	// secretVolume is the volume of the credentials' Secret.
	secretVolume = "execlaw-secret"
)

// Object parts, the LabelPart values.
const (
	partGuest     = "guest"
	partSecret    = "secret"
	partPolicy    = "policy"
	partWorkspace = "workspace"
)

// guestCaps are the capabilities the guest container keeps. The agent runs
// as root in its container and installs packages: apt and dpkg change
// owners and modes (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETFCAP), drop to
// their own users (SETUID, SETGID), the guest kills what commands leave
// (KILL), and dev servers bind low ports (NET_BIND_SERVICE). Everything
// else of a container runtime's default set goes: raw sockets (NET_RAW:
// spoofing on the pod network), MKNOD, AUDIT_WRITE, SYS_CHROOT, SETPCAP.
// All are within the Pod Security "baseline" level.
var guestCaps = []corev1.Capability{
	"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETUID",
}

// defaultTerminationGrace is the pods' grace period unless the template
// sets one: an eviction or a delete by someone else should not wait the
// default 30s for a guest whose session is gone anyway.
const defaultTerminationGrace = 5

// podParams is what one session's pod is made of besides the template.
type podParams struct {
	Instance, Session, Owner, OwnerID string
	Names                             names
	Namespace                         string
	Image                             string
	VCPUs, MemoryMiB, DiskMiB         int
	// DNS, when set, are the resolvers the pod is given instead of the
	// cluster's (dnsPolicy None); empty keeps the template's DNS settings.
	DNS []netip.Addr
	// Args are the guest's command-line arguments (the image's entrypoint
	// runs it).
	Args []string
	// PooledAs is a pooled sandbox's pool id (see pool.go), "" for a
	// session's own.
	PooledAs string
}

// objectMeta is the metadata of one of the sandbox's objects: the
// template's labels and annotations, when it gives some, and the driver's
// over them (labels, and the owner's id).
func (p podParams) objectMeta(name, part string, labels, annotations map[string]string) metav1.ObjectMeta {
	l := maps.Clone(labels)
	if l == nil {
		l = map[string]string{}
	}
	maps.Copy(l, p.labels(part))
	ann := maps.Clone(annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationOwnerID] = p.OwnerID
	return metav1.ObjectMeta{Name: name, Namespace: p.Namespace, Labels: l, Annotations: ann}
}

// buildSecret is the Secret holding a session's guest credentials.
func buildSecret(p podParams, data map[string][]byte) *corev1.Secret {
	immutable := true
	return &corev1.Secret{
		ObjectMeta: p.objectMeta(p.Names.Secret, partSecret, nil, nil),
		Type:       corev1.SecretTypeOpaque,
		Immutable:  &immutable,
		Data:       data,
	}
}

// buildClaim is a session's workspace claim, made from the template's
// claim template; its size is the session's disk size unless the template
// gives one.
func buildClaim(t Template, p podParams) *corev1.PersistentVolumeClaim {
	spec := *t.Workspace.Spec.DeepCopy()
	if len(spec.AccessModes) == 0 {
		spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	if _, ok := spec.Resources.Requests[corev1.ResourceStorage]; !ok && p.DiskMiB > 0 {
		if spec.Resources.Requests == nil {
			spec.Resources.Requests = corev1.ResourceList{}
		}
		spec.Resources.Requests[corev1.ResourceStorage] = mib(p.DiskMiB)
	}
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: p.objectMeta(p.Names.Claim, partWorkspace, t.Workspace.Labels, t.Workspace.Annotations),
		Spec:       spec,
	}
}

// buildPod is a session's pod: the template, with what the driver decides
// whatever the template says (labels, restart policy, no service account
// token, no service links, the guest container's privileges, resources,
// credentials and workspace).
func buildPod(t Template, p podParams) *corev1.Pod {
	spec := *t.Spec.DeepCopy()
	no := false
	spec.RestartPolicy = corev1.RestartPolicyNever
	spec.AutomountServiceAccountToken = &no
	spec.EnableServiceLinks = &no
	spec.Hostname = "execlaw-" + shortID(p.Session)
	if spec.TerminationGracePeriodSeconds == nil {
		g := int64(defaultTerminationGrace)
		spec.TerminationGracePeriodSeconds = &g
	}
	if spec.SecurityContext == nil {
		spec.SecurityContext = &corev1.PodSecurityContext{}
	}
	if spec.SecurityContext.SeccompProfile == nil {
		spec.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	}
	if len(p.DNS) > 0 {
		spec.DNSPolicy = corev1.DNSNone
		spec.DNSConfig = &corev1.PodDNSConfig{}
		for _, a := range p.DNS {
			spec.DNSConfig.Nameservers = append(spec.DNSConfig.Nameservers, a.String())
		}
	}

	// Volumes: the credentials, and the workspace unless the template
	// gives one of its own kind.
	mode := int32(0o400)
	spec.Volumes = append(spec.Volumes, corev1.Volume{Name: secretVolume, VolumeSource: corev1.VolumeSource{
		Secret: &corev1.SecretVolumeSource{SecretName: p.Names.Secret, DefaultMode: &mode},
	}})
	switch {
	case t.Workspace != nil:
		spec.Volumes = append(spec.Volumes, corev1.Volume{Name: WorkspaceVolume, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: p.Names.Claim},
		}})
	case !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == WorkspaceVolume }):
		ed := &corev1.EmptyDirVolumeSource{}
		if p.DiskMiB > 0 {
			q := mib(p.DiskMiB)
			ed.SizeLimit = &q
		}
		spec.Volumes = append(spec.Volumes, corev1.Volume{Name: WorkspaceVolume, VolumeSource: corev1.VolumeSource{EmptyDir: ed}})
	}

	// Every container of the template loses privileges the same way: a
	// sidecar shares the guest's network, and must not be its way out.
	for i := range spec.InitContainers {
		confine(&spec.InitContainers[i], nil)
	}
	gi := slices.IndexFunc(spec.Containers, func(c corev1.Container) bool { return c.Name == GuestContainer })
	if gi < 0 {
		spec.Containers = append([]corev1.Container{{Name: GuestContainer}}, spec.Containers...)
		gi = 0
	}
	for i := range spec.Containers {
		if i != gi {
			confine(&spec.Containers[i], nil)
		}
	}
	g := &spec.Containers[gi]
	confine(g, guestCaps)
	g.Image = p.Image
	if g.ImagePullPolicy == "" {
		g.ImagePullPolicy = corev1.PullIfNotPresent
	}
	g.Args = p.Args
	g.Ports = []corev1.ContainerPort{{Name: "guest-api", ContainerPort: GuestPort, Protocol: corev1.ProtocolTCP}}
	g.Stdin, g.TTY = false, false
	g.VolumeMounts = slices.DeleteFunc(g.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == WorkspaceVolume || m.MountPath == WorkspaceDir || m.MountPath == SecretDir
	})
	g.VolumeMounts = append(g.VolumeMounts,
		corev1.VolumeMount{Name: secretVolume, MountPath: SecretDir, ReadOnly: true},
		corev1.VolumeMount{Name: WorkspaceVolume, MountPath: WorkspaceDir},
	)
	g.WorkingDir = WorkspaceDir
	sizeGuest(g, p.VCPUs, p.MemoryMiB)

	return &corev1.Pod{
		ObjectMeta: p.objectMeta(p.Names.Pod, partGuest, t.Meta.Labels, t.Meta.Annotations),
		Spec:       spec,
	}
}

// confine takes a container's privileges: not privileged, no privilege
// escalation (setuid binaries do not raise it), every capability dropped
// but keep, the runtime's default seccomp profile unless the template
// names another. What else the template sets (user, read-only root...)
// stays.
func confine(c *corev1.Container, keep []corev1.Capability) {
	if c.SecurityContext == nil {
		c.SecurityContext = &corev1.SecurityContext{}
	}
	sc := c.SecurityContext
	no := false
	sc.Privileged = &no
	sc.AllowPrivilegeEscalation = &no
	sc.Capabilities = &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: slices.Clone(keep)}
	if sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeUnconfined {
		sc.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	}
	if sc.ProcMount != nil && *sc.ProcMount == corev1.UnmaskedProcMount {
		sc.ProcMount = nil
	}
}

// sizeGuest gives the guest container the session's vCPUs and memory as
// both request and limit: the session gets what it asked for, is not
// throttled below it or overcommitted past it, and, with every container
// so sized, the pod is in the Guaranteed class, the last to be evicted.
// A size of 0 keeps the template's.
func sizeGuest(c *corev1.Container, vcpus, memMiB int) {
	if c.Resources.Requests == nil {
		c.Resources.Requests = corev1.ResourceList{}
	}
	if c.Resources.Limits == nil {
		c.Resources.Limits = corev1.ResourceList{}
	}
	if vcpus > 0 {
		q := resource.MustParse(strconv.Itoa(vcpus))
		c.Resources.Requests[corev1.ResourceCPU] = q
		c.Resources.Limits[corev1.ResourceCPU] = q
	}
	if memMiB > 0 {
		c.Resources.Requests[corev1.ResourceMemory] = mib(memMiB)
		c.Resources.Limits[corev1.ResourceMemory] = mib(memMiB)
	}
}

func mib(n int) resource.Quantity { return *resource.NewQuantity(int64(n)<<20, resource.BinarySI) }
