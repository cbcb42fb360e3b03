package kubernetes

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// teardown deletes what m says of a session's objects, and waits until
// they are gone. The pod goes first, and the rest only once it is gone: its
// policy must hold as long as any of its processes may run, and its claim
// is in use until then. When the pod outlasts ctx (its node is lost, and
// nothing confirms its end) the rest is left for Collect, and the error
// says so.
func (d *Driver) teardown(ctx context.Context, n names, m made) error {
	if m.pod {
		if err := d.deletePod(ctx, n.Pod); err != nil {
			return err
		}
		if err := d.waitPodGone(ctx, n.Pod); err != nil {
			return fmt.Errorf("pod %s is not gone (its policy and secret are left until it is): %w", n.Pod, err)
		}
	}
	var errs []error
	if m.policy {
		if err := d.deletePolicy(ctx, n.Policy); err != nil {
			errs = append(errs, err)
		}
	}
	if m.secret {
		if err := d.deleteSecret(ctx, n.Secret); err != nil {
			errs = append(errs, err)
		}
	}
	if m.claim {
		if err := d.deleteClaim(ctx, n.Claim, true); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deletePod deletes a pod, giving its guest stopGrace seconds to end its
// commands. Deleting what is not there, here and below, is no error.
func (d *Driver) deletePod(ctx context.Context, name string) error {
	grace := int64(stopGrace)
	err := d.cfg.Client.CoreV1().Pods(d.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
	if err = ignoreNotFound(err); err != nil {
		return fmt.Errorf("delete pod %s: %w", name, err)
	}
	return nil
}

// waitPodGone waits until a deleted pod is gone from the API.
func (d *Driver) waitPodGone(ctx context.Context, name string) error {
	return waitGone(ctx, d.podListWatch(name), &corev1.Pod{}, d.cfg.Namespace+"/"+name)
}

func (d *Driver) deletePolicy(ctx context.Context, name string) error {
	err := d.cfg.Client.NetworkingV1().NetworkPolicies(d.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err = ignoreNotFound(err); err != nil {
		return fmt.Errorf("delete network policy %s: %w", name, err)
	}
	return nil
}

func (d *Driver) deleteSecret(ctx context.Context, name string) error {
	err := d.cfg.Client.CoreV1().Secrets(d.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err = ignoreNotFound(err); err != nil {
		return fmt.Errorf("delete secret %s: %w", name, err)
	}
	return nil
}

// deleteClaim deletes a workspace claim; wait: and waits until it is gone
// (its protection finalizer holds it while a pod uses it).
func (d *Driver) deleteClaim(ctx context.Context, name string, wait bool) error {
	claims := d.cfg.Client.CoreV1().PersistentVolumeClaims(d.cfg.Namespace)
	if err := ignoreNotFound(claims.Delete(ctx, name, metav1.DeleteOptions{})); err != nil {
		return fmt.Errorf("delete workspace claim %s: %w", name, err)
	}
	if !wait {
		return nil
	}
	lw := byName(name, claims.List, claims.Watch)
	if err := waitGone(ctx, lw, &corev1.PersistentVolumeClaim{}, d.cfg.Namespace+"/"+name); err != nil {
		return fmt.Errorf("workspace claim %s is not gone: %w", name, err)
	}
	return nil
}
