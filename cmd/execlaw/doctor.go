package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/execlaw/execlaw/internal/network"
	"github.com/execlaw/execlaw/internal/sandbox/detect"
	"github.com/execlaw/execlaw/internal/sandbox/kubernetes"
	"github.com/execlaw/execlaw/internal/sandbox/vm"
)

// doctor prints what this host offers for sandboxes, which driver serve would
// pick, and why.
func doctor(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("execlaw doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", envOr(getenv, "EXECLAW_DATA_DIR", "./data"), "data directory (EXECLAW_DATA_DIR)")
	img := fs.String("image", envOr(getenv, "EXECLAW_IMAGE", "dev"), "guest image (EXECLAW_IMAGE)")
	sandbox := fs.String("sandbox", envOr(getenv, "EXECLAW_SANDBOX", "auto"), "driver to check for (EXECLAW_SANDBOX)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	quick := fs.Bool("quick", false, "do not boot a probe VM under KVM")
	var netFlags serveConfig
	fs.StringVar(&netFlags.NetPool, "net-pool", envOr(getenv, "EXECLAW_NET_POOL", network.DefaultPool.String()), "VM address pool, as serve takes it (EXECLAW_NET_POOL)")
	fs.StringVar(&netFlags.GuestAllow, "guest-allow", envOr(getenv, "EXECLAW_GUEST_ALLOW", ""), "ranges guests may reach, as serve takes them (EXECLAW_GUEST_ALLOW)")
	fs.StringVar(&netFlags.GuestDeny, "guest-deny", envOr(getenv, "EXECLAW_GUEST_DENY", ""), "ranges guests may not reach, as serve takes them (EXECLAW_GUEST_DENY)")
	warmPool := fs.String("warm-pool", envOr(getenv, "EXECLAW_WARM_POOL", "auto"), "warm pool, as serve takes it (EXECLAW_WARM_POOL)")
	fs.IntVar(&netFlags.MaxSessions, "max-sessions", 10, "sessions at once, as serve takes it")
	fs.Float64Var(&netFlags.MemoryPercent, "memory-limit-percent", 90, "the memory gate, as serve takes it")
	fs.Float64Var(&netFlags.MemoryOvercommit, "memory-overcommit", 1, "the memory gate's overcommit, as serve takes it")
	if err := registerK8sFlags(fs, &netFlags.K8s, func(name, def string) string { return envOr(getenv, name, def) }); err != nil {
		return err
	}
	var err error
	if err = fs.Parse(args); err != nil {
		return err
	}
	if netFlags.WarmPool, err = parseWarmPool(*warmPool, netFlags.MaxSessions); err != nil {
		return err
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if *sandbox == sandboxKubernetes {
		return doctorK8s(ctx, netFlags, dir, *asJSON, stdout)
	}
	netCfg, err := guestNetConfig(netFlags)
	if err != nil {
		return err
	}
	netCfg.Instance, netCfg.Owner = network.InstanceID(dir), dir
	hostNet := vm.NewHostNetwork(netCfg)
	driver, report, err := detect.Choose(ctx, detect.Options{
		Requested: *sandbox, DataDir: dir, ImageName: *img, Getenv: getenv, SkipProbe: *quick,
		Network: hostNet,
	})
	report.Findings = append(report.Findings, resourceFindings(dir)...)
	report.Findings = append(report.Findings, poolFinding(netFlags, driver, dir))
	// Where this server's VM networking stands among other servers on the
	// host, and what its guests may reach. Reading only: nothing is claimed.
	netInfo, netErr := hostNet.Describe()
	if *asJSON {
		out := struct {
			detect.Report
			Network      *network.Info `json:"network,omitempty"`
			NetworkError string        `json:"networkError,omitempty"`
		}{Report: report}
		if netErr != nil {
			out.NetworkError = netErr.Error()
		} else {
			out.Network = &netInfo
		}
		if encErr := writeIndentedJSON(stdout, out); encErr != nil {
			return encErr
		}
		return err
	}
	printFindings(stdout, report.Findings)
	if netErr != nil {
		fmt.Fprintf(stdout, "\nVM network: %v\n", netErr)
	} else {
		fmt.Fprintf(stdout, "\nVM network: %s\nGuest policy: %s\n", netInfo, netInfo.Policy)
	}
	if err != nil {
		fmt.Fprintf(stdout, "\nNo driver: %v\n", err)
		return err
	}
	fmt.Fprintf(stdout, "\nSandbox driver: %s\nWhy: %s\n", report.Driver, report.Reason)
	if agents, err := offeredAgents(driver.Isolated(), report); err == nil {
		fmt.Fprintf(stdout, "Agents: %s\n", strings.Join(agents.Names(), ", "))
	}
	return nil
}

// doctorK8s is doctor for --sandbox kubernetes: the settings as serve
// reads them, then what the cluster says of them (its version, this
// server's permissions in the namespace, the runtime class, what an
// earlier run left). It asks and lists; it makes and deletes nothing.
func doctorK8s(ctx context.Context, c serveConfig, dataDir string, asJSON bool, stdout io.Writer) error {
	report := detect.Report{Driver: sandboxKubernetes}
	s, err := k8sDriverConfig(c, dataDir, false, slog.New(slog.DiscardHandler))
	if err == nil {
		err = s.checkCluster(ctx)
		report.Reason = fmt.Sprintf("--sandbox kubernetes: pods in namespace %s of the cluster at %s", s.cfg.Namespace, s.conn.Host)
	}
	report.Findings, report.ImageAgents = s.findings, s.imageAgents
	if asJSON {
		if encErr := writeIndentedJSON(stdout, report); encErr != nil {
			return encErr
		}
		return err
	}
	printFindings(stdout, report.Findings)
	if err != nil {
		fmt.Fprintf(stdout, "\nNo driver: %v\n", err)
		return err
	}
	fmt.Fprintf(stdout, "\nSandbox driver: %s\nWhy: %s\n", report.Driver, report.Reason)
	if agents, err := offeredAgents(true, report); err == nil {
		fmt.Fprintf(stdout, "Agents: %s\n", strings.Join(agents.Names(), ", "))
	}
	return nil
}

// checkCluster asks the cluster about the driver's settings, adding a
// finding for each; the error is the first thing that stops serve from
// working.
func (s *k8sSetup) checkCluster(ctx context.Context) error {
	cs, ns := s.conn.Client, s.cfg.Namespace
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		s.add("kubernetes version", false, "the API server does not answer: %v", err)
		return err
	}
	s.add("kubernetes version", true, "%s", v.GitVersion)

	var missing []string
	for _, need := range kubernetes.Permissions {
		for _, verb := range need.Verbs {
			r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
				Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: ns, Verb: verb, Group: need.Group, Resource: need.Resource, Subresource: need.Subresource,
				}},
			}, metav1.CreateOptions{})
			what := need.Resource
			if need.Subresource != "" {
				what += "/" + need.Subresource
			}
			if err != nil {
				missing = append(missing, fmt.Sprintf("%s %s (%v)", verb, what, err))
			} else if !r.Status.Allowed {
				missing = append(missing, verb+" "+what)
			}
		}
	}
	if len(missing) > 0 {
		err := fmt.Errorf("in namespace %s this server may not: %s (see deploy/kubernetes/rbac.yaml)", ns, strings.Join(missing, ", "))
		s.add("permissions", false, "%v", err)
		return err
	}
	s.add("permissions", true, "pods, pods/log, secrets, network policies and claims in namespace %s", ns)

	if rc := s.cfg.Template.RuntimeClass(); rc != "" {
		_, err := cs.NodeV1().RuntimeClasses().Get(ctx, rc, metav1.GetOptions{})
		switch {
		case err == nil:
			s.add("runtime class", true, "%s exists", rc)
		case apierrors.IsNotFound(err):
			err = fmt.Errorf("runtime class %s does not exist: pods would not start", rc)
			s.add("runtime class", false, "%v", err)
			return err
		default:
			s.add("runtime class", true, "%s: cannot check (%v); pods fail to start if it is missing", rc, err)
		}
	}
	if inst := s.cfg.Instance; inst != "" {
		sel := metav1.ListOptions{LabelSelector: kubernetes.LabelInstance + "=" + inst}
		pods, perr := cs.CoreV1().Pods(ns).List(ctx, sel)
		claims, cerr := cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, sel)
		if perr == nil && cerr == nil {
			s.add("objects", true, "%d pods and %d workspace claims of this instance now (a running server's, or an earlier run's that the next start sweeps but for paused sessions' claims)",
				len(pods.Items), len(claims.Items))
		}
	}
	return nil
}

// printFindings lists doctor's findings, one a line, marked yes or no.
func printFindings(w io.Writer, findings []detect.Finding) {
	for _, f := range findings {
		mark := "no "
		if f.OK {
			mark = "yes"
		}
		fmt.Fprintf(w, "  [%s] %-18s %s\n", mark, f.Check, f.Detail)
	}
}

func writeIndentedJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
