package kubernetes

import (
	"errors"
	"fmt"
	"os"
	"strings"

	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// inClusterNamespaceFile is where a pod's service account namespace is
// mounted: the namespace a server running in the cluster defaults to.
const inClusterNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// Connection is a client of the cluster, and the namespace its
// configuration names (the kubeconfig context's, or the server pod's own).
type Connection struct {
	Client    k8s.Interface
	Config    *rest.Config
	Namespace string
	// InCluster says the server runs in a pod of the cluster (no
	// kubeconfig was given and the pod's service account was found).
	InCluster bool
	// Host is the API server's address, for messages.
	Host string
}

// Connect reaches the cluster: through kubeconfig when given, else as the
// pod the server runs in (its service account), else through the usual
// kubeconfig ($KUBECONFIG, ~/.kube/config). Nothing is asked of the API
// server yet.
func Connect(kubeconfig string) (Connection, error) {
	var (
		cfg *rest.Config
		ns  string
		in  bool
		err error
	)
	if kubeconfig == "" {
		if cfg, err = rest.InClusterConfig(); err == nil {
			in = true
			if b, rerr := os.ReadFile(inClusterNamespaceFile); rerr == nil {
				ns = strings.TrimSpace(string(b))
			}
		} else if !errors.Is(err, rest.ErrNotInCluster) {
			return Connection{}, fmt.Errorf("in-cluster configuration: %w", err)
		}
	}
	if cfg == nil {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		if kubeconfig != "" {
			rules.ExplicitPath = kubeconfig
		}
		cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
		if cfg, err = cc.ClientConfig(); err != nil {
			if clientcmd.IsEmptyConfig(err) {
				return Connection{}, errors.New("no kubeconfig: give --kubeconfig, or run the server in a pod of the cluster")
			}
			return Connection{}, fmt.Errorf("kubeconfig: %w", err)
		}
		if ns, _, err = cc.Namespace(); err != nil {
			return Connection{}, fmt.Errorf("kubeconfig: %w", err)
		}
	}
	// Watches last as long as sandboxes; the client's own timeout would
	// cut them. Each request is bounded by its context instead.
	cfg.Timeout = 0
	cfg.UserAgent = "execlaw"
	// The session manager starts and stops several sandboxes at once, each
	// a few requests; client-go's default of 5 per second would queue them.
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := k8s.NewForConfig(cfg)
	if err != nil {
		return Connection{}, err
	}
	if ns == "" {
		ns = "default"
	}
	return Connection{Client: cs, Config: cfg, Namespace: ns, InCluster: in, Host: cfg.Host}, nil
}
