// Package api is ExeClaw's HTTP interface: the JSON API of docs/api.md,
// its Server-Sent Events stream, authentication, and the embedded web UI.
package api

import (
	"context"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/mail"
	"github.com/execlaw/execlaw/internal/metrics"
	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/store"
)

// Platform is what /api/platform and /api/health report about the host.
type Platform struct {
	IsExeDev      bool   `json:"isExeDev"`
	Sandbox       string `json:"sandbox"`
	Isolated      bool   `json:"isolated"`
	SandboxReason string `json:"sandboxReason"`
	Version       string `json:"version"`
	// SandboxChecks are what was looked at to choose the sandbox (execlaw doctor's findings).
	SandboxChecks []SandboxCheck `json:"sandboxChecks,omitempty"`
}

// SandboxCheck is one thing looked at when choosing the sandbox driver.
type SandboxCheck struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Assets is the web UI: index.html, login.html and what they load.
type Assets interface {
	fs.FS
	ReadFile(name string) ([]byte, error)
}

// Server serves the API and the UI.
type Server struct {
	log      *slog.Logger
	auth     Auth
	sessions *session.Manager
	store    *store.Store
	models   *llm.Lister
	platform Platform
	assets   Assets
	email    EmailOptions
	exedev   ExeDevOptions
	metrics  *metrics.Metrics
	// metricsRoute serves /metrics on the API's own address (with its auth).
	metricsRoute bool

	hosts   *HostPolicy
	limiter *failureLimiter[netip.Addr]
	// lifecycle bounds how often one user pauses and resumes sessions.
	lifecycle *failureLimiter[string]
	tokenFP   string // fingerprint of the token logins are made under
	// misdirectLog and untrustedLog throttle warnings a stranger can cause.
	misdirectLog, untrustedLog logThrottle

	// streams ends every open event stream when the server shuts down;
	// http.Server.Shutdown would otherwise wait for them forever.
	streams     context.Context
	stopStreams context.CancelFunc
	heartbeat   time.Duration

	// Terminals (terminal.go) and live previews (preview.go; nil: off).
	terminals    terminalCount
	terminalOpts TerminalOptions
	preview      *previews
	// files bounds the workspace routes (files.go).
	files *filesState

	handler http.Handler
}

// Options are the server's dependencies.
type Options struct {
	Logger   *slog.Logger
	Auth     Auth
	Sessions *session.Manager
	Store    *store.Store
	Models   *llm.Lister
	Platform Platform
	Assets   Assets
	// Heartbeat is how often an idle event stream gets a comment line (default 15s).
	Heartbeat time.Duration
	// Email is how transcripts are mailed; a nil Sender turns e-mail off.
	Email EmailOptions
	// ExeDev is the exe.dev API for "send to a new exe.dev VM".
	ExeDev ExeDevOptions
	// Metrics, when set, is told of event streams and transcripts sent, and
	// served on /metrics unless MetricsElsewhere.
	Metrics *metrics.Metrics
	// MetricsElsewhere: /metrics is served on its own listener (see
	// Server.MetricsHandler), not here.
	MetricsElsewhere bool
	// AllowedHosts are the Host headers the server answers to, on every
	// route and the metrics listener (others get 421). Nil: loopback names
	// only. With auth none a policy naming anything else is replaced by
	// that.
	AllowedHosts *HostPolicy
	// Terminal bounds the sessions' terminals; Preview configures live
	// previews (off without a secret and a place to serve them).
	Terminal TerminalOptions
	Preview  PreviewOptions
	// Files bounds the workspace routes: uploads, transfers per user.
	Files FilesOptions
}

// EmailOptions configure mailing transcripts.
type EmailOptions struct {
	Sender mail.Sender
	// Allow is who may receive mail besides the signed-in user's own address.
	Allow mail.Policy
	// Timeout bounds sending one message (default 30s).
	Timeout time.Duration
}

// ExeDevOptions configure creating exe.dev VMs.
type ExeDevOptions struct {
	// Enabled offers the feature (on exe.dev, or when an API URL is set).
	Enabled bool
	// APIURL is exe.dev's base URL (default https://exe.dev); requests go
	// to APIURL + "/exec".
	APIURL string
	// Timeout bounds one request (default 60s).
	Timeout time.Duration
	// Transport replaces the default HTTP transport (tests).
	Transport http.RoundTripper
}

// NewServer builds the HTTP handler.
func NewServer(o Options) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		log: o.Logger, auth: o.Auth, sessions: o.Sessions, store: o.Store, models: o.Models,
		platform: o.Platform, assets: o.Assets, streams: ctx, stopStreams: cancel, heartbeat: o.Heartbeat,
		email: o.Email, exedev: o.ExeDev, metrics: o.Metrics, metricsRoute: o.Metrics != nil && !o.MetricsElsewhere,
		hosts: o.AllowedHosts, limiter: newFailureLimiter[netip.Addr](loginBurst, loginRefill, maxLimitedClients),
		lifecycle:    newFailureLimiter[string](lifecycleBurst, lifecycleRefill, maxLimitedClients),
		tokenFP:      tokenFingerprint(o.Auth.Token),
		terminalOpts: o.Terminal.withDefaults(), preview: newPreviews(o.Preview),
		files: newFilesState(o.Files),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.hosts == nil || (s.auth.Mode == AuthNone && !s.hosts.LoopbackOnly()) {
		if s.hosts != nil {
			s.log.Error("auth none answers only to loopback names; allowed hosts ignored", "allowed", s.hosts.String())
		}
		s.hosts = defaultHostPolicy
	}
	s.sweepLogins()
	if s.heartbeat <= 0 {
		s.heartbeat = 15 * time.Second
	}
	if s.email.Timeout <= 0 {
		s.email.Timeout = 30 * time.Second
	}
	if s.exedev.Timeout <= 0 {
		s.exedev.Timeout = 60 * time.Second
	}
	if s.exedev.APIURL == "" {
		s.exedev.APIURL = DefaultExeDevAPI
	}
	if s.email.Sender != nil && s.sessions != nil {
		s.sessions.SetIdleHook(s.mailIdleTranscript)
	}
	if s.models == nil {
		s.models = &llm.Lister{}
	}
	s.handler = s.routes()
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// CloseStreams ends open event streams; call it before http.Server.Shutdown.
func (s *Server) CloseStreams() { s.stopStreams() }

// securityHeaders apply to every answer. The CSP allows no inline script and
// no other origin, so agent output rendered in the page cannot run code.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; font-src 'self'; object-src 'none'; frame-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

// statusRecorder remembers the status for the access log, and passes
// flushing and deadlines through for event streams.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// accessLog logs each request without its query, headers or body: those can
// carry keys.
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", p)
				if rec.status == 0 {
					writeJSON(rec, http.StatusInternalServerError, map[string]string{"error": "internal error"})
				}
			}
			s.log.Debug("http", "method", r.Method, "path", r.URL.Path, "status", rec.status, "ms", time.Since(start).Milliseconds())
		}()
		next.ServeHTTP(rec, r)
	})
}

func splitHostPort(addr string) (string, string, error) { return net.SplitHostPort(addr) }

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// MetricsHandler serves /metrics on a listener of its own: open to anyone
// who can connect when that listener is loopback-only, else behind the same
// authentication as the API. Nil when metrics are off.
func (s *Server) MetricsHandler(loopbackOnly bool) http.Handler {
	if s.metrics == nil {
		return nil
	}
	h := s.metrics.Handler()
	if !loopbackOnly {
		h = s.requireUser(h)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	mux.Handle("/", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		return errorf(http.StatusNotFound, "not found: %s (metrics are at /metrics)", r.URL.Path)
	}))
	return securityHeaders(s.hostCheck(mux))
}

// Timeouts bound how long a client may hold a connection. Zero fields take
// the defaults.
type Timeouts struct {
	// ReadHeader bounds reading a request's headers (default 10s).
	ReadHeader time.Duration
	// Read bounds reading a whole request, body included (default 30s):
	// a client sending its body slowly (to /login or anywhere) is cut off.
	// It does not end event streams: net/http lifts the connection's read
	// deadline once a request's body is read (for its background read), so
	// a long response outlives it (TestSlowBodyCutStreamLives).
	Read time.Duration
	// Idle bounds a kept-alive connection between requests (default 2m).
	Idle time.Duration
	// MaxHeaderBytes bounds a request's headers (default 64 KiB).
	MaxHeaderBytes int
}

// Configure sets hs's timeouts and header limit. The server sets no write
// timeout: event streams set their own per-write deadlines, and a few
// routes wait on others (exe.dev, mail) for up to a minute.
func (t Timeouts) Configure(hs *http.Server) {
	def := func(d, v time.Duration) time.Duration {
		if d > 0 {
			return d
		}
		return v
	}
	hs.ReadHeaderTimeout = def(t.ReadHeader, 10*time.Second)
	hs.ReadTimeout = def(t.Read, 30*time.Second)
	hs.IdleTimeout = def(t.Idle, 2*time.Minute)
	hs.MaxHeaderBytes = t.MaxHeaderBytes
	if hs.MaxHeaderBytes <= 0 {
		hs.MaxHeaderBytes = 64 << 10
	}
}

// IsLoopbackListen reports whether addr (host:port) only listens on a
// loopback address.
func IsLoopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && isLoopback(host)
}
