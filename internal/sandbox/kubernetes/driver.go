// Package kubernetes is the sandbox driver that runs each session's guest
// in a pod of a Kubernetes cluster: the guest image's execlaw-guest as the
// container's entrypoint, reached over the pod network with TLS and a token
// of the session's own (internal/guest's pod channel), a NetworkPolicy that
// lets only the server in and only the internet out, and, when the pod
// template asks for one, a workspace claim that outlives the pod so that a
// paused session resumes on its files.
//
// The pod is a container unless the template names a runtime class (Kata
// Containers, gVisor): on the cluster's default runtime (runc) the guest
// shares its node's kernel, so the driver reports itself not isolated,
// like the process driver.
//
// Every object carries execlaw.dev/instance=<server instance>, and the
// session's and owner's labels; a sweep (Sweep, Collect) deletes only its
// own instance's objects.
package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/sandbox"
)

// GuestPort is the port the guest listens on in its pod.
const GuestPort = guest.PodPort

// DefaultDNS are the resolvers pods are given when they may not use the
// cluster's (Egress.ClusterDNS) and the template names none: public ones,
// which the egress policy lets them reach, as the VM drivers' fallback.
var DefaultDNS = []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("8.8.8.8")}

const (
	defaultStartTimeout = 5 * time.Minute
	defaultStopTimeout  = 2 * time.Minute
	// stopGrace is the guest's time to end its commands when its pod is
	// deleted: Stop is asked for by a session already done with it.
	stopGrace = 3
)

// Permission is what the driver does with one kind of object, in its
// namespace.
type Permission struct {
	Group, Resource, Subresource string
	Verbs                        []string
}

// Permissions are all the driver needs of the API server: a Role in its
// namespace with these rules (deploy/kubernetes/rbac.yaml), and nothing
// cluster-wide. doctor checks them.
var Permissions = []Permission{
	// Watch: Start waits for the pod to run, the sandbox for it to end,
	// Stop for it to be gone. Get: its log, for a start that failed.
	// Patch: a pooled pod, its secret and policy are relabelled for the
	// session that claims them.
	{Resource: "pods", Verbs: []string{"create", "get", "list", "watch", "patch", "delete"}},
	{Resource: "pods", Subresource: "log", Verbs: []string{"get"}},
	{Resource: "secrets", Verbs: []string{"create", "list", "patch", "delete"}},
	{Group: "networking.k8s.io", Resource: "networkpolicies", Verbs: []string{"create", "list", "patch", "delete"}},
	// Get: a resumed session's claim. Watch: until a deleted one is gone.
	{Resource: "persistentvolumeclaims", Verbs: []string{"create", "get", "list", "watch", "delete"}},
}

// Sessions is what the driver asks the session store.
type Sessions interface {
	// Owner is the id of the user a session belongs to ("" when unknown):
	// its objects are labelled with it.
	Owner(ctx context.Context, sessionID string) (string, error)
	// Over says a session has ended, is ending, or is unknown: its
	// workspace claim can go. A paused session, or one pausing, is not over.
	Over(ctx context.Context, sessionID string) (bool, error)
}

// Config configures the driver.
type Config struct {
	Client    k8s.Interface
	Namespace string
	// Instance is this server's instance id (see CheckInstance): every
	// object is labelled with it, and sweeps delete only its own.
	Instance string
	Template Template
	// Image is the guest image (`execlaw image build --oci`); empty: the
	// template's guest container's.
	Image string
	// Server is where the server's connections come from: the guests'
	// only ingress. Required.
	Server ServerPeers
	Egress Egress
	// DNS are the resolvers pods are given unless Egress.ClusterDNS, or
	// the template sets dnsPolicy None itself; empty: DefaultDNS.
	DNS []netip.Addr
	// Sessions answers for owners and for which workspace claims to keep;
	// nil: owners are unknown, and a claim goes with its sandbox.
	Sessions Sessions
	// StartTimeout bounds Start (scheduling, pulling the image, the guest
	// answering): 5 minutes when 0. StopTimeout bounds waiting for a
	// pod and claim to be gone: 2 minutes when 0.
	StartTimeout, StopTimeout time.Duration
	Logger                    *slog.Logger

	// guestPort is the port dialled on the pod's address: GuestPort but in
	// tests, whose guests listen on loopback.
	guestPort int
}

// Driver starts sandboxes as pods.
type Driver struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex
	// live are the sessions with a Start under way or a sandbox not yet
	// stopped: sweeps leave their objects alone.
	live map[string]bool
}

var (
	_ sandbox.Driver   = (*Driver)(nil)
	_ sandbox.Pausable = (*Driver)(nil)
)

// New checks cfg.
func New(cfg Config) (*Driver, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("no Kubernetes client"))
	}
	if cfg.Namespace == "" {
		errs = append(errs, errors.New("no namespace"))
	}
	if ns := cfg.Template.Meta.Namespace; ns != "" && ns != cfg.Namespace {
		errs = append(errs, fmt.Errorf("the pod template is for namespace %q, the driver's is %q", ns, cfg.Namespace))
	}
	if err := CheckInstance(cfg.Instance); err != nil {
		errs = append(errs, err)
	}
	if cfg.Image == "" {
		cfg.Image = cfg.Template.Image()
	}
	if cfg.Image == "" {
		errs = append(errs, errors.New("no guest image: give one, or name it in the pod template's guest container"))
	}
	if cfg.Server.empty() {
		errs = append(errs, errors.New("no server peers: guests would accept connections from no one (give the server's pod labels, or its address)"))
	}
	if len(cfg.Server.PodLabels) > 0 && labels.SelectorFromSet(cfg.Server.PodLabels).Matches(labels.Set(cfg.Template.Meta.Labels)) {
		// Guests would let each other in as the server.
		errs = append(errs, fmt.Errorf("the pod template's labels %v are the server's (%v)", cfg.Template.Meta.Labels, labels.Set(cfg.Server.PodLabels)))
	}
	if err := cfg.Egress.check(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("kubernetes driver: %w", err)
	}
	if len(cfg.DNS) == 0 {
		cfg.DNS = DefaultDNS
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = defaultStartTimeout
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = defaultStopTimeout
	}
	if cfg.guestPort == 0 {
		cfg.guestPort = GuestPort
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{cfg: cfg, log: log.With("driver", "kubernetes"), live: map[string]bool{}}, nil
}

// Name implements sandbox.Driver.
func (d *Driver) Name() string { return "kubernetes" }

// RunsElsewhere: pods take the cluster's memory, not this host's; the
// scheduler and the namespace's quotas bound them (sandbox.Elsewhere).
func (d *Driver) RunsElsewhere() bool { return true }

// Isolated implements sandbox.Driver: only when the pod template names a
// runtime class, which the operator sets for a VM runtime (Kata
// Containers) or a kernel of its own (gVisor). On the default runtime a
// pod is a container: namespaces and cgroups on the node's kernel.
func (d *Driver) Isolated() bool { return d.cfg.Template.RuntimeClass() != "" }

// Pausable says a paused session keeps its files: the template asks for a
// workspace claim. Without one a pod's workspace dies with it, and a
// resumed session starts on an empty one.
func (d *Driver) Pausable() bool { return d.cfg.Template.Pausable() }

// Namespace is where the driver makes its objects.
func (d *Driver) Namespace() string { return d.cfg.Namespace }

// Instance is the instance label the driver's objects carry.
func (d *Driver) Instance() string { return d.cfg.Instance }

// claim marks a session live; false if it already is.
func (d *Driver) claim(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.live[id] {
		return false
	}
	d.live[id] = true
	return true
}

func (d *Driver) release(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.live, id)
}

func (d *Driver) isLive(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.live[id]
}

// params is what a session's objects are made of.
func (d *Driver) params(ctx context.Context, spec sandbox.Spec) (podParams, error) {
	sess, err := sessionLabel(spec.SessionID)
	if err != nil {
		return podParams{}, err
	}
	owner := ""
	if !pooled(spec) {
		owner = d.owner(ctx, spec.SessionID)
	}
	p := podParams{
		Instance: d.cfg.Instance, Session: sess, Owner: ownerLabel(owner), OwnerID: ownerAnnotation(owner),
		Names: objectNames(d.cfg.Instance, spec.SessionID), Namespace: d.cfg.Namespace, Image: d.cfg.Image,
		VCPUs: spec.VCPUs, MemoryMiB: spec.MemoryMiB, DiskMiB: spec.DiskMiB,
		Args: guestArgs(d.cfg.guestPort),
	}
	if !d.cfg.Egress.ClusterDNS && d.cfg.Template.Spec.DNSPolicy != "None" {
		p.DNS = d.cfg.DNS
	}
	if pooled(spec) {
		if err := poolParams(&p, spec); err != nil {
			return podParams{}, err
		}
	}
	return p, nil
}

// owner is the id of the user a session belongs to, "" when unknown: a
// label is not worth failing a session for.
func (d *Driver) owner(ctx context.Context, sessionID string) string {
	if d.cfg.Sessions == nil {
		return ""
	}
	owner, err := d.cfg.Sessions.Owner(ctx, sessionID)
	if err != nil {
		d.log.Warn("the session's owner is unknown", "session", sessionID, "err", err)
		return ""
	}
	return owner
}

// guestArgs are execlaw-guest's arguments after the image's entrypoint:
// --pod first, for an image whose entrypoint is the bare binary (the guest
// image's own says --pod already; twice is the same), then what the
// driver mounts, said although they are the guest's defaults.
func guestArgs(port int) []string {
	return []string{"--pod", "--listen", fmt.Sprintf(":%d", port), "--secret-dir", SecretDir, "--workspace", WorkspaceDir}
}

// Start implements sandbox.Driver: the session's Secret, NetworkPolicy,
// workspace claim (when the template asks for one; a resumed session's is
// kept from before) and pod, then waits until the guest answers. On error
// everything it made is deleted again, and gone, before it returns.
func (d *Driver) Start(ctx context.Context, spec sandbox.Spec) (_ sandbox.Sandbox, err error) {
	progress := spec.Progress
	if progress == nil {
		progress = func(string) {}
	}
	p, err := d.params(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("kubernetes driver: %w", err)
	}
	if !d.claim(spec.SessionID) {
		return nil, fmt.Errorf("kubernetes driver: session %s has a sandbox already", spec.SessionID)
	}
	log := d.log.With("session", spec.SessionID, "pod", p.Names.Pod)
	made := made{}
	defer func() {
		if err == nil {
			return
		}
		// Bounded apart from ctx, which may be what ended the start.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.StopTimeout)
		defer cancel()
		if cerr := d.teardown(cctx, p.Names, made); cerr != nil {
			log.Error("cleaning up after a failed start", "err", cerr)
			err = errors.Join(err, fmt.Errorf("cleaning up: %w", cerr))
		}
		d.release(spec.SessionID)
		err = fmt.Errorf("kubernetes driver: %w", err)
	}()
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StartTimeout)
	defer cancel()
	begin := time.Now()

	progress("pod")
	cred, err := guest.NewPodCredentials(spec.SessionID)
	if err != nil {
		return nil, err
	}
	pod, err := d.startPod(ctx, spec, p, cred, &made, progress, log)
	if err != nil {
		return nil, err
	}
	conn, err := d.dialGuest(ctx, pod, cred, progress)
	if err != nil {
		return nil, err
	}
	sb := newSandbox(d, spec.SessionID, p.Names, conn, pod)
	log.Info("pod ready", "node", pod.Spec.NodeName, "ip", pod.Status.PodIP, "took", time.Since(begin).Round(time.Millisecond))
	return sb, nil
}

// startPod is Start's part up to the guest: it makes the session's objects
// (createObjects) and waits until its pod runs (waitRunning). m records
// what it made, for teardown, whether it fails or not.
func (d *Driver) startPod(ctx context.Context, spec sandbox.Spec, p podParams, cred guest.PodCredentials, m *made, progress func(string), log *slog.Logger) (*corev1.Pod, error) {
	if err := d.createObjects(ctx, spec, p, cred, m, log); err != nil {
		return nil, err
	}
	return d.waitRunning(ctx, p.Names.Pod, progress)
}

// createObjects makes a session's Secret, NetworkPolicy, workspace claim
// (when the template asks for one; a resumed session's is kept from
// before) and pod, in that order, marking each in m once made.
func (d *Driver) createObjects(ctx context.Context, spec sandbox.Spec, p podParams, cred guest.PodCredentials, m *made, log *slog.Logger) error {
	if err := d.create(ctx, &m.secret, func() error {
		_, err := d.cfg.Client.CoreV1().Secrets(p.Namespace).Create(ctx, buildSecret(p, cred.SecretData()), metav1.CreateOptions{})
		return err
	}); err != nil {
		return fmt.Errorf("guest secret: %w", err)
	}
	// The policy before the pod: the pod never runs a moment without it.
	if err := d.create(ctx, &m.policy, func() error {
		_, err := d.cfg.Client.NetworkingV1().NetworkPolicies(p.Namespace).Create(ctx, buildPolicy(p, d.cfg.Server, d.cfg.Egress, spec.Network), metav1.CreateOptions{})
		return err
	}); err != nil {
		return fmt.Errorf("network policy: %w", err)
	}
	if d.cfg.Template.Pausable() {
		if err := d.workspaceClaim(ctx, p, spec.Resume, m, log); err != nil {
			return fmt.Errorf("workspace claim: %w", err)
		}
	} else if spec.Resume {
		log.Warn("resuming on an empty workspace: the pod template has no workspace claim, so nothing was kept")
	}
	if err := d.create(ctx, &m.pod, func() error {
		_, err := d.cfg.Client.CoreV1().Pods(p.Namespace).Create(ctx, buildPod(d.cfg.Template, p), metav1.CreateOptions{})
		return err
	}); err != nil {
		return fmt.Errorf("pod: %w", err)
	}
	return nil
}

// dialGuest connects to the guest of a running pod (startPod's), until it
// answers or ctx ends.
func (d *Driver) dialGuest(ctx context.Context, pod *corev1.Pod, cred guest.PodCredentials, progress func(string)) (*guestConn, error) {
	progress("guest-api")
	addr := fmt.Sprintf("%s:%d", pod.Status.PodIP, d.cfg.guestPort)
	conn, err := connectGuest(ctx, addr, cred)
	if err != nil {
		return nil, d.withPodState(fmt.Errorf("the guest at %s: %w", addr, err), pod.Name)
	}
	return conn, nil
}

// made records what a Start has made, to delete it should it fail.
type made struct{ secret, policy, claim, pod bool }

// create runs one create call and marks it made. A create that fails for
// want of an answer (a timeout) may still have made the object: it is
// marked made too, and so deleted; deleting what is not there is no error.
func (d *Driver) create(ctx context.Context, mark *bool, call func() error) error {
	err := call()
	if err == nil || !apierrors.IsAlreadyExists(err) && !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) {
		*mark = true
	}
	return err
}

// workspaceClaim makes a session's workspace claim, or finds the one a
// resumed session kept. A resumed session whose claim is gone (deleted
// from outside) starts on a fresh one, as a VM whose disk is gone does.
func (d *Driver) workspaceClaim(ctx context.Context, p podParams, resume bool, m *made, log *slog.Logger) error {
	claims := d.cfg.Client.CoreV1().PersistentVolumeClaims(p.Namespace)
	if resume {
		_, err := claims.Get(ctx, p.Names.Claim, metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) {
			return err
		}
		log.Warn("the paused session's workspace claim is gone: resuming on an empty one", "claim", p.Names.Claim)
	}
	return d.create(ctx, &m.claim, func() error {
		_, err := claims.Create(ctx, buildClaim(d.cfg.Template, p), metav1.CreateOptions{})
		return err
	})
}
