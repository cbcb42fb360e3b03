package kubernetes

import (
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

func TestPolicyIngressOnlyFromServer(t *testing.T) {
	p := testParams()
	for name, server := range map[string]ServerPeers{
		"in cluster": {PodLabels: map[string]string{"app.kubernetes.io/name": "execlaw"}},
		"outside":    {CIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.7/32")}},
	} {
		np := buildPolicy(p, server, Egress{}, "full")
		if np.Name != p.Names.Policy || np.Labels[LabelInstance] != "abc123" || np.Labels[LabelPart] != partPolicy {
			t.Errorf("%s: meta %+v", name, np.ObjectMeta)
		}
		sel := np.Spec.PodSelector.MatchLabels
		if len(sel) != 2 || sel[LabelInstance] != "abc123" || sel[LabelSession] != p.Session {
			t.Errorf("%s: selects %v", name, sel)
		}
		if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) {
			t.Errorf("%s: types %v", name, np.Spec.PolicyTypes)
		}
		if len(np.Spec.Ingress) != 1 {
			t.Fatalf("%s: ingress %+v", name, np.Spec.Ingress)
		}
		in := np.Spec.Ingress[0]
		if len(in.Ports) != 1 || *in.Ports[0].Protocol != corev1.ProtocolTCP || in.Ports[0].Port.IntValue() != GuestPort {
			t.Errorf("%s: ports %+v", name, in.Ports)
		}
		if len(in.From) != 1 {
			t.Fatalf("%s: from %+v", name, in.From)
		}
		f := in.From[0]
		switch name {
		case "in cluster":
			if f.PodSelector == nil || f.PodSelector.MatchLabels["app.kubernetes.io/name"] != "execlaw" || f.IPBlock != nil || f.NamespaceSelector != nil {
				t.Errorf("%s: from %+v", name, f)
			}
		case "outside":
			if f.IPBlock == nil || f.IPBlock.CIDR != "192.0.2.7/32" || f.PodSelector != nil {
				t.Errorf("%s: from %+v", name, f)
			}
		}
	}
}

func TestPolicyEgressFull(t *testing.T) {
	np := buildPolicy(testParams(), ServerPeers{CIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.7/32")}},
		Egress{Deny: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("10.96.0.0/12")}}, "full")
	if len(np.Spec.Egress) != 1 {
		t.Fatalf("egress %+v", np.Spec.Egress)
	}
	e := np.Spec.Egress[0]
	if len(e.Ports) != 0 || len(e.To) != 1 || e.To[0].IPBlock == nil || e.To[0].IPBlock.CIDR != "0.0.0.0/0" {
		t.Fatalf("egress rule %+v", e)
	}
	except := e.To[0].IPBlock.Except
	for _, must := range []string{
		"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8", "203.0.113.0/24",
	} {
		if !slices.Contains(except, must) {
			t.Errorf("%s is not denied: %v", must, except)
		}
	}
	// 10.96/12 is inside 10/8: the API wants no overlapping excepts, and
	// the list reads better without them.
	if slices.Contains(except, "10.96.0.0/12") {
		t.Errorf("a range inside another is listed: %v", except)
	}
	for _, ex := range except {
		p := netip.MustParsePrefix(ex)
		if !p.Addr().Is4() || p.Bits() == 0 {
			t.Errorf("except %s", ex)
		}
	}
	for _, addr := range []string{"169.254.169.254", "127.0.0.1", "10.1.2.3", "172.20.0.1", "192.168.1.1", "100.100.100.100"} {
		if !deniedBy(except, addr) {
			t.Errorf("%s is reachable", addr)
		}
	}
	for _, addr := range []string{"1.1.1.1", "140.82.112.3", "8.8.8.8"} {
		if deniedBy(except, addr) {
			t.Errorf("%s (the internet) is denied", addr)
		}
	}
}

func deniedBy(except []string, addr string) bool {
	a := netip.MustParseAddr(addr)
	for _, e := range except {
		if netip.MustParsePrefix(e).Contains(a) {
			return true
		}
	}
	return false
}

func TestPolicyEgressNoneAllowAndDNS(t *testing.T) {
	server := ServerPeers{CIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.7/32")}}
	none := buildPolicy(testParams(), server, Egress{ClusterDNS: true, Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}, "none")
	if none.Spec.Egress == nil || len(none.Spec.Egress) != 0 {
		t.Errorf("network none lets something out: %+v", none.Spec.Egress)
	}

	full := buildPolicy(testParams(), server, Egress{ClusterDNS: true, Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}, "full")
	if len(full.Spec.Egress) != 3 {
		t.Fatalf("egress %+v", full.Spec.Egress)
	}
	if b := full.Spec.Egress[1].To[0].IPBlock; b == nil || b.CIDR != "10.1.0.0/16" || len(b.Except) != 0 {
		t.Errorf("allowed range rule %+v", full.Spec.Egress[1])
	}
	dns := full.Spec.Egress[2]
	if len(dns.To) != 1 || dns.To[0].NamespaceSelector.MatchLabels[corev1.LabelMetadataName] != "kube-system" ||
		dns.To[0].PodSelector.MatchLabels["k8s-app"] != "kube-dns" || len(dns.Ports) != 2 || dns.Ports[0].Port.IntValue() != 53 {
		t.Errorf("DNS rule %+v", dns)
	}

	all := buildPolicy(testParams(), server, Egress{Deny: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}, "full")
	if len(all.Spec.Egress) != 0 {
		t.Errorf("everything denied, yet %+v", all.Spec.Egress)
	}
}

func TestEgressCheck(t *testing.T) {
	if err := (Egress{Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}).check(); err != nil {
		t.Errorf("a LAN mirror: %v", err)
	}
	for _, bad := range []string{"169.254.169.254/32", "127.0.0.0/8", "0.0.0.0/0", "fd00::/8"} {
		if (Egress{Allow: []netip.Prefix{netip.MustParsePrefix(bad)}}).check() == nil {
			t.Errorf("allowing %s was taken", bad)
		}
	}
}
