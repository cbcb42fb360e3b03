package kubernetes

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/execlaw/execlaw/internal/network"
)

// ServerPeers is where the server's connections to guests come from: the
// only thing a guest pod accepts connections from, on the guest port.
type ServerPeers struct {
	// PodLabels select the server's pods, when it runs in the cluster, in
	// the sandboxes' namespace.
	PodLabels map[string]string
	// CIDRs are the server's addresses as pods see them, when it runs
	// outside the cluster.
	CIDRs []netip.Prefix
}

func (p ServerPeers) empty() bool { return len(p.PodLabels) == 0 && len(p.CIDRs) == 0 }

// Egress is what a guest with network "full" may reach: IPv4 addresses on
// the internet. What it may not: the ranges a cluster and its neighbours
// live in (network.DefaultDenyForward: RFC 1918, CGNAT...), those never to
// be reached (network.AlwaysDenied: loopback, link-local and so the cloud
// metadata service, multicast...), and Deny. Guests get no IPv6 route out,
// as in the VM drivers: one rule set to get right, not two.
type Egress struct {
	// Allow are ranges carved out of the denied ones (a package mirror on
	// the LAN, --guest-allow); never one of network.AlwaysDenied.
	Allow []netip.Prefix
	// Deny are denied besides the defaults (--guest-deny): the cluster's
	// pod and service ranges belong here when they are not private ones.
	Deny []netip.Prefix
	// ClusterDNS lets guests use the cluster's DNS (kube-dns pods in
	// kube-system, port 53): for a cluster whose pods reach no public
	// resolver. It tells guests the names of the cluster's services,
	// which they still cannot connect to; off, pods are given public
	// resolvers instead (Config.DNS).
	ClusterDNS bool
}

// check refuses an allowed range that would open what must stay closed.
func (e Egress) check() error {
	var errs []error
	for _, a := range slices.Concat(e.Allow, e.Deny) {
		if !a.Addr().Is4() {
			errs = append(errs, fmt.Errorf("%s: only IPv4 ranges", a))
		}
	}
	for _, a := range e.Allow {
		for _, d := range network.AlwaysDenied {
			if a.Overlaps(d) {
				errs = append(errs, fmt.Errorf("allowed range %s overlaps %s, which guests may never reach", a, d))
			}
		}
	}
	return errors.Join(errs...)
}

// deniedV4 is every range a guest may not reach, sorted, without repeats
// or ranges inside others (the API refuses an except list that is not
// within its block, and a shorter one reads better).
func (e Egress) deniedV4() []netip.Prefix {
	all := slices.Concat(network.AlwaysDenied, network.DefaultDenyForward, e.Deny)
	for i, p := range all {
		all[i] = p.Masked()
	}
	slices.SortFunc(all, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	var out []netip.Prefix
	for _, p := range all {
		if n := len(out); n > 0 && out[n-1].Bits() <= p.Bits() && out[n-1].Contains(p.Addr()) {
			continue // inside the one before (sorted: a container comes first)
		}
		out = append(out, p)
	}
	return out
}

// Well-known names of the cluster's DNS pods: kube-dns and CoreDNS
// deployments alike carry this label in kube-system.
const (
	dnsNamespace = "kube-system"
	dnsLabel     = "k8s-app"
	dnsLabelVal  = "kube-dns"
)

// buildPolicy is the NetworkPolicy of one session's pod: connections in
// only from the server, to the guest port; out as network says ("none":
// nothing at all; "full": the internet, see Egress).
func buildPolicy(p podParams, server ServerPeers, egress Egress, netMode string) *networkingv1.NetworkPolicy {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	guestPort := intstr.FromInt32(GuestPort)
	var from []networkingv1.NetworkPolicyPeer
	if len(server.PodLabels) > 0 {
		from = append(from, networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: server.PodLabels}})
	}
	for _, c := range server.CIDRs {
		from = append(from, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: c.Masked().String()}})
	}
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: p.objectMeta(p.Names.Policy, partPolicy, nil, nil),
		Spec: networkingv1.NetworkPolicySpec{
			// The session label (a pooled pod's pool id: see pool.go)
			// alone would do; the instance label keeps another server's
			// session of the same id out of it.
			PodSelector: metav1.LabelSelector{MatchLabels: p.podSelector()},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  from,
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &guestPort}},
			}},
			// An empty, non-nil list: no egress at all (with Egress in
			// PolicyTypes, no rule means nothing is allowed).
			Egress: []networkingv1.NetworkPolicyEgressRule{},
		},
	}
	if netMode != "full" {
		return np
	}
	out := &np.Spec.Egress
	var except []string
	whole := false
	for _, d := range egress.deniedV4() {
		if d.Bits() == 0 {
			whole = true // everything is denied: only Allow is left
			break
		}
		except = append(except, d.String())
	}
	if !whole {
		*out = append(*out, networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{{
			IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: except},
		}}})
	}
	for _, a := range egress.Allow {
		*out = append(*out, networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{{
			IPBlock: &networkingv1.IPBlock{CIDR: a.Masked().String()},
		}}})
	}
	if egress.ClusterDNS {
		dns := intstr.FromInt32(53)
		*out = append(*out, networkingv1.NetworkPolicyEgressRule{
			To: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: dnsNamespace}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{dnsLabel: dnsLabelVal}},
			}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &dns}, {Protocol: &tcp, Port: &dns}},
		})
	}
	return np
}
