// Command standin is an executable stand-in for nullclaw
// (github.com/nullclaw/nullclaw) for end-to-end tests of ExeClaw's nullclaw
// adapter, where the real binary is not available. It behaves as NOTES.md in
// internal/agent/nullclaw describes nullclaw:
//
//	standin gateway [--host H] [--port P]
//
// reads $NULLCLAW_HOME/config.json (else ~/.nullclaw/config.json): the
// provider entry agents.defaults.model.primary names under models.providers
// (api_key, base_url), gateway (host, port, require_pairing,
// paired_tokens as SHA-256 hashes or plaintext), and a2a.enabled. It serves
// GET /health and POST /a2a with nullclawtest's implementation of nullclaw's
// wire format. Each message/stream turn calls the provider for real with
// stream:true (Anthropic: POST base_url/v1/messages with x-api-key; an
// OpenAI-compatible name: POST base_url/chat/completions with a Bearer key),
// streams the reply text as artifact updates as it arrives, and runs the
// tool calls the model asks for: "Calling tool: NAME" first, then for shell
// `sh -c COMMAND` in $NULLCLAW_WORKSPACE, and the result goes back to the
// model in the next request.
//
// What it did goes, one JSON object a line, to standin.jsonl next to
// config.json, for tests to read.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/execlaw/execlaw/internal/agent/nullclaw/nullclawtest"
)

// LogName is the stand-in's record of what it did, next to config.json.
const LogName = "standin.jsonl"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

const usage = "usage: nullclaw gateway [--host HOST] [--port PORT]\n(ExeClaw's test stand-in serves only the gateway)\n"

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "gateway" {
		fmt.Fprint(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host := fs.String("host", "", "address to listen on")
	port := fs.Int("port", 0, "port to listen on")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments %q\n%s", fs.Args(), usage)
		return 2
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "nullclaw stand-in: config: %v\n", err)
		return 1
	}
	// The command line wins over the environment and config.json.
	if *host != "" {
		cfg.Host = *host
	}
	if *port != 0 {
		cfg.Port = *port
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		fmt.Fprintf(stderr, "nullclaw stand-in: port %d out of range\n", cfg.Port)
		return 2
	}
	if err := cfg.checkBind(); err != nil {
		fmt.Fprintf(stderr, "nullclaw stand-in: %v\n", err)
		return 1
	}
	if err := os.MkdirAll(cfg.Workspace, 0o755); err != nil {
		fmt.Fprintf(stderr, "nullclaw stand-in: workspace: %v\n", err)
		return 1
	}
	log, err := openLog(filepath.Join(cfg.Home, LogName))
	if err != nil {
		fmt.Fprintf(stderr, "nullclaw stand-in: %v\n", err)
		return 1
	}
	defer log.close()

	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
	if err != nil {
		fmt.Fprintf(stderr, "nullclaw stand-in: %v\n", err)
		return 1
	}
	log.add("start", map[string]any{
		"args": args, "config": cfg.Path, "workspace": cfg.Workspace, "provider": cfg.Provider,
		"dialect": cfg.Dialect, "model": cfg.Model, "baseUrl": cfg.BaseURL, "listen": ln.Addr().String(),
	})

	gw := nullclawtest.NewHandler("")
	gw.Authorize = cfg.authorize
	gw.A2ADisabled = !cfg.A2AEnabled
	gw.OnViolation = func(v string) {
		log.add("violation", map[string]any{"text": v})
		fmt.Fprintf(stderr, "nullclaw stand-in: client violation: %s\n", v)
	}
	ag := newAgent(cfg, log)
	gw.Script = ag.turn

	srv := &http.Server{Handler: gw, ReadHeaderTimeout: 30 * time.Second}
	fmt.Fprintf(stdout, "Gateway listening on %s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	gw.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(stderr, "nullclaw stand-in: %v\n", err)
		return 1
	}
	return 0
}

// eventLog appends JSON lines to a file.
type eventLog struct {
	mu sync.Mutex
	f  *os.File
}

func openLog(path string) (*eventLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return &eventLog{f: f}, nil
}

func (l *eventLog) add(kind string, fields map[string]any) {
	rec := map[string]any{"kind": kind, "time": time.Now().UTC().Format(time.RFC3339Nano)}
	for k, v := range fields {
		rec[k] = v
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f.Write(append(b, '\n'))
}

func (l *eventLog) close() { l.f.Close() }
