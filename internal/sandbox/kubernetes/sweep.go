package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Swept counts what a sweep deleted.
type Swept struct {
	Pods, Secrets, Policies, Claims int
}

func (s Swept) String() string {
	return fmt.Sprintf("%d pods, %d secrets, %d network policies, %d workspace claims", s.Pods, s.Secrets, s.Policies, s.Claims)
}

// Sweep is the driver's part of a server's start, the pods' counterpart
// of removing the sandbox directories no paused session keeps: it deletes
// every pod of this instance that no sandbox of this driver holds (a run
// that crashed or was killed left them: a pod does not die with its
// server, as a VM does), waits until they are gone, then deletes their
// secrets and policies, and the workspace claims of sessions that are over.
// A paused session's claim stays, and so does every object of another
// instance, or without the instance label. Call it after the session
// manager has recovered, so that sessions it left running count as paused.
func (d *Driver) Sweep(ctx context.Context) (Swept, error) { return d.collect(ctx, true) }

// CollectEvery runs a sweep every interval until ctx ends, without
// waiting for pods to go: a claim whose session ended while paused, and
// the policy and secret of a pod whose Stop gave up waiting for it, are
// deleted here, as no Stop will come for them.
func (d *Driver) CollectEvery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := d.collect(ctx, false)
		if err != nil && ctx.Err() == nil {
			d.log.Warn("collecting leftover sandbox objects", "err", err)
		}
		if n != (Swept{}) {
			d.log.Info("deleted leftover sandbox objects", "deleted", n.String())
		}
	}
}

// collect deletes what belongs to no live sandbox; wait: and waits until
// the pods are gone before deleting what they used. Each object is checked
// against the live sessions just before it is deleted, so that a Start
// that began after the listing keeps what it makes.
func (d *Driver) collect(ctx context.Context, wait bool) (Swept, error) {
	var n Swept
	ns, sel := d.cfg.Namespace, metav1.ListOptions{LabelSelector: instanceSelector(d.cfg.Instance)}
	core := d.cfg.Client.CoreV1()
	var errs []error

	pods, err := core.Pods(ns).List(ctx, sel)
	if err != nil {
		return n, fmt.Errorf("list pods: %w", err)
	}
	withPod := map[string]bool{} // sessions whose pod is still there
	for _, p := range pods.Items {
		id := p.Labels[LabelSession]
		withPod[id] = true
		if d.isLive(id) || p.DeletionTimestamp != nil {
			continue
		}
		if err := d.deletePod(ctx, p.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		n.Pods++
		d.log.Info("deleting a leftover pod", "pod", p.Name, "session", id)
	}
	if wait {
		for _, p := range pods.Items {
			if id := p.Labels[LabelSession]; d.isLive(id) {
				continue
			}
			if err := d.waitPodGone(ctx, p.Name); err != nil {
				errs = append(errs, fmt.Errorf("pod %s is not gone: %w", p.Name, err))
				continue
			}
			delete(withPod, p.Labels[LabelSession])
		}
	}
	// What a pod that is still there uses stays with it.
	keep := func(id string) bool { return withPod[id] || d.isLive(id) }

	secrets, err := core.Secrets(ns).List(ctx, sel)
	if err != nil {
		return n, errors.Join(append(errs, fmt.Errorf("list secrets: %w", err))...)
	}
	for _, s := range secrets.Items {
		if keep(s.Labels[LabelSession]) {
			continue
		}
		if err := d.deleteSecret(ctx, s.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		n.Secrets++
	}
	policies, err := d.cfg.Client.NetworkingV1().NetworkPolicies(ns).List(ctx, sel)
	if err != nil {
		return n, errors.Join(append(errs, fmt.Errorf("list network policies: %w", err))...)
	}
	for _, p := range policies.Items {
		if keep(p.Labels[LabelSession]) {
			continue
		}
		if err := d.deletePolicy(ctx, p.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		n.Policies++
	}
	claims, err := core.PersistentVolumeClaims(ns).List(ctx, sel)
	if err != nil {
		return n, errors.Join(append(errs, fmt.Errorf("list workspace claims: %w", err))...)
	}
	for _, c := range claims.Items {
		id := c.Labels[LabelSession]
		if keep(id) || c.DeletionTimestamp != nil || !d.over(ctx, id) {
			continue
		}
		if err := d.deleteClaim(ctx, c.Name, wait); err != nil {
			errs = append(errs, err)
			continue
		}
		n.Claims++
	}
	return n, errors.Join(errs...)
}
