package main

import (
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
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/execlaw/execlaw/internal/api"
)

// Live previews are served on origins of their own: --preview-listen ports
// (one origin each) and/or --preview-domain names (see internal/api's
// preview.go and docs/security.md).

const (
	previewAuto = "auto"
	previewOff  = "off"
	// previewAutoPorts are the ports --preview-listen auto takes: within
	// exe.dev's 3000-9999, which its proxy forwards as
	// https://VM.exe.xyz:PORT/ to the VM's users.
	previewAutoFirst, previewAutoLast = 8001, 8008
	maxPreviewPorts                   = 64
	previewKeyFile                    = "preview.key"
)

// previewConfig is the preview part of execlaw serve's settings.
type previewConfig struct {
	Listen string // auto, off, HOST:PORT or HOST:FIRST-LAST
	Domain string // PORT-SESSION.Domain names
	Host   string // the host name preview-port URLs use
}

func registerPreviewFlags(fs *flag.FlagSet, c *previewConfig, env func(name, def string) string) {
	fs.StringVar(&c.Listen, "preview-listen", env("EXECLAW_PREVIEW_LISTEN", previewAuto),
		"where live previews are served, one origin per port: HOST:PORT or HOST:FIRST-LAST, off, or auto (the --listen host with ports 8001-8008 when --listen is loopback or on exe.dev, else off) (EXECLAW_PREVIEW_LISTEN)")
	fs.StringVar(&c.Domain, "preview-domain", env("EXECLAW_PREVIEW_DOMAIN", ""),
		"serve live previews at PORT-SESSION.DOMAIN (wildcard DNS and certificate for *.DOMAIN pointing here), on every listener; may end in :PORT (EXECLAW_PREVIEW_DOMAIN)")
	fs.StringVar(&c.Host, "preview-host", env("EXECLAW_PREVIEW_HOST", ""),
		"host name in the URLs of --preview-listen previews; default: the name the UI was reached by, with localhost and 127.0.0.1 swapped (EXECLAW_PREVIEW_HOST)")
}

// previewListen resolves --preview-listen: the host and ports to listen
// on (none: off), and whether failing to is only a warning (auto).
func (c previewConfig) previewListen(listen string, isExeDev bool) (host string, ports []int, optional bool, err error) {
	switch v := strings.TrimSpace(c.Listen); v {
	case previewOff, "":
		return "", nil, false, nil
	case previewAuto:
		h, own, err := net.SplitHostPort(listen)
		if err != nil || (!api.IsLoopbackListen(listen) && !isExeDev) {
			return "", nil, true, nil
		}
		for p := previewAutoFirst; p <= previewAutoLast; p++ {
			if strconv.Itoa(p) != own {
				ports = append(ports, p)
			}
		}
		return h, ports, true, nil
	default:
		h, spec, err := net.SplitHostPort(v)
		if err != nil {
			return "", nil, false, fmt.Errorf("--preview-listen %q: want HOST:PORT, HOST:FIRST-LAST, off or auto", v)
		}
		first, last, isRange := strings.Cut(spec, "-")
		if !isRange {
			last = first
		}
		a, err1 := strconv.Atoi(first)
		b, err2 := strconv.Atoi(last)
		// A single port 0 takes any free one (tests).
		if err1 != nil || err2 != nil || a < 0 || (a == 0 && isRange) || b > 65535 || a > b || b-a >= maxPreviewPorts {
			return "", nil, false, fmt.Errorf("--preview-listen %q: ports must be 1-65535 (or one port 0: any free one), FIRST <= LAST, at most %d of them", v, maxPreviewPorts)
		}
		for p := a; p <= b; p++ {
			ports = append(ports, p)
		}
		return h, ports, false, nil
	}
}

// check validates the preview flags against the rest.
func (c previewConfig) check(listen, authMode string) error {
	if c.Domain != "" {
		if authMode == api.AuthNone {
			return errors.New("--preview-domain needs names other than loopback ones, which --auth none does not answer to: use --preview-listen")
		}
		if err := api.CheckPreviewDomain(c.Domain); err != nil {
			return err
		}
	}
	if c.Host != "" {
		if _, err := api.ParseHostList(c.Host); err != nil || strings.Contains(c.Host, ",") || strings.Contains(c.Host, "*") {
			return fmt.Errorf("--preview-host %q: want one host name or address", c.Host)
		}
	}
	host, _, _, err := c.previewListen(listen, false)
	if err != nil {
		return err
	}
	if authMode == api.AuthNone && host != "" && !api.IsLoopbackListen(net.JoinHostPort(host, "1")) {
		return fmt.Errorf("--preview-listen %s: with --auth none previews may only listen on loopback", c.Listen)
	}
	return nil
}

// loadPreviewKey returns the key that signs preview grants, made the first
// time and kept in the data directory (0600): grants and preview cookies
// outlive a restart, and nobody else can make them.
func loadPreviewKey(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, previewKeyFile)
	b, err := os.ReadFile(path)
	if err == nil {
		key, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(key) < 32 {
			return nil, fmt.Errorf("%s is not a preview key (64 hex digits): delete it to have one made", path)
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read the preview key: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("store the preview key: %w", err)
	}
	return key, nil
}

// previewListeners are the --preview-listen ports, bound before the API
// server is built (it must know which ports previews have).
type previewListeners struct {
	lns     []net.Listener
	ports   []int
	servers []*http.Server
}

// listenPreviews binds the preview ports. With auto, a port that cannot be
// bound is skipped with a warning.
func listenPreviews(c previewConfig, listen string, isExeDev bool, log *slog.Logger) (*previewListeners, error) {
	host, ports, optional, err := c.previewListen(listen, isExeDev)
	if err != nil {
		return nil, err
	}
	pl := &previewListeners{}
	for _, p := range ports {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			if optional {
				log.Warn("preview port not available", "port", p, "err", err)
				continue
			}
			pl.close()
			return nil, fmt.Errorf("--preview-listen: %w", err)
		}
		pl.lns = append(pl.lns, ln)
		pl.ports = append(pl.ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return pl, nil
}

// serve answers on each preview port with srv's preview handler, over TLS
// when the API has it.
func (pl *previewListeners) serve(srv *api.Server, tlsConfig *tls.Config, log *slog.Logger, stdout io.Writer) {
	if len(pl.lns) == 0 {
		return
	}
	for i, ln := range pl.lns {
		h := srv.PreviewHandler(pl.ports[i])
		if h == nil {
			ln.Close()
			continue
		}
		hs := &http.Server{
			Handler:           h,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			// No read or write timeout: apps stream, upload and hold
			// WebSockets (hot reload) for as long as they like.
		}
		if tlsConfig != nil {
			hs.TLSConfig = tlsConfig.Clone()
			ln = tls.NewListener(ln, hs.TLSConfig)
		}
		pl.servers = append(pl.servers, hs)
		go func() { _ = hs.Serve(ln) }()
	}
	fmt.Fprintf(stdout, "Live previews on ports %s of %s (each its own origin)\n", portList(pl.ports), pl.lns[0].Addr().(*net.TCPAddr).IP)
	log.Info("live previews", "ports", portList(pl.ports))
}

func portList(ports []int) string {
	if len(ports) == 0 {
		return ""
	}
	if ports[len(ports)-1]-ports[0] == len(ports)-1 && len(ports) > 1 {
		return fmt.Sprintf("%d-%d", ports[0], ports[len(ports)-1])
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

func (pl *previewListeners) shutdown(ctx context.Context) {
	for _, hs := range pl.servers {
		_ = hs.Shutdown(ctx)
	}
	pl.close()
}

func (pl *previewListeners) close() {
	for _, ln := range pl.lns {
		ln.Close()
	}
}

// previewOptions is what the API server needs to know of previews.
func previewOptions(c previewConfig, pl *previewListeners, key []byte) api.PreviewOptions {
	return api.PreviewOptions{Secret: key, Ports: pl.ports, Host: c.Host, Domain: c.Domain}
}
