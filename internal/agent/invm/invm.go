// Package invm holds what the adapters for agent CLIs running inside the
// sandbox share: the credential proxy they reach through a tunnel (so the VM
// only ever holds a per-session token), the usage that proxy sees, and the
// bounded tail of a process's output for error messages.
package invm

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/credproxy"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/llm"
)

// Proxy is a running credential proxy, reachable in the guest at
// 127.0.0.1:Port with Token as the key.
type Proxy struct {
	Token string
	Port  int
	proxy *credproxy.Proxy
	stop  context.CancelFunc
	usage *Usage
}

// StartProxy opens port on the guest's loopback and serves it, through the
// control channel, with a credential proxy to the session's provider. Usage
// the proxy sees goes to the sink set with SetSink.
func StartProxy(ctx context.Context, g *guest.Client, port int, cfg llm.Config, log *slog.Logger) (*Proxy, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{Token: credproxy.NewToken(), Port: port, usage: &Usage{provider: cfg.Provider, model: cfg.Model, log: log}}
	proxy, err := credproxy.New(credproxy.Config{
		Provider: cfg.Provider, BaseURL: cfg.BaseURL, APIKey: cfg.APIKey, Token: p.Token,
		Client: cfg.HTTPClient, OnUsage: p.usage.report, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	const name = "llm"
	if err := g.TunnelListen(ctx, name, port); err != nil {
		return nil, fmt.Errorf("open the model proxy port in the sandbox: %w", err)
	}
	nctx, stop := context.WithCancel(context.Background())
	go func() {
		if err := guest.ServeTunnel(nctx, g, name, port, proxy.ServeConn); err != nil {
			log.Warn("credential proxy tunnel ended", "err", err)
		}
	}()
	p.proxy, p.stop = proxy, stop
	return p, nil
}

// settleWait bounds how long a turn's end waits for the proxy: a model call
// the agent left running (a background request of its own) must not hold
// the turn open.
const settleWait = 2 * time.Second

// Settle waits, briefly, until the proxy relays nothing, so the usage of
// the turn's model calls is reported before the turn is: the agent reads
// an answer's last byte before the proxy has counted it.
func (p *Proxy) Settle(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, settleWait)
	defer cancel()
	_ = p.proxy.Settle(ctx)
}

// SetSink makes the current turn's sink the one usage is reported to.
func (p *Proxy) SetSink(s agent.Sink) { p.usage.set(s) }

// Stop ends the tunnel.
func (p *Proxy) Stop() { p.stop() }

// Usage reports what the proxy counted: the one place an in-VM agent's usage
// is counted, so the CLI's own totals are never added on top.
type Usage struct {
	provider, model string
	log             *slog.Logger

	mu   sync.Mutex
	sink agent.Sink
}

func (u *Usage) set(s agent.Sink) {
	u.mu.Lock()
	u.sink = s
	u.mu.Unlock()
}

func (u *Usage) report(c credproxy.Usage) {
	u.mu.Lock()
	sink := u.sink
	u.mu.Unlock()
	if sink == nil {
		return
	}
	model := u.model
	if c.Model != "" {
		model = c.Model
	}
	price := llm.PriceOf(u.provider, model)
	call := event.UsageTotals{
		InputTokens:  c.InputTokens + c.CacheReadTokens + c.CacheWriteTokens,
		OutputTokens: c.OutputTokens,
		CostUSD:      price.Cost(c.InputTokens, c.OutputTokens, c.CacheWriteTokens, c.CacheReadTokens),
	}
	ctx := context.Background()
	total, err := sink.AddUsage(ctx, call)
	if err != nil {
		u.log.Error("record usage", "err", err)
		return
	}
	_ = sink.Emit(ctx, event.Usage, event.UsageData{InputTokens: call.InputTokens, OutputTokens: call.OutputTokens, CostUSD: call.CostUSD, Total: total})
}

// Tail keeps the last bytes written to it, for error messages.
type Tail struct {
	Max int

	mu sync.Mutex
	b  []byte
}

func (t *Tail) Write(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.Max; over > 0 {
		t.b = t.b[over:]
	}
}

// String is the tail on one line.
func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(strings.Fields(strings.ToValidUTF8(string(t.b), "?")), " ")
}
