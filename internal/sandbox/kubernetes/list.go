package kubernetes

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
)

// ListObjects names the kinds of object the driver makes (pods, secrets,
// network policies, workspace claims) that the label selector picks in
// namespace ns, as "pod/NAME", "secret/NAME", "networkpolicy/NAME" and
// "pvc/NAME", in that order: what a session or an instance holds.
func ListObjects(ctx context.Context, cs k8s.Interface, ns, selector string) ([]string, error) {
	sel := metav1.ListOptions{LabelSelector: selector}
	var names []string
	pods, err := cs.CoreV1().Pods(ns).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	for _, o := range pods.Items {
		names = append(names, "pod/"+o.Name)
	}
	secrets, err := cs.CoreV1().Secrets(ns).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	for _, o := range secrets.Items {
		names = append(names, "secret/"+o.Name)
	}
	policies, err := cs.NetworkingV1().NetworkPolicies(ns).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list network policies: %w", err)
	}
	for _, o := range policies.Items {
		names = append(names, "networkpolicy/"+o.Name)
	}
	claims, err := cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list workspace claims: %w", err)
	}
	for _, o := range claims.Items {
		names = append(names, "pvc/"+o.Name)
	}
	return names, nil
}
