package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/sandbox"
)

// Sandbox is one session's pod.
type Sandbox struct {
	d     *Driver
	idMu  sync.Mutex
	id    string // the session's; a pooled sandbox's pool id until claimed
	names names
	node  string
	conn  *guestConn

	exit        sandbox.Exit // Exited once the pod has ended, or Stop is done
	stopWatch   context.CancelFunc
	watchExited chan struct{}
}

var _ sandbox.Sandbox = (*Sandbox)(nil)

func newSandbox(d *Driver, id string, n names, conn *guestConn, pod *corev1.Pod) *Sandbox {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sandbox{d: d, id: id, names: n, node: pod.Spec.NodeName, conn: conn, stopWatch: cancel, watchExited: make(chan struct{})}
	go s.watch(ctx, ready(pod))
	return s
}

// Guest implements sandbox.Sandbox.
func (s *Sandbox) Guest() *guest.Client { return s.conn.client }

// Workspace implements sandbox.Sandbox.
func (s *Sandbox) Workspace() string { return WorkspaceDir }

// Done implements sandbox.Sandbox.
func (s *Sandbox) Done() <-chan struct{} { return s.exit.Done() }

// ExitError implements sandbox.Sandbox: why the pod ended or was lost,
// when this server did not end it.
func (s *Sandbox) ExitError() error { return s.exit.Err() }

// Pod is the pod's name; Node the node it runs on.
func (s *Sandbox) Pod() string  { return s.names.Pod }
func (s *Sandbox) Node() string { return s.node }

// watch follows the pod until it ends, is lost, or Stop ends the watch:
// an eviction, a failure, a deletion by someone else, its node going
// NotReady, each ends the sandbox with an error that says which.
func (s *Sandbox) watch(ctx context.Context, wasReady bool) {
	defer close(s.watchExited)
	var reason string
	err := s.d.watchPod(ctx, s.names.Pod, func(pod *corev1.Pod, deleted bool) (bool, error) {
		if pod == nil {
			reason = "the pod is gone (deleted, not by this server)"
			return true, nil
		}
		if ready(pod) {
			wasReady = true
		}
		reason = exitReason(pod, deleted, wasReady)
		return reason != "", nil
	})
	if ctx.Err() != nil {
		return // Stop's: it reports the exit once the pod is gone
	}
	if err != nil {
		reason = "watching the pod failed: " + err.Error()
	}
	s.d.log.Warn("sandbox pod ended", "session", s.session(), "pod", s.names.Pod, "reason", reason)
	s.exit.Exited(fmt.Errorf("kubernetes sandbox: pod %s: %s", s.names.Pod, reason))
}

// Stop implements sandbox.Sandbox: the pod is deleted (the guest has a few
// seconds to end its commands), then, once it is gone, its policy and
// secret, and its workspace claim unless the session is paused. The
// teardown runs to completion, bounded by the driver's StopTimeout, even
// when ctx ends first; ctx bounds only how long this call waits for it.
func (s *Sandbox) Stop(ctx context.Context) error {
	return s.exit.Stop(ctx, "kubernetes sandbox", s.stop)
}

func (s *Sandbox) stop() error {
	s.stopWatch()
	<-s.watchExited
	s.conn.close()
	ctx, cancel := context.WithTimeout(context.Background(), s.d.cfg.StopTimeout)
	defer cancel()
	id := s.session()
	m := made{pod: true, secret: true, policy: true, claim: s.d.cfg.Template.Pausable() && s.d.over(ctx, id)}
	err := s.d.teardown(ctx, s.names, m)
	s.exit.Exited(errors.New("stopped"))
	s.d.release(id)
	if err != nil {
		s.d.log.Error("sandbox teardown", "session", id, "err", err)
		return fmt.Errorf("kubernetes sandbox: %w", err)
	}
	s.d.log.Info("sandbox stopped", "session", id, "pod", s.names.Pod, "claimDeleted", m.claim)
	return nil
}

// over says a session's workspace claim can go. Without a session store
// the claim goes with its sandbox; when the store cannot say, the claim
// stays (Collect asks again later): a leaked claim costs disk, a wrongly
// deleted one a user's files.
func (d *Driver) over(ctx context.Context, id string) bool {
	if d.cfg.Sessions == nil {
		return true
	}
	over, err := d.cfg.Sessions.Over(ctx, id)
	if err != nil {
		d.log.Warn("keeping a workspace claim: the session's state is unknown", "session", id, "err", err)
		return false
	}
	return over
}
