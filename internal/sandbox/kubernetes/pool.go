package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/execlaw/execlaw/internal/sandbox"
)

// A warm pool of pods, as agent-sandbox's SandboxWarmPool keeps: the
// session manager starts pooled sandboxes (Spec.Movable, ids p_<hex>) like
// any other, of the template and the default size, and a session that
// takes one claims it by relabelling, a few API calls instead of a pod's
// start.
//
// A pooled sandbox's Secret, NetworkPolicy and pod are made for its pool
// id: named for it (names cannot change, and need not: every lookup of the
// driver's is by label or by the names the sandbox keeps), labelled
// execlaw.dev/session=<pool id>, owner "pool", execlaw.dev/pool=ready,
// and execlaw.dev/pooled-as=<pool id>. Its policy selects the pod by
// instance and pooled-as, labels that never change: relabelling the pod
// for its session leaves no moment in which the policy does not hold it.
//
// Claim patches the three objects' session and owner labels and owner
// annotation, and drops execlaw.dev/pool, so that the session's objects
// are found, swept and counted by its id from then on. While it does, both
// ids are live to the driver, so a sweep running meanwhile keeps the
// objects whichever label it sees. The guest connection stays: its
// credentials (the TLS certificate pinned, the token) were made for the
// pool id, but are per sandbox, not per session, and nothing else holds
// them. The pod's host name stays execlaw-p-<short pool id>: a container
// cannot change its own. The guest is not told the time or fresh entropy,
// as a claimed VM is: it shares its node's kernel and clock.
//
// Only templates without a workspace claim are pooled (Poolable): a
// pausable session's claim is found again at its resume by a name made
// from its session id, and a pooled pod's would be named for its pool id.

// Pool labels.
const (
	// LabelPool is "ready" on a pooled sandbox's objects until a session
	// claims it.
	LabelPool = "execlaw.dev/pool"
	// LabelPooledAs keeps the pool id a claimed sandbox was made with (and
	// named for); its policy selects its pod by it.
	LabelPooledAs = "execlaw.dev/pooled-as"
	poolReady     = "ready"
	// poolOwner is the owner label of an unclaimed sandbox.
	poolOwner = "pool"
)

// poolPrefix starts the ids the session manager gives pooled sandboxes.
const poolPrefix = "p_"

var _ sandbox.Pooling = (*Driver)(nil)
var _ sandbox.Claimable = (*Sandbox)(nil)

// Poolable implements sandbox.Pooling: unless the template asks for a
// workspace claim (see above).
func (d *Driver) Poolable() bool { return !d.cfg.Template.Pausable() }

// pooled says spec is for a pooled sandbox.
func pooled(spec sandbox.Spec) bool { return spec.Movable }

// labels are the labels of one of the sandbox's objects.
func (p podParams) labels(part string) map[string]string {
	l := sessionLabels(p.Instance, p.Session, p.Owner, part)
	if p.PooledAs != "" {
		l[LabelPooledAs] = p.PooledAs
		if p.Session == p.PooledAs {
			l[LabelPool] = poolReady
		}
	}
	return l
}

// podSelector is what the sandbox's policy selects its pod by: the session
// label, or for a pooled one the pool id, which a claim does not change.
// The instance label keeps another server's sandbox of the same id out.
func (p podParams) podSelector() map[string]string {
	if p.PooledAs != "" {
		return map[string]string{LabelInstance: p.Instance, LabelPooledAs: p.PooledAs}
	}
	return map[string]string{LabelInstance: p.Instance, LabelSession: p.Session}
}

// poolParams makes p a pooled sandbox's: owned by the pool.
func poolParams(p *podParams, spec sandbox.Spec) error {
	if !strings.HasPrefix(spec.SessionID, poolPrefix) {
		return fmt.Errorf("a pooled sandbox's id is %s<hex>, not %q", poolPrefix, spec.SessionID)
	}
	p.PooledAs, p.Owner, p.OwnerID = p.Session, poolOwner, ""
	return nil
}

// session is the id the sandbox now belongs to: its pool id until claimed.
func (s *Sandbox) session() string {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	return s.id
}

// Claim implements sandbox.Claimable: the pooled sandbox becomes spec's
// session's. Its Secret, then its NetworkPolicy, then its pod are
// relabelled for the session and its owner; the policy's selector is not
// touched (see above). On error the sandbox is still the pool's, and the
// caller stops it: Stop deletes the objects by name, whatever their labels.
func (s *Sandbox) Claim(ctx context.Context, spec sandbox.Spec) error {
	from := s.session()
	if !strings.HasPrefix(from, poolPrefix) {
		return fmt.Errorf("kubernetes sandbox: %s is not a pooled sandbox", from)
	}
	sess, err := sessionLabel(spec.SessionID)
	if err != nil {
		return fmt.Errorf("kubernetes sandbox: %w", err)
	}
	d := s.d
	owner := d.owner(ctx, spec.SessionID)
	if !d.claim(spec.SessionID) {
		return fmt.Errorf("kubernetes sandbox: session %s has a sandbox already", spec.SessionID)
	}
	if err := d.relabel(ctx, s.names, sess, ownerLabel(owner), ownerAnnotation(owner)); err != nil {
		d.release(spec.SessionID)
		return fmt.Errorf("kubernetes sandbox: claim the pooled pod %s: %w", s.names.Pod, err)
	}
	s.idMu.Lock()
	s.id = spec.SessionID
	s.idMu.Unlock()
	d.release(from)
	d.log.Info("pooled pod claimed", "session", spec.SessionID, "pool", from, "pod", s.names.Pod)
	return nil
}

// relabel patches a sandbox's Secret, NetworkPolicy and pod to belong to
// session and owner, no longer to the pool.
func (d *Driver) relabel(ctx context.Context, n names, session, owner, ownerID string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"labels":      map[string]any{LabelSession: session, LabelOwner: owner, LabelPool: nil},
		"annotations": map[string]any{AnnotationOwnerID: ownerID},
	}})
	if err != nil {
		return err
	}
	ns, opts := d.cfg.Namespace, metav1.PatchOptions{}
	core := d.cfg.Client.CoreV1()
	if _, err := core.Secrets(ns).Patch(ctx, n.Secret, types.MergePatchType, patch, opts); err != nil {
		return fmt.Errorf("secret %s: %w", n.Secret, err)
	}
	np, err := d.cfg.Client.NetworkingV1().NetworkPolicies(ns).Patch(ctx, n.Policy, types.MergePatchType, patch, opts)
	if err != nil {
		return fmt.Errorf("network policy %s: %w", n.Policy, err)
	}
	if sel := np.Spec.PodSelector.MatchLabels; sel[LabelSession] != "" || sel[LabelPooledAs] == "" {
		// Never so of a policy this driver made for a pooled pod; checked
		// before the pod is touched, as relabelling it would then leave it
		// outside its policy.
		return errors.New("the network policy does not select its pod by pool id")
	}
	pod, err := core.Pods(ns).Patch(ctx, n.Pod, types.MergePatchType, patch, opts)
	if err != nil {
		return fmt.Errorf("pod %s: %w", n.Pod, err)
	}
	if !labels.SelectorFromSet(np.Spec.PodSelector.MatchLabels).Matches(labels.Set(pod.Labels)) {
		return fmt.Errorf("the network policy %v no longer selects the pod %v", np.Spec.PodSelector.MatchLabels, pod.Labels)
	}
	return nil
}
