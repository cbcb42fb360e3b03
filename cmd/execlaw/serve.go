package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/execlaw/execlaw/internal/api"
	"github.com/execlaw/execlaw/internal/egress"
	"github.com/execlaw/execlaw/internal/image"
	"github.com/execlaw/execlaw/internal/keystore"
	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/mail"
	"github.com/execlaw/execlaw/internal/metrics"
	"github.com/execlaw/execlaw/internal/network"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/detect"
	"github.com/execlaw/execlaw/internal/sandbox/firecracker"
	"github.com/execlaw/execlaw/internal/sandbox/kubernetes"
	"github.com/execlaw/execlaw/internal/sandbox/vm"
	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/store"
	"github.com/execlaw/execlaw/internal/version"
	"github.com/execlaw/execlaw/web"
)

// serveConfig is every setting of execlaw serve. Each flag has an
// EXECLAW_* environment variable; a flag given on the command line wins.
type serveConfig struct {
	Listen        string
	DataDir       string
	Sandbox       string
	Auth          string
	Token         string
	MaxSessions   int
	MemoryPercent float64
	GuestBin      string
	Image         string
	MaxSteps      int
	LLMRetries    int
	// MaxEventLogMiB bounds one session's event log.
	MaxEventLogMiB int
	// MaxUploadMiB bounds one file or archive uploaded into a workspace;
	// RepoCAFile holds PEM certificates repository clones trust besides the
	// system's.
	MaxUploadMiB int
	RepoCAFile   string
	// PauseAfterMin pauses idle sessions; MaxPaused bounds paused ones.
	PauseAfterMin, MaxPaused int
	// WarmPool is how many booted, idle VMs new sessions take from;
	// warmPoolAuto: one for VM drivers, none for the process driver.
	WarmPool int
	// KeyStore seals API keys at rest ("file:PATH", "credential:NAME").
	KeyStore string
	// DiskSize is each VM's writable disk, MinFreeDisk the data directory's
	// free-space floor, in bytes.
	DiskSize, MinFreeDisk uint64
	LogLevel              string

	// VM networking: the address pool this server claims a block of, and
	// ranges carved out of (GuestAllow) or added to (GuestDeny) what
	// guests may not reach.
	NetPool    string
	GuestAllow string
	GuestDeny  string

	// E-mail: SMTP, or exe.dev's gateway on exe.dev.
	SMTPAddr     string
	SMTPTLS      string
	SMTPUser     string
	SMTPPassword string // never logged or printed
	SMTPFrom     string
	EmailAllow   string
	// exe.dev: ExeDev is "auto" (detect from the host name), "true" or "false".
	ExeDev        string
	ExeDevGateway string
	ExeDevAPI     string
	// MetricsListen serves /metrics on an address of its own.
	MetricsListen string
	// ModelHosts is the outbound policy for what the server fetches on a
	// user's behalf (--model-hosts); empty: by --auth (modelPolicy).
	ModelHosts string
	// AllowedHosts are Host names served besides the derived ones;
	// TrustedProxy the peers whose X-ExeDev-* headers count (exedev mode);
	// TLSCert and TLSKey turn on HTTPS.
	AllowedHosts string
	TrustedProxy string
	TLSCert      string
	TLSKey       string
	// Preview configures live previews (preview.go).
	Preview previewConfig

	// The VMs' resource walls: sessions per user, committed memory's
	// overcommit ratio, per-VM cgroups (auto, on, off) and CPU cap.
	MaxSessionsPerUser int
	MemoryOvercommit   float64
	VMCgroups          string
	VMCPUQuota         float64

	// K8s configures --sandbox kubernetes (kubernetes.go).
	K8s k8sConfig
}

func parseServeFlags(args []string, getenv func(string) string, stderr io.Writer) (serveConfig, error) {
	var c serveConfig
	fs := flag.NewFlagSet("execlaw serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fs.StringVar(&c.Listen, "listen", env("EXECLAW_LISTEN", "127.0.0.1:8000"), "address to listen on (EXECLAW_LISTEN)")
	fs.StringVar(&c.DataDir, "data-dir", env("EXECLAW_DATA_DIR", "./data"), "directory for the database, token and sandboxes (EXECLAW_DATA_DIR)")
	fs.StringVar(&c.Sandbox, "sandbox", env("EXECLAW_SANDBOX", "auto"), "sandbox driver: auto, process, qemu, firecracker or kubernetes (EXECLAW_SANDBOX)")
	fs.StringVar(&c.Auth, "auth", env("EXECLAW_AUTH", "token"), "authentication: token, none (loopback only) or exedev (EXECLAW_AUTH)")
	fs.StringVar(&c.Token, "token", env("EXECLAW_TOKEN", ""), "access token for --auth token; generated and stored in the data directory if empty (EXECLAW_TOKEN)")
	fs.StringVar(&c.Image, "image", env("EXECLAW_IMAGE", "dev"), "guest image VMs boot, as built by `execlaw image build` (EXECLAW_IMAGE)")
	fs.StringVar(&c.GuestBin, "guest-bin", env("EXECLAW_GUEST_BIN", ""), "path of execlaw-guest for the process driver; default: next to execlaw, then $PATH (EXECLAW_GUEST_BIN)")
	fs.StringVar(&c.KeyStore, "key-store", env("EXECLAW_KEY_STORE", ""), "seal API keys at rest so paused sessions resume after a restart: file:PATH (a key file outside the data directory) or credential:NAME (a systemd credential); empty: keys stay in memory (EXECLAW_KEY_STORE)")
	fs.StringVar(&c.RepoCAFile, "repo-ca-file", env("EXECLAW_REPO_CA_FILE", ""), "PEM file of CA certificates that repository clones trust besides the system's (a private git server) (EXECLAW_REPO_CA_FILE)")
	fs.StringVar(&c.LogLevel, "log-level", env("EXECLAW_LOG_LEVEL", "info"), "debug, info, warn or error (EXECLAW_LOG_LEVEL)")
	diskSize := fs.String("disk-size", env("EXECLAW_DISK_SIZE", "8G"), "size of each VM session's writable disk (sparse): 512M, 8G... (EXECLAW_DISK_SIZE)")
	minFree := fs.String("min-free-disk", env("EXECLAW_MIN_FREE_DISK", "2G"), "free space the data directory's disk keeps: below it new sessions are refused and the session using the most disk is ended; 0 for no floor (EXECLAW_MIN_FREE_DISK)")
	fs.StringVar(&c.SMTPAddr, "smtp-addr", env("EXECLAW_SMTP_ADDR", ""), "SMTP server host:port for mailing transcripts; empty: no SMTP (EXECLAW_SMTP_ADDR)")
	fs.StringVar(&c.SMTPTLS, "smtp-tls", env("EXECLAW_SMTP_TLS", mail.TLSStartTLS), "SMTP encryption: none, starttls or tls (EXECLAW_SMTP_TLS)")
	fs.StringVar(&c.SMTPUser, "smtp-user", env("EXECLAW_SMTP_USER", ""), "SMTP user; empty: no authentication (EXECLAW_SMTP_USER)")
	fs.StringVar(&c.SMTPPassword, "smtp-password", env("EXECLAW_SMTP_PASSWORD", ""), "SMTP password; prefer the environment variable, a flag shows in ps (EXECLAW_SMTP_PASSWORD)")
	fs.StringVar(&c.SMTPFrom, "smtp-from", env("EXECLAW_SMTP_FROM", ""), "sender address of mailed transcripts (EXECLAW_SMTP_FROM)")
	fs.StringVar(&c.EmailAllow, "email-allow", env("EXECLAW_EMAIL_ALLOW", ""), "comma-separated addresses and @domains transcripts may be mailed to, besides the user's own (EXECLAW_EMAIL_ALLOW)")
	fs.StringVar(&c.ModelHosts, "model-hosts", env("EXECLAW_MODEL_HOSTS", ""), "where model lists, model calls and the credential proxy may connect: public, loopback (public and this host) or private (also private networks), plus comma-separated addresses, CIDRs, host:port or host names; default loopback, public with --auth exedev (EXECLAW_MODEL_HOSTS)")
	c.ExeDev = env("EXECLAW_EXEDEV", "auto")
	fs.Var((*exeDevFlag)(&c.ExeDev), "exedev", "running on exe.dev: auto (host name ends in .exe.xyz), true or false (EXECLAW_EXEDEV)")
	fs.StringVar(&c.ExeDevGateway, "exedev-gateway", env("EXECLAW_EXEDEV_GATEWAY", ""), "base address of exe.dev's e-mail gateway (default "+mail.DefaultGateway+" on exe.dev) (EXECLAW_EXEDEV_GATEWAY)")
	fs.StringVar(&c.ExeDevAPI, "exedev-api", env("EXECLAW_EXEDEV_API", ""), "exe.dev API base URL for new VMs (default "+api.DefaultExeDevAPI+"; setting it offers the feature off exe.dev too) (EXECLAW_EXEDEV_API)")
	fs.StringVar(&c.NetPool, "net-pool", env("EXECLAW_NET_POOL", network.DefaultPool.String()), "IPv4 range VM session addresses come from; each server on the host claims a /20 of it (EXECLAW_NET_POOL)")
	fs.StringVar(&c.GuestAllow, "guest-allow", env("EXECLAW_GUEST_ALLOW", ""), "comma-separated IPv4 ranges guests may reach although private (a LAN mirror); never the host, metadata or other sessions (EXECLAW_GUEST_ALLOW)")
	fs.StringVar(&c.GuestDeny, "guest-deny", env("EXECLAW_GUEST_DENY", ""), "comma-separated IPv4 ranges guests may not reach, besides the private ones (EXECLAW_GUEST_DENY)")
	fs.StringVar(&c.MetricsListen, "metrics-listen", env("EXECLAW_METRICS_LISTEN", ""), "serve /metrics on this address instead of the main one; no authentication when it is loopback (EXECLAW_METRICS_LISTEN)")
	fs.StringVar(&c.AllowedHosts, "allowed-hosts", env("EXECLAW_ALLOWED_HOSTS", ""), "comma-separated host names, IP addresses and *.domains the server answers to, besides loopback names and those derived from --listen; others get 421 (EXECLAW_ALLOWED_HOSTS)")
	fs.StringVar(&c.TrustedProxy, "trusted-proxy", env("EXECLAW_TRUSTED_PROXY", ""), "--auth exedev: comma-separated addresses or CIDR prefixes of the exe.dev proxy, whose X-ExeDev-* headers are believed besides loopback peers' (EXECLAW_TRUSTED_PROXY)")
	fs.StringVar(&c.TLSCert, "tls-cert", env("EXECLAW_TLS_CERT", ""), "PEM certificate (chain) file: serve HTTPS; needs --tls-key (EXECLAW_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "tls-key", env("EXECLAW_TLS_KEY", ""), "PEM private key file for --tls-cert (EXECLAW_TLS_KEY)")
	registerPreviewFlags(fs, &c.Preview, env)
	if err := registerK8sFlags(fs, &c.K8s, env); err != nil {
		return c, err
	}
	intFlag := func(p *int, name, envName string, def int, help string) error {
		v, err := strconv.Atoi(env(envName, strconv.Itoa(def)))
		if err != nil {
			return fmt.Errorf("%s: %q is not a number", envName, getenv(envName))
		}
		fs.IntVar(p, name, v, help+" ("+envName+")")
		return nil
	}
	for _, f := range []struct {
		p                   *int
		name, envName, help string
		def                 int
	}{
		{&c.MaxSessions, "max-sessions", "EXECLAW_MAX_SESSIONS", "sessions that may run at once", 10},
		{&c.MaxSessionsPerUser, "max-sessions-per-user", "EXECLAW_MAX_SESSIONS_PER_USER", "sessions one user may run at once; 0: half of --max-sessions (at least 1) with --auth exedev, all of them otherwise", 0},
		{&c.MaxSteps, "max-steps", "EXECLAW_MAX_STEPS", "model calls per turn before the agent stops", 50},
		{&c.MaxEventLogMiB, "max-event-log-mib", "EXECLAW_MAX_EVENT_LOG_MIB", "MiB of events one session's log may hold; a turn that reaches it is ended", session.DefaultEventLogQuota >> 20},
		{&c.MaxUploadMiB, "max-upload-mib", "EXECLAW_MAX_UPLOAD_MIB", "MiB one file or archive uploaded into a session's workspace may hold", api.DefaultMaxUploadMiB},
		{&c.PauseAfterMin, "pause-after", "EXECLAW_PAUSE_AFTER", "minutes without activity after which a session is paused (its VM saved, its memory freed); 0: never", 30},
		{&c.MaxPaused, "max-paused-sessions", "EXECLAW_MAX_PAUSED_SESSIONS", "paused sessions kept at most (they take disk only); 0: no bound", 100},
		{&c.LLMRetries, "llm-retries", "EXECLAW_LLM_RETRIES", "retries of a failed model call (429, 5xx, network)", 2},
	} {
		if err := intFlag(f.p, f.name, f.envName, f.def, f.help); err != nil {
			return c, err
		}
	}
	mem, err := strconv.ParseFloat(env("EXECLAW_MEMORY_LIMIT_PERCENT", "90"), 64)
	if err != nil {
		return c, fmt.Errorf("EXECLAW_MEMORY_LIMIT_PERCENT: not a number")
	}
	fs.Float64Var(&c.MemoryPercent, "memory-limit-percent", mem, "refuse new sessions past this share of host memory (EXECLAW_MEMORY_LIMIT_PERCENT)")
	for _, f := range []struct {
		p                   *float64
		name, envName, help string
		def                 string
	}{
		{&c.MemoryOvercommit, "memory-overcommit", "EXECLAW_MEMORY_OVERCOMMIT", "how far the memory running VMs may use (guest plus VMM, touched or not) may exceed --memory-limit-percent of host memory; 1: not at all", "1"},
		{&c.VMCPUQuota, "vm-cpu-quota", "EXECLAW_VM_CPU_QUOTA", "cap each VMM's CPU time at this share of its vCPUs (0.5: half); 0: no cap", "0"},
	} {
		v, err := strconv.ParseFloat(env(f.envName, f.def), 64)
		if err != nil {
			return c, fmt.Errorf("%s: not a number", f.envName)
		}
		fs.Float64Var(f.p, f.name, v, f.help+" ("+f.envName+")")
	}
	warmPool := fs.String("warm-pool", env("EXECLAW_WARM_POOL", "auto"), "VMs kept booted and idle for new sessions of the default size, which then start at once: a number, or auto (1 with a VM sandbox, 0 with the process one); they count against --max-sessions and the memory gate, and give way to sessions (EXECLAW_WARM_POOL)")
	fs.StringVar(&c.VMCgroups, "vm-cgroups", env("EXECLAW_VM_CGROUPS", cgroupsAuto), "a cgroup per VMM with memory, pids, CPU and IO limits: auto (when the host allows), on (required), off (EXECLAW_VM_CGROUPS)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err := checkResourceFlags(c); err != nil {
		return c, err
	}
	if c.WarmPool, err = parseWarmPool(*warmPool, c.MaxSessions); err != nil {
		return c, err
	}
	switch {
	case c.Auth != api.AuthNone && c.Auth != api.AuthToken && c.Auth != api.AuthExeDev:
		return c, fmt.Errorf("--auth must be none, token or exedev, not %q", c.Auth)
	case c.MaxSessions < 1:
		return c, errors.New("--max-sessions must be at least 1")
	case c.MemoryPercent <= 0 || c.MemoryPercent > 100:
		return c, errors.New("--memory-limit-percent must be in (0, 100]")
	case c.MaxSteps < 1:
		return c, errors.New("--max-steps must be at least 1")
	case !parseSizeInto(&c.DiskSize, *diskSize) || c.DiskSize < 256<<20 || c.DiskSize > 16<<40:
		return c, fmt.Errorf("--disk-size must be a size from 256M to 16T, not %q", *diskSize)
	case !parseSizeInto(&c.MinFreeDisk, *minFree):
		return c, fmt.Errorf("--min-free-disk must be a size such as 2G or 0, not %q", *minFree)
	case c.PauseAfterMin < 0 || c.PauseAfterMin > session.MaxIdleTimeoutMin:
		return c, fmt.Errorf("--pause-after must be between 0 and %d minutes", session.MaxIdleTimeoutMin)
	case c.MaxPaused < 0:
		return c, errors.New("--max-paused-sessions must not be negative")
	case c.MaxEventLogMiB < 1 || c.MaxEventLogMiB > 1<<20:
		return c, errors.New("--max-event-log-mib must be between 1 and 1048576")
	case c.MaxUploadMiB < 1 || c.MaxUploadMiB > 16<<10:
		return c, errors.New("--max-upload-mib must be between 1 and 16384")
	case c.LLMRetries < 0 || c.LLMRetries > 10:
		return c, errors.New("--llm-retries must be between 0 and 10")
	case c.ExeDev != "auto" && c.ExeDev != "true" && c.ExeDev != "false":
		return c, fmt.Errorf("--exedev (EXECLAW_EXEDEV) must be auto, true or false, not %q", c.ExeDev)
	case c.SMTPAddr != "" && c.SMTPFrom == "":
		return c, errors.New("--smtp-from (EXECLAW_SMTP_FROM) is required with --smtp-addr")
	}
	if c.ExeDevAPI != "" {
		if u, err := url.Parse(c.ExeDevAPI); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return c, fmt.Errorf("--exedev-api must be an http(s) URL, not %q", c.ExeDevAPI)
		}
	}
	if _, err := mail.ParsePolicy(c.EmailAllow); err != nil {
		return c, err
	}
	if _, err := modelPolicy(c); err != nil {
		return c, err
	}
	if _, err := guestNetConfig(c); err != nil {
		return c, err
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return c, fmt.Errorf("--metrics-listen must be host:port: %v", err)
		}
		if err := api.CheckListen(c.Auth, c.MetricsListen); err != nil {
			return c, fmt.Errorf("--metrics-listen: %w", err)
		}
	}
	if err := api.CheckListen(c.Auth, c.Listen); err != nil {
		return c, err
	}
	if err := c.Preview.check(c.Listen, c.Auth); err != nil {
		return c, err
	}
	return c, checkHardening(c)
}

// checkHardening checks the settings that keep the server from being
// reached or used by the wrong people.
func checkHardening(c serveConfig) error {
	if c.Auth == api.AuthToken && c.Token != "" && utf8.RuneCountInString(c.Token) < api.MinTokenLen {
		return fmt.Errorf("--token (EXECLAW_TOKEN) must be at least %d characters, not %d: a short token can be guessed; leave it empty to have one generated",
			api.MinTokenLen, utf8.RuneCountInString(c.Token))
	}
	proxies, err := api.ParseTrustedProxies(c.TrustedProxy)
	if err != nil {
		return fmt.Errorf("--trusted-proxy (EXECLAW_TRUSTED_PROXY): %w", err)
	}
	if len(proxies) > 0 && c.Auth != api.AuthExeDev {
		return errors.New("--trusted-proxy (EXECLAW_TRUSTED_PROXY) only applies to --auth exedev")
	}
	if c.Auth == api.AuthExeDev {
		if err := api.CheckExeDev(c.Listen, proxies); err != nil {
			return err
		}
	}
	hosts, err := api.ParseHostList(c.AllowedHosts)
	if err != nil {
		return fmt.Errorf("--allowed-hosts (EXECLAW_ALLOWED_HOSTS): %w", err)
	}
	if _, err := api.NewHostPolicy(c.Auth, hosts); err != nil {
		return fmt.Errorf("--allowed-hosts (EXECLAW_ALLOWED_HOSTS): %w", err)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key (EXECLAW_TLS_CERT, EXECLAW_TLS_KEY) go together: give both or neither")
	}
	return nil
}

// loadTLS reads the HTTPS certificate and key, when given.
func loadTLS(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// allowedHosts is the Host policy: what --listen, --metrics-listen, the
// machine's names and addresses and exe.dev give, plus --allowed-hosts.
func allowedHosts(c serveConfig, isExeDev bool) (*api.HostPolicy, error) {
	name, _ := os.Hostname()
	var addrs []netip.Addr
	if ifs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range ifs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				addrs = append(addrs, p.Addr())
			}
		}
	}
	listens := []string{c.Listen}
	if c.MetricsListen != "" {
		listens = append(listens, c.MetricsListen)
	}
	hosts := api.DefaultAllowedHosts(api.HostDefaults{Mode: c.Auth, Listens: listens, ExeDev: isExeDev, Hostname: name, Addrs: addrs})
	extra, err := api.ParseHostList(c.AllowedHosts)
	if err != nil {
		return nil, err
	}
	return api.NewHostPolicy(c.Auth, append(hosts, extra...))
}

// guestNetConfig is the VM network part of the settings: --net-pool,
// --guest-allow and --guest-deny, checked.
func guestNetConfig(c serveConfig) (network.Config, error) {
	var nc network.Config
	pool, err := netip.ParsePrefix(strings.TrimSpace(c.NetPool))
	if err != nil || !pool.Addr().Is4() {
		return nc, fmt.Errorf("--net-pool (EXECLAW_NET_POOL) must be an IPv4 CIDR range, not %q", c.NetPool)
	}
	nc.Pool = pool
	if nc.AllowForward, err = network.ParsePrefixes(c.GuestAllow); err != nil {
		return nc, fmt.Errorf("--guest-allow (EXECLAW_GUEST_ALLOW): %w", err)
	}
	if nc.DenyForward, err = network.ParsePrefixes(c.GuestDeny); err != nil {
		return nc, fmt.Errorf("--guest-deny (EXECLAW_GUEST_DENY): %w", err)
	}
	if err := nc.Validate(); err != nil {
		return nc, fmt.Errorf("--net-pool/--guest-allow/--guest-deny: %w", err)
	}
	return nc, nil
}

// modelPolicy is the outbound policy of model lists, model calls and the
// credential proxy: --model-hosts, by default loopback (public addresses and
// this host: a single user's local model server works) and public with
// --auth exedev, where many users share the host.
func modelPolicy(c serveConfig) (*egress.Policy, error) {
	spec := c.ModelHosts
	if strings.TrimSpace(spec) == "" {
		spec = egress.LevelLoopback
		if c.Auth == api.AuthExeDev {
			spec = egress.LevelPublic
		}
	}
	p, err := egress.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("--model-hosts (EXECLAW_MODEL_HOSTS): %w", err)
	}
	return p, nil
}

// exeDevFlag is --exedev: a bool flag (--exedev alone means true) that also
// takes auto.
type exeDevFlag string

func (f *exeDevFlag) String() string   { return string(*f) }
func (f *exeDevFlag) IsBoolFlag() bool { return true }
func (f *exeDevFlag) Set(v string) error {
	switch strings.ToLower(v) {
	case "auto":
		*f = "auto"
	case "true", "1", "yes":
		*f = "true"
	case "false", "0", "no":
		*f = "false"
	default:
		return fmt.Errorf("must be auto, true or false")
	}
	return nil
}

// detectExeDev decides, once at start, whether this server runs on an
// exe.dev VM: forced by --exedev, else when the host name ends in .exe.xyz.
func detectExeDev(setting string, hostname func() (string, error)) (bool, string) {
	switch setting {
	case "true":
		return true, "--exedev / EXECLAW_EXEDEV is true"
	case "false":
		return false, "--exedev / EXECLAW_EXEDEV is false"
	}
	name, err := hostname()
	if err != nil {
		return false, "the host name is unknown: " + err.Error()
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if strings.HasSuffix(name, ".exe.xyz") {
		return true, "the host name " + name + " ends in .exe.xyz"
	}
	return false, "the host name " + name + " does not end in .exe.xyz"
}

// mailSender is the transport for mailed transcripts: SMTP when configured,
// else exe.dev's gateway on exe.dev (or when its address is given), else none.
func mailSender(c serveConfig, isExeDev bool) (mail.Sender, error) {
	switch {
	case c.SMTPAddr != "":
		return mail.NewSMTP(mail.SMTPConfig{
			Addr: c.SMTPAddr, TLS: c.SMTPTLS, User: c.SMTPUser, Password: c.SMTPPassword, From: c.SMTPFrom,
		})
	case isExeDev || c.ExeDevGateway != "":
		return mail.NewGateway(c.ExeDevGateway, 0)
	}
	return nil, nil
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseServeFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.LogLevel, stderr)
	if err != nil {
		return err
	}
	tlsConfig, err := loadTLS(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return err
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	unlock, err := lockDataDir(dataDir)
	if err != nil {
		return err
	}
	defer unlock()
	if cfg.Auth == api.AuthToken && cfg.Token == "" {
		if cfg.Token, err = loadOrCreateToken(filepath.Join(dataDir, "token")); err != nil {
			return err
		}
	}

	// VM networking is named for this server instance (its data
	// directory), so servers with different data directories share a host.
	netCfg, err := guestNetConfig(cfg)
	if err != nil {
		return err
	}
	netCfg.Instance, netCfg.Owner, netCfg.Logger = network.InstanceID(dataDir), dataDir, log
	hostNet := vm.NewHostNetwork(netCfg)
	defer func() {
		if err := hostNet.Close(); err != nil {
			log.Error("remove VM networking", "err", err)
		}
	}()
	var (
		driver sandbox.Driver
		report detect.Report
		// k8s is the kubernetes driver; k8sSessions answers it from the
		// store, once that is open.
		k8s         *kubernetes.Driver
		k8sSessions = &storeSessions{}
	)
	if cfg.Sandbox == sandboxKubernetes {
		// Sessions run in the cluster: this host gives them no VM
		// networking, cgroups or OOM scores.
		if k8s, report, err = kubernetesDriver(ctx, cfg, dataDir, k8sSessions, log); err != nil {
			return err
		}
		driver = k8s
	} else {
		// Each VMM's cgroup and OOM score, named for this instance too.
		resources, closeCgroups, err := vmResources(cfg, dataDir, log)
		if err != nil {
			return err
		}
		defer closeCgroups()
		driver, report, err = detect.Choose(ctx, detect.Options{
			Requested: cfg.Sandbox, DataDir: dataDir, ImageName: cfg.Image, GuestBin: cfg.GuestBin,
			Getenv: getenv, Logger: log, Network: hostNet, Firecracker: firecrackerDriver(log, hostNet, resources),
			Resources: resources,
		})
		if err != nil {
			return err
		}
		ownOOMScore(driver.Isolated(), log)
	}
	reason := report.Reason
	log.Info("sandbox driver chosen", "driver", driver.Name(), "isolated", driver.Isolated(), "why", reason)
	if cfg.Auth == api.AuthExeDev && !driver.Isolated() {
		if k8s != nil {
			return errors.New("--auth exedev serves every exe.dev user who can reach the proxy, and the kubernetes sandbox's pods are plain containers on their node's kernel: give --k8s-pod-template a runtimeClassName of a VM or gVisor runtime, or use --auth token for a single user")
		}
		return fmt.Errorf("--auth exedev serves every exe.dev user who can reach the proxy, and the %s sandbox is not an isolation boundary (agents would run as this server's user, next to each other's files): use --sandbox qemu or firecracker (see execlaw doctor), or --auth token for a single user", driver.Name())
	}
	poolNetwork := "full"
	if driver.Isolated() && k8s == nil {
		// Set up VM networking now, and clear what a crashed run left.
		if err := hostNet.Init(ctx); err != nil {
			log.Warn("VM networking unavailable: sessions need network none", "err", err)
			poolNetwork = "none"
		}
	}
	warmPool := warmPoolSize(cfg, driver)
	log.Info("warm pool", "vms", warmPool, "network", poolNetwork)

	st, err := store.Open(ctx, filepath.Join(dataDir, "execlaw.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	k8sSessions.st = st

	isExeDev, why := detectExeDev(cfg.ExeDev, os.Hostname)
	log.Info("platform", "exedev", isExeDev, "why", why)
	hosts, err := allowedHosts(cfg, isExeDev)
	if err != nil {
		return fmt.Errorf("--allowed-hosts: %w", err)
	}
	log.Info("allowed hosts", "hosts", hosts.String())
	proxies, err := api.ParseTrustedProxies(cfg.TrustedProxy)
	if err != nil {
		return err
	}
	sender, err := mailSender(cfg, isExeDev)
	if err != nil {
		return fmt.Errorf("e-mail: %w", err)
	}
	allow, err := mail.ParsePolicy(cfg.EmailAllow)
	if err != nil {
		return err
	}
	if sender != nil {
		log.Info("transcripts can be e-mailed", "via", sender.String(), "allowed", allow.String())
	}

	agents, err := offeredAgents(driver.Isolated() || k8s != nil, report)
	if err != nil {
		return err
	}
	log.Info("agents offered", "agents", agents.Names())
	keys, err := openKeyStore(cfg.KeyStore, dataDir, getenv)
	if err != nil {
		return err
	}
	if keys != nil {
		log.Info("API keys are sealed at rest", "keyStore", fmt.Sprint(keys))
	}

	policy, err := modelPolicy(cfg)
	if err != nil {
		return err
	}
	llmClient := llm.HTTPClient(policy)
	log.Info("outbound policy for model endpoints", "model-hosts", policy.String())

	var repoCA []byte
	if cfg.RepoCAFile != "" {
		if repoCA, err = os.ReadFile(cfg.RepoCAFile); err != nil {
			return fmt.Errorf("--repo-ca-file: %w", err)
		}
		if !bytes.Contains(repoCA, []byte("-----BEGIN CERTIFICATE-----")) {
			return fmt.Errorf("--repo-ca-file: %s holds no PEM certificate", cfg.RepoCAFile)
		}
	}
	met := metrics.New()
	mgr := session.NewManager(session.Config{
		Agents:  agents,
		DataDir: dataDir, MaxSessions: cfg.MaxSessions, MemoryLimitPercent: cfg.MemoryPercent,
		MaxSessionsPerUser: perUserSessions(cfg), MemoryOvercommit: cfg.MemoryOvercommit,
		MaxSteps: cfg.MaxSteps, LLMRetries: cfg.LLMRetries, Observer: met, LLMClient: llmClient,
		EventLogQuota: int64(cfg.MaxEventLogMiB) << 20,
		PauseAfter:    time.Duration(cfg.PauseAfterMin) * time.Minute, MaxPaused: cfg.MaxPaused, Keys: keys,
		DiskMiB: int(cfg.DiskSize >> 20), MinFreeDisk: cfg.MinFreeDisk,
		RepoCA: repoCA, WarmPool: warmPool, PoolNetwork: poolNetwork,
	}, st, driver, log)
	if err := mgr.Recover(ctx); err != nil {
		return fmt.Errorf("recover sessions: %w", err)
	}
	if k8s != nil {
		if err := sweepK8s(ctx, k8s, log); err != nil {
			return err
		}
	}
	met.SetStateSource(mgr.StateCounts)
	mgr.Start()

	previewKey, err := loadPreviewKey(dataDir)
	if err != nil {
		mgr.Close(context.Background())
		return err
	}
	previewLns, err := listenPreviews(cfg.Preview, cfg.Listen, isExeDev, log)
	if err != nil {
		mgr.Close(context.Background())
		return err
	}
	defer previewLns.close()
	srv := api.NewServer(api.Options{
		Logger: log, Auth: api.Auth{Mode: cfg.Auth, Token: cfg.Token, TrustedProxies: proxies}, Sessions: mgr, Store: st,
		Models: &llm.Lister{Client: llmClient},
		Platform: api.Platform{
			IsExeDev: isExeDev,
			Sandbox:  driver.Name(), Isolated: driver.Isolated(), SandboxReason: reason, Version: version.String(),
			SandboxChecks: sandboxChecks(report),
		},
		Assets:  web.Assets,
		Email:   api.EmailOptions{Sender: sender, Allow: allow},
		ExeDev:  api.ExeDevOptions{Enabled: isExeDev || cfg.ExeDevAPI != "", APIURL: cfg.ExeDevAPI},
		Metrics: met, MetricsElsewhere: cfg.MetricsListen != "", AllowedHosts: hosts,
		Preview: previewOptions(cfg.Preview, previewLns, previewKey),
		Files:   api.FilesOptions{MaxUploadBytes: int64(cfg.MaxUploadMiB) << 20},
	})
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		mgr.Close(context.Background())
		return err
	}
	var metricsServer *http.Server
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			ln.Close()
			mgr.Close(context.Background())
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		open := api.IsLoopbackListen(cfg.MetricsListen)
		metricsServer = &http.Server{
			Handler:  srv.MetricsHandler(open),
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		api.Timeouts{}.Configure(metricsServer)
		scheme := "http"
		if tlsConfig != nil && !open {
			metricsServer.TLSConfig = tlsConfig.Clone()
			mln, scheme = tls.NewListener(mln, metricsServer.TLSConfig), "https"
		}
		go func() { _ = metricsServer.Serve(mln) }()
		log.Info("metrics", "url", scheme+"://"+mln.Addr().String()+"/metrics", "authentication", !open)
	}
	httpServer := &http.Server{
		Handler:  srv,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// Each server gets its own copy: serving one adds its protocols
		// (h2) to its config, while the preview servers copy theirs.
		TLSConfig: tlsConfig.Clone(),
	}
	api.Timeouts{}.Configure(httpServer)
	serveErr := make(chan error, 1)
	scheme := "http"
	if tlsConfig != nil {
		scheme = "https"
		go func() { serveErr <- httpServer.ServeTLS(ln, "", "") }()
	} else {
		go func() { serveErr <- httpServer.Serve(ln) }()
	}

	previewLns.serve(srv, tlsConfig, log, stdout)
	url := scheme + "://" + ln.Addr().String()
	fmt.Fprintf(stdout, "ExeClaw %s is listening on %s (sandbox: %s)\n", version.Version, url, driver.Name())
	if cfg.Auth == api.AuthToken && tlsConfig == nil && !isExeDev && !api.IsLoopbackListen(cfg.Listen) {
		const plain = "the token and login cookies cross the network in clear text: give --tls-cert and --tls-key, or put a TLS-terminating proxy in front and listen on loopback"
		fmt.Fprintf(stdout, "WARNING: listening on %s without TLS: %s.\n", cfg.Listen, plain)
		log.Warn("listening beyond loopback without TLS", "listen", cfg.Listen, "why", plain)
	}
	if cfg.Auth == api.AuthToken {
		fmt.Fprintf(stdout, "Access token: %s\n", cfg.Token)
	}
	if !driver.Isolated() {
		fmt.Fprintln(stdout, notIsolatedWarning(driver.Name()))
	}

	select {
	case err = <-serveErr:
	case <-ctx.Done():
		log.Info("shutting down")
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	srv.CloseStreams()
	if serr := httpServer.Shutdown(shutdownCtx); serr != nil {
		log.Warn("http shutdown", "err", serr)
	}
	if metricsServer != nil {
		_ = metricsServer.Shutdown(shutdownCtx)
	}
	previewLns.shutdown(shutdownCtx)
	mgr.Close(shutdownCtx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// loadOrCreateToken returns the token stored at path, making one the first time.
func loadOrCreateToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			if utf8.RuneCountInString(t) < api.MinTokenLen {
				return "", fmt.Errorf("the token in %s is shorter than %d characters, which can be guessed: put a longer one there, or delete the file to have one generated", path, api.MinTokenLen)
			}
			return t, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read token: %w", err)
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	token := hex.EncodeToString(raw[:])
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("store token: %w", err)
	}
	return token, nil
}

// firecrackerDriver builds the firecracker driver once detection has found
// its binary and a KVM that runs guests.
func firecrackerDriver(log *slog.Logger, net vm.NetworkProvider, res vm.Resources) func(string, image.Boot) (sandbox.Driver, error) {
	return func(bin string, img image.Boot) (sandbox.Driver, error) {
		return firecracker.New(firecracker.Config{Binary: bin, Image: img, Logger: log, Network: net, Resources: res})
	}
}

func sandboxChecks(r detect.Report) []api.SandboxCheck {
	out := make([]api.SandboxCheck, len(r.Findings))
	for i, f := range r.Findings {
		out[i] = api.SandboxCheck{Check: f.Check, OK: f.OK, Detail: f.Detail}
	}
	return out
}

// parseSizeInto reads a size such as 512M, 8G, 1T or 0 (a bare number is
// bytes) into dst; false when it is not one.
func parseSizeInto(dst *uint64, s string) bool {
	s = strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "IB"), "B")
	shift := 0
	if s != "" {
		switch s[len(s)-1] {
		case 'K':
			shift = 10
		case 'M':
			shift = 20
		case 'G':
			shift = 30
		case 'T':
			shift = 40
		}
	}
	if shift > 0 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > (1<<63)>>shift {
		return false
	}
	*dst = n << shift
	return true
}

// openKeyStore opens --key-store; nil (no interface value at all) when keys
// stay in memory.
func openKeyStore(spec, dataDir string, getenv func(string) string) (session.KeyStore, error) {
	ks, err := keystore.Open(spec, dataDir, getenv)
	if err != nil || ks == nil {
		return nil, err
	}
	return ks, nil
}
