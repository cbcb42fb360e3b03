package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/execlaw/execlaw/internal/network"
	"github.com/execlaw/execlaw/internal/sandbox/detect"
	"github.com/execlaw/execlaw/internal/sandbox/kubernetes"
	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/store"
)

// sandboxKubernetes is --sandbox kubernetes: sessions run as pods of a
// cluster, not on this host. detect knows only this host's drivers.
const sandboxKubernetes = "kubernetes"

// k8sInstanceFile keeps the instance id of the server's pods in the data
// directory. It is random, not derived from the directory's path like the
// VM network's: every server in a pod has its data at the same path, and
// two of them in one namespace must not sweep each other's pods.
const k8sInstanceFile = "kubernetes-instance"

// k8sCollectInterval is how often leftover pod objects are looked for
// while the server runs (claims of sessions ended while paused, above all).
const k8sCollectInterval = 5 * time.Minute

// defaultServerPods selects the server's own pods when it runs in the
// cluster: the labels deploy/kubernetes gives them.
const defaultServerPods = "app.kubernetes.io/name=execlaw,app.kubernetes.io/component=server"

// k8sConfig is the kubernetes driver's part of the settings.
type k8sConfig struct {
	Kubeconfig  string
	Namespace   string
	PodTemplate string
	Image       string
	// ServerFrom is where guests accept connections from: the server's pod
	// labels (in the cluster) or its addresses (outside).
	ServerFrom string
	ClusterDNS bool
	// ImageAgents are the in-VM agents' CLIs the guest image carries,
	// comma-separated: the server cannot look inside an image the cluster
	// pulls, so the operator says (execlaw image build --oci prints it).
	ImageAgents string
}

func registerK8sFlags(fs *flag.FlagSet, c *k8sConfig, env func(name, def string) string) error {
	fs.StringVar(&c.Kubeconfig, "kubeconfig", env("EXECLAW_KUBECONFIG", ""), "--sandbox kubernetes: kubeconfig file; empty: the pod's service account when the server runs in the cluster, else $KUBECONFIG or ~/.kube/config (EXECLAW_KUBECONFIG)")
	fs.StringVar(&c.Namespace, "k8s-namespace", env("EXECLAW_K8S_NAMESPACE", ""), "--sandbox kubernetes: namespace of the session pods; default: the pod template's, else the server pod's or the kubeconfig context's (EXECLAW_K8S_NAMESPACE)")
	fs.StringVar(&c.PodTemplate, "k8s-pod-template", env("EXECLAW_K8S_POD_TEMPLATE", ""), "--sandbox kubernetes: YAML Pod or PodTemplateSpec session pods are made from (runtimeClassName, nodeSelector, tolerations, resources, a workspace volumeClaimTemplate); see deploy/kubernetes (EXECLAW_K8S_POD_TEMPLATE)")
	fs.StringVar(&c.Image, "k8s-image", env("EXECLAW_K8S_IMAGE", ""), "--sandbox kubernetes: guest image (execlaw image build --oci); default: the pod template's guest container's (EXECLAW_K8S_IMAGE)")
	fs.StringVar(&c.ServerFrom, "k8s-server-from", env("EXECLAW_K8S_SERVER_FROM", ""), "--sandbox kubernetes: where session pods accept connections from: the server's pod labels (k=v,...) when it runs in the cluster (default "+defaultServerPods+"), or comma-separated CIDRs of its addresses as pods see them (EXECLAW_K8S_SERVER_FROM)")
	dns, err := strconv.ParseBool(env("EXECLAW_K8S_CLUSTER_DNS", "false"))
	if err != nil {
		return fmt.Errorf("EXECLAW_K8S_CLUSTER_DNS: not true or false")
	}
	fs.StringVar(&c.ImageAgents, "k8s-image-agents", env("EXECLAW_K8S_IMAGE_AGENTS", ""), "--sandbox kubernetes: the agent CLIs the guest image carries, comma-separated ("+strings.Join(imageAgentNames(), ", ")+"), offered for sessions; `execlaw image build --oci` prints what its image carries (EXECLAW_K8S_IMAGE_AGENTS)")
	fs.BoolVar(&c.ClusterDNS, "k8s-cluster-dns", dns, "--sandbox kubernetes: session pods use the cluster's DNS (kube-dns) instead of public resolvers; it shows them the names of the cluster's services (EXECLAW_K8S_CLUSTER_DNS)")
	return nil
}

// parseServerFrom reads --k8s-server-from: CIDRs (or bare addresses) when
// every item is one, else a label selector of k=v pairs.
func parseServerFrom(s string) (kubernetes.ServerPeers, error) {
	var peers kubernetes.ServerPeers
	s = strings.TrimSpace(s)
	if s == "" {
		return peers, nil
	}
	cidrs := true
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				cidrs = false
				break
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		peers.CIDRs = append(peers.CIDRs, p.Masked())
	}
	if cidrs {
		return peers, nil
	}
	peers.CIDRs = nil
	set, err := labels.ConvertSelectorToLabelsMap(s)
	if err != nil || len(set) == 0 {
		return peers, fmt.Errorf("--k8s-server-from (EXECLAW_K8S_SERVER_FROM) %q: want k=v pod labels or CIDRs: %v", s, err)
	}
	peers.PodLabels = set
	return peers, nil
}

// loadOrCreateK8sInstance is the server's instance id for its pods, made
// the first time unless !create (doctor, which changes nothing): then ""
// when there is none yet.
func loadOrCreateK8sInstance(dataDir string, create bool) (string, error) {
	path := filepath.Join(dataDir, k8sInstanceFile)
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if err := kubernetes.CheckInstance(id); err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		return id, nil
	}
	switch {
	case !errors.Is(err, os.ErrNotExist):
		return "", err
	case !create:
		return "", nil // none yet
	}
	var raw [4]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw[:])
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("store the kubernetes instance id: %w", err)
	}
	return id, nil
}

// k8sSetup is what the kubernetes driver is made of, read from the flags
// and the cluster's configuration, with a finding for each part (doctor
// shows them, and /api/platform).
type k8sSetup struct {
	conn        kubernetes.Connection
	cfg         kubernetes.Config
	imageAgents []string
	findings    []detect.Finding
}

// imageAgentNames are the agent CLIs a guest image may carry.
func imageAgentNames() []string {
	var names []string
	for _, k := range agentKinds().Kinds() {
		if k.Image != "" {
			names = append(names, k.Image)
		}
	}
	return names
}

// parseImageAgents reads --k8s-image-agents.
func parseImageAgents(s string) ([]string, error) {
	var agents []string
	names := imageAgentNames()
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(names, f) {
			return nil, fmt.Errorf("--k8s-image-agents (EXECLAW_K8S_IMAGE_AGENTS): no agent CLI %q; the image may carry %s", f, strings.Join(names, ", "))
		}
		if !slices.Contains(agents, f) {
			agents = append(agents, f)
		}
	}
	return agents, nil
}

func (s *k8sSetup) add(check string, ok bool, format string, args ...any) {
	s.findings = append(s.findings, detect.Finding{Check: check, OK: ok, Detail: fmt.Sprintf(format, args...)})
}

// k8sDriverConfig reads the settings of the kubernetes driver; the error
// names the first that is wrong. Nothing is asked of the cluster; the
// instance id is made when create (serve) and there is none yet.
func k8sDriverConfig(c serveConfig, dataDir string, create bool, log *slog.Logger) (*k8sSetup, error) {
	s := &k8sSetup{}
	kc := c.K8s
	conn, err := kubernetes.Connect(kc.Kubeconfig)
	if err != nil {
		s.add("kubernetes api", false, "%v", err)
		return s, err
	}
	s.conn = conn
	how := "kubeconfig " + kc.Kubeconfig
	if conn.InCluster {
		how = "the pod's service account"
	} else if kc.Kubeconfig == "" {
		how = "the default kubeconfig"
	}
	s.add("kubernetes api", true, "%s, through %s", conn.Host, how)

	var tm kubernetes.Template
	if kc.PodTemplate != "" {
		if tm, err = kubernetes.LoadTemplate(kc.PodTemplate); err != nil {
			s.add("pod template", false, "%v", err)
			return s, err
		}
		s.add("pod template", true, "%s", kc.PodTemplate)
	} else {
		s.add("pod template", true, "none: pods on the cluster's default runtime, no workspace claim (give --k8s-pod-template)")
	}
	ns := kc.Namespace
	switch {
	case ns == "" && tm.Meta.Namespace != "":
		ns = tm.Meta.Namespace
	case ns == "":
		ns = conn.Namespace
	case tm.Meta.Namespace != "" && tm.Meta.Namespace != ns:
		err := fmt.Errorf("--k8s-namespace %s, but the pod template is for %s", ns, tm.Meta.Namespace)
		s.add("namespace", false, "%v", err)
		return s, err
	}
	s.add("namespace", true, "%s", ns)

	instance, err := loadOrCreateK8sInstance(dataDir, create)
	switch {
	case err != nil:
		s.add("instance", false, "%v", err)
		return s, err
	case instance == "":
		s.add("instance", true, "none yet: serve makes one in %s", filepath.Join(dataDir, k8sInstanceFile))
	default:
		s.add("instance", true, "%s=%s (from %s): sweeps delete only objects with this label", kubernetes.LabelInstance, instance, filepath.Join(dataDir, k8sInstanceFile))
	}

	from := kc.ServerFrom
	if from == "" && conn.InCluster {
		from = defaultServerPods
	}
	peers, err := parseServerFrom(from)
	if err == nil && len(peers.PodLabels) == 0 && len(peers.CIDRs) == 0 {
		err = errors.New("--k8s-server-from (EXECLAW_K8S_SERVER_FROM) is needed outside the cluster: the server's address as pods see it (a CIDR), which their network policy lets in")
	}
	if err != nil {
		s.add("ingress", false, "%v", err)
		return s, err
	}
	if len(peers.PodLabels) > 0 {
		s.add("ingress", true, "guests accept connections on port %d only from pods labelled %s", kubernetes.GuestPort, labels.Set(peers.PodLabels))
	} else {
		s.add("ingress", true, "guests accept connections on port %d only from %v", kubernetes.GuestPort, peers.CIDRs)
	}

	netCfg, err := guestNetConfig(c)
	if err != nil {
		return s, err
	}
	egress := kubernetes.Egress{Allow: netCfg.AllowForward, Deny: netCfg.DenyForward, ClusterDNS: kc.ClusterDNS}
	dns := "public resolvers " + fmt.Sprint(kubernetes.DefaultDNS)
	switch {
	case kc.ClusterDNS:
		dns = "the cluster's DNS (--k8s-cluster-dns)"
	case tm.Spec.DNSPolicy == "None":
		dns = "the pod template's dnsConfig"
	}
	s.add("egress", true, "network full: IPv4 internet only, not %v, nor %v%s; DNS: %s; the cluster's network plugin must enforce NetworkPolicy",
		network.DefaultDenyForward, network.AlwaysDenied, extraRanges(netCfg.DenyForward, netCfg.AllowForward), dns)

	s.cfg = kubernetes.Config{
		Client: conn.Client, Namespace: ns, Instance: instance, Template: tm, Image: kc.Image,
		Server: peers, Egress: egress, Logger: log,
	}
	image := kc.Image
	if image == "" {
		image = tm.Image()
	}
	if image == "" {
		err := errors.New("no guest image: give --k8s-image (execlaw image build --oci), or name it in the pod template's guest container")
		s.add("guest image", false, "%v", err)
		return s, err
	}
	agents, err := parseImageAgents(kc.ImageAgents)
	if err != nil {
		s.add("guest image", false, "%v", err)
		return s, err
	}
	s.imageAgents = agents
	if len(agents) > 0 {
		s.add("guest image", true, "%s, carrying %s (--k8s-image-agents)", image, strings.Join(agents, ", "))
	} else {
		s.add("guest image", true, "%s; the built-in agent only (--k8s-image-agents names agent CLIs it carries)", image)
	}
	if rc := tm.RuntimeClass(); rc != "" {
		s.add("isolation", true, "runtimeClassName %s: each session's pod runs on that runtime (a VM with Kata Containers, a kernel of its own with gVisor); the driver trusts the name", rc)
	} else {
		s.add("isolation", false, "no runtimeClassName in the pod template: pods are containers on the node's kernel (runc), NOT a VM boundary; sessions are reported not isolated")
	}
	if tm.Pausable() {
		s.add("pause", true, "the pod template asks for a workspace claim: paused sessions keep their files")
	} else {
		s.add("pause", false, "no workspace claim in the pod template: a paused session's pod and files are gone, it resumes on an empty workspace")
	}
	return s, nil
}

// extraRanges describes --guest-deny and --guest-allow for the egress finding.
func extraRanges(deny, allow []netip.Prefix) string {
	var s string
	if len(deny) > 0 {
		s += fmt.Sprintf(", nor %v (--guest-deny)", deny)
	}
	if len(allow) > 0 {
		s += fmt.Sprintf(", but %v (--guest-allow)", allow)
	}
	return s
}

// kubernetesDriver makes the kubernetes driver for serve; its report says
// how it was set up. sessions answers for owners and paused sessions.
func kubernetesDriver(ctx context.Context, c serveConfig, dataDir string, sessions kubernetes.Sessions, log *slog.Logger) (*kubernetes.Driver, detect.Report, error) {
	report := detect.Report{Driver: sandboxKubernetes}
	s, err := k8sDriverConfig(c, dataDir, true, log)
	report.Findings, report.ImageAgents = s.findings, s.imageAgents
	if err != nil {
		return nil, report, fmt.Errorf("--sandbox kubernetes: %w", err)
	}
	if v, err := s.conn.Client.Discovery().ServerVersion(); err != nil {
		return nil, report, fmt.Errorf("--sandbox kubernetes: the API server at %s does not answer: %w", s.conn.Host, err)
	} else {
		report.Reason = fmt.Sprintf("--sandbox kubernetes: pods in namespace %s of the cluster at %s (Kubernetes %s)", s.cfg.Namespace, s.conn.Host, v.GitVersion)
	}
	s.cfg.Sessions = sessions
	d, err := kubernetes.New(s.cfg)
	if err != nil {
		return nil, report, err
	}
	return d, report, nil
}

// storeSessions answers the kubernetes driver from the session store. The
// store is opened after the driver is made, and set before any session
// starts.
type storeSessions struct{ st *store.Store }

func (s *storeSessions) Owner(ctx context.Context, id string) (string, error) {
	if s.st == nil {
		return "", errors.New("no session store yet")
	}
	rec, err := s.st.GetSession(ctx, id)
	if err != nil {
		return "", err
	}
	return rec.UserID, nil
}

// Over: ending (stopping), ended or unknown. A pausing session's state
// stays what it was until it is paused, so that a pause's Stop keeps the
// claim.
func (s *storeSessions) Over(ctx context.Context, id string) (bool, error) {
	if s.st == nil {
		return false, errors.New("no session store yet")
	}
	rec, err := s.st.GetSession(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	switch rec.State {
	case session.StateStopping, session.StateStopped, session.StateError:
		return true, nil
	}
	return false, nil
}

// sweepK8s is the kubernetes driver's part of a server's start, after the
// session manager's Recover: the pods a previous run left are deleted,
// and so on while the server runs (see kubernetes.Driver.Sweep).
func sweepK8s(ctx context.Context, d *kubernetes.Driver, log *slog.Logger) error {
	n, err := d.Sweep(ctx)
	if err != nil {
		return fmt.Errorf("sweep leftover session pods: %w", err)
	}
	if n != (kubernetes.Swept{}) {
		log.Info("removed what an earlier run left in the cluster", "deleted", n.String(), "namespace", d.Namespace())
	}
	go d.CollectEvery(ctx, k8sCollectInterval)
	return nil
}

// notIsolatedWarning is the start-up banner for a driver that is not an
// isolation boundary.
func notIsolatedWarning(driver string) string {
	if driver == sandboxKubernetes {
		return "WARNING: the kubernetes sandbox's pods are containers on their node's kernel (no runtimeClassName in the pod template), NOT a VM boundary: use a Kata Containers or gVisor runtime class for untrusted users."
	}
	return "WARNING: the process sandbox is NOT an isolation boundary: agents run as this user on this host."
}
