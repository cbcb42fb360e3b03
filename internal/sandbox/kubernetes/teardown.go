package kubernetes

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// teardown deletes what m says of a session's objects, and waits until
// they are gone. The pod goes first, and the rest only once it is gone: its
// policy must hold as long as any of its processes may run, and its claim
// is in use until then. When the pod outlasts ctx (its node is lost, and
// nothing confirms its end) the rest is left for Collect, and the error
// says so.
func (d *Driver) teardown(ctx context.Context, n names, m made) error {
	ns := d.cfg.Namespace
	core := d.cfg.Client.CoreV1()
	if m.pod {
		grace := int64(stopGrace)
		if err := ignoreNotFound(core.Pods(ns).Delete(ctx, n.Pod, metav1.DeleteOptions{GracePeriodSeconds: &grace})); err != nil {
			return fmt.Errorf("delete pod %s: %w", n.Pod, err)
		}
		if err := waitGone(ctx, d.podListWatch(n.Pod), &corev1.Pod{}, ns+"/"+n.Pod); err != nil {
			return fmt.Errorf("pod %s is not gone (its policy and secret are left until it is): %w", n.Pod, err)
		}
	}
	var errs []error
	if m.policy {
		err := d.cfg.Client.NetworkingV1().NetworkPolicies(ns).Delete(ctx, n.Policy, metav1.DeleteOptions{})
		if err = ignoreNotFound(err); err != nil {
			errs = append(errs, fmt.Errorf("delete network policy %s: %w", n.Policy, err))
		}
	}
	if m.secret {
		if err := ignoreNotFound(core.Secrets(ns).Delete(ctx, n.Secret, metav1.DeleteOptions{})); err != nil {
			errs = append(errs, fmt.Errorf("delete secret %s: %w", n.Secret, err))
		}
	}
	if m.claim {
		if err := d.deleteClaim(ctx, n.Claim); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deleteClaim deletes a workspace claim and waits until it is gone (its
// protection finalizer holds it while a pod uses it).
func (d *Driver) deleteClaim(ctx context.Context, name string) error {
	claims := d.cfg.Client.CoreV1().PersistentVolumeClaims(d.cfg.Namespace)
	if err := ignoreNotFound(claims.Delete(ctx, name, metav1.DeleteOptions{})); err != nil {
		return fmt.Errorf("delete workspace claim %s: %w", name, err)
	}
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return claims.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return claims.Watch(ctx, o)
		},
	}
	if err := waitGone(ctx, lw, &corev1.PersistentVolumeClaim{}, d.cfg.Namespace+"/"+name); err != nil {
		return fmt.Errorf("workspace claim %s is not gone: %w", name, err)
	}
	return nil
}
