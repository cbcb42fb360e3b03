package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/execlaw/execlaw/internal/api"
	"github.com/execlaw/execlaw/internal/image"
	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/mail"
	"github.com/execlaw/execlaw/internal/metrics"
	"github.com/execlaw/execlaw/internal/network"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/detect"
	"github.com/execlaw/execlaw/internal/sandbox/firecracker"
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
	LogLevel      string

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
	fs.StringVar(&c.Sandbox, "sandbox", env("EXECLAW_SANDBOX", "auto"), "sandbox driver: auto, process, qemu or firecracker (EXECLAW_SANDBOX)")
	fs.StringVar(&c.Auth, "auth", env("EXECLAW_AUTH", "token"), "authentication: token, none (loopback only) or exedev (EXECLAW_AUTH)")
	fs.StringVar(&c.Token, "token", env("EXECLAW_TOKEN", ""), "access token for --auth token; generated and stored in the data directory if empty (EXECLAW_TOKEN)")
	fs.StringVar(&c.Image, "image", env("EXECLAW_IMAGE", "dev"), "guest image VMs boot, as built by `execlaw image build` (EXECLAW_IMAGE)")
	fs.StringVar(&c.GuestBin, "guest-bin", env("EXECLAW_GUEST_BIN", ""), "path of execlaw-guest for the process driver; default: next to execlaw, then $PATH (EXECLAW_GUEST_BIN)")
	fs.StringVar(&c.LogLevel, "log-level", env("EXECLAW_LOG_LEVEL", "info"), "debug, info, warn or error (EXECLAW_LOG_LEVEL)")
	fs.StringVar(&c.SMTPAddr, "smtp-addr", env("EXECLAW_SMTP_ADDR", ""), "SMTP server host:port for mailing transcripts; empty: no SMTP (EXECLAW_SMTP_ADDR)")
	fs.StringVar(&c.SMTPTLS, "smtp-tls", env("EXECLAW_SMTP_TLS", mail.TLSStartTLS), "SMTP encryption: none, starttls or tls (EXECLAW_SMTP_TLS)")
	fs.StringVar(&c.SMTPUser, "smtp-user", env("EXECLAW_SMTP_USER", ""), "SMTP user; empty: no authentication (EXECLAW_SMTP_USER)")
	fs.StringVar(&c.SMTPPassword, "smtp-password", env("EXECLAW_SMTP_PASSWORD", ""), "SMTP password; prefer the environment variable, a flag shows in ps (EXECLAW_SMTP_PASSWORD)")
	fs.StringVar(&c.SMTPFrom, "smtp-from", env("EXECLAW_SMTP_FROM", ""), "sender address of mailed transcripts (EXECLAW_SMTP_FROM)")
	fs.StringVar(&c.EmailAllow, "email-allow", env("EXECLAW_EMAIL_ALLOW", ""), "comma-separated addresses and @domains transcripts may be mailed to, besides the user's own (EXECLAW_EMAIL_ALLOW)")
	c.ExeDev = env("EXECLAW_EXEDEV", "auto")
	fs.Var((*exeDevFlag)(&c.ExeDev), "exedev", "running on exe.dev: auto (host name ends in .exe.xyz), true or false (EXECLAW_EXEDEV)")
	fs.StringVar(&c.ExeDevGateway, "exedev-gateway", env("EXECLAW_EXEDEV_GATEWAY", ""), "base address of exe.dev's e-mail gateway (default "+mail.DefaultGateway+" on exe.dev) (EXECLAW_EXEDEV_GATEWAY)")
	fs.StringVar(&c.ExeDevAPI, "exedev-api", env("EXECLAW_EXEDEV_API", ""), "exe.dev API base URL for new VMs (default "+api.DefaultExeDevAPI+"; setting it offers the feature off exe.dev too) (EXECLAW_EXEDEV_API)")
	fs.StringVar(&c.MetricsListen, "metrics-listen", env("EXECLAW_METRICS_LISTEN", ""), "serve /metrics on this address instead of the main one; no authentication when it is loopback (EXECLAW_METRICS_LISTEN)")
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
		{&c.MaxSteps, "max-steps", "EXECLAW_MAX_STEPS", "model calls per turn before the agent stops", 50},
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
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
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
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return c, fmt.Errorf("--metrics-listen must be host:port: %v", err)
		}
		if err := api.CheckListen(c.Auth, c.MetricsListen); err != nil {
			return c, fmt.Errorf("--metrics-listen: %w", err)
		}
	}
	return c, api.CheckListen(c.Auth, c.Listen)
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
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	if cfg.Auth == api.AuthToken && cfg.Token == "" {
		if cfg.Token, err = loadOrCreateToken(filepath.Join(dataDir, "token")); err != nil {
			return err
		}
	}

	hostNet := vm.NewHostNetwork(network.Config{Logger: log})
	defer func() {
		if err := hostNet.Close(); err != nil {
			log.Error("remove VM networking", "err", err)
		}
	}()
	driver, report, err := detect.Choose(ctx, detect.Options{
		Requested: cfg.Sandbox, DataDir: dataDir, ImageName: cfg.Image, GuestBin: cfg.GuestBin,
		Getenv: getenv, Logger: log, Network: hostNet, Firecracker: firecrackerDriver(log, hostNet),
	})
	if err != nil {
		return err
	}
	reason := report.Reason
	log.Info("sandbox driver chosen", "driver", driver.Name(), "isolated", driver.Isolated(), "why", reason)
	if driver.Isolated() {
		// Set up VM networking now, and clear what a crashed run left.
		if err := hostNet.Init(ctx); err != nil {
			log.Warn("VM networking unavailable: sessions need network none", "err", err)
		}
	}

	st, err := store.Open(ctx, filepath.Join(dataDir, "execlaw.db"))
	if err != nil {
		return err
	}
	defer st.Close()

	isExeDev, why := detectExeDev(cfg.ExeDev, os.Hostname)
	log.Info("platform", "exedev", isExeDev, "why", why)
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

	agents, err := offeredAgents(driver.Isolated(), report)
	if err != nil {
		return err
	}
	log.Info("agents offered", "agents", agents.Names())

	met := metrics.New()
	mgr := session.NewManager(session.Config{
		Agents:  agents,
		DataDir: dataDir, MaxSessions: cfg.MaxSessions, MemoryLimitPercent: cfg.MemoryPercent,
		MaxSteps: cfg.MaxSteps, LLMRetries: cfg.LLMRetries, Observer: met,
	}, st, driver, log)
	if err := mgr.Recover(ctx); err != nil {
		return fmt.Errorf("recover sessions: %w", err)
	}
	met.SetStateSource(mgr.StateCounts)
	mgr.Start()

	srv := api.NewServer(api.Options{
		Logger: log, Auth: api.Auth{Mode: cfg.Auth, Token: cfg.Token}, Sessions: mgr, Store: st,
		Models: &llm.Lister{},
		Platform: api.Platform{
			IsExeDev: isExeDev,
			Sandbox:  driver.Name(), Isolated: driver.Isolated(), SandboxReason: reason, Version: version.String(),
			SandboxChecks: sandboxChecks(report),
		},
		Assets:  web.Assets,
		Email:   api.EmailOptions{Sender: sender, Allow: allow},
		ExeDev:  api.ExeDevOptions{Enabled: isExeDev || cfg.ExeDevAPI != "", APIURL: cfg.ExeDevAPI},
		Metrics: met, MetricsElsewhere: cfg.MetricsListen != "",
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
			Handler: srv.MetricsHandler(open), ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		go func() { _ = metricsServer.Serve(mln) }()
		log.Info("metrics", "url", "http://"+mln.Addr().String()+"/metrics", "authentication", !open)
	}
	httpServer := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpServer.Serve(ln) }()

	url := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "ExeClaw %s is listening on %s (sandbox: %s)\n", version.Version, url, driver.Name())
	if cfg.Auth == api.AuthToken {
		fmt.Fprintf(stdout, "Access token: %s\n", cfg.Token)
	}
	if !driver.Isolated() {
		fmt.Fprintln(stdout, "WARNING: the process sandbox is NOT an isolation boundary: agents run as this user on this host.")
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
func firecrackerDriver(log *slog.Logger, net vm.NetworkProvider) func(string, image.Boot) (sandbox.Driver, error) {
	return func(bin string, img image.Boot) (sandbox.Driver, error) {
		return firecracker.New(firecracker.Config{Binary: bin, Image: img, Logger: log, Network: net})
	}
}

func sandboxChecks(r detect.Report) []api.SandboxCheck {
	out := make([]api.SandboxCheck, len(r.Findings))
	for i, f := range r.Findings {
		out[i] = api.SandboxCheck{Check: f.Check, OK: f.OK, Detail: f.Detail}
	}
	return out
}
