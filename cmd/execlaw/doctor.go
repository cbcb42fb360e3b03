package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/execlaw/execlaw/internal/network"
	"github.com/execlaw/execlaw/internal/sandbox/detect"
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
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if encErr := enc.Encode(out); encErr != nil {
			return encErr
		}
		return err
	}
	for _, f := range report.Findings {
		mark := "no "
		if f.OK {
			mark = "yes"
		}
		fmt.Fprintf(stdout, "  [%s] %-18s %s\n", mark, f.Check, f.Detail)
	}
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
