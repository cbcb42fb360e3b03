// Package metrics counts what the server does, for Prometheus: sessions by
// state, sandbox boots and their time, turns, tokens and cost, tool calls,
// open event streams, and errors. It observes sessions through
// session.Observer (it sees every stored event), so the session manager and
// the agent know nothing about Prometheus.
package metrics

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/execlaw/execlaw/internal/event"
)

// MaxToolLabels bounds the distinct tool names counted by name; a model can
// call tools that do not exist, and each name would otherwise be a new series.
const MaxToolLabels = 32

// StateSource counts sessions by state at scrape time.
type StateSource func(ctx context.Context) (map[string]int, error)

// Metrics holds the collectors. A nil *Metrics is valid and counts nothing.
type Metrics struct {
	reg *prometheus.Registry

	boots       *prometheus.CounterVec
	bootSeconds *prometheus.HistogramVec
	turns       prometheus.Counter
	tokens      *prometheus.CounterVec
	cost        prometheus.Counter
	toolCalls   *prometheus.CounterVec
	sseClients  prometheus.Gauge
	errors      *prometheus.CounterVec
	transcripts *prometheus.CounterVec
	pool        *prometheus.GaugeVec
	poolClaims  *prometheus.CounterVec

	mu        sync.Mutex
	toolNames map[string]bool
	poolSeen  [2]int64 // hits and misses counted so far
	states    StateSource
}

var toolNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// New makes the collectors and registers them, with Go runtime and process
// metrics, in a registry of their own.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		boots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "execlaw_sandbox_boots_total",
			Help: "Sandbox boots that finished, by driver and result (ok, error).",
		}, []string{"sandbox", "result"}),
		bootSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "execlaw_sandbox_boot_seconds",
			Help:    "Time from starting a sandbox to its guest answering, for boots that succeeded.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300},
		}, []string{"sandbox", "pooled"}),
		pool: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "execlaw_pool_vms",
			Help: "The warm pool's VMs: its target size, those ready, those booting.",
		}, []string{"state"}),
		poolClaims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "execlaw_pool_sessions_total",
			Help: "New sessions since the server started that took a pooled VM (hit) or booted their own while the pool was on (miss).",
		}, []string{"result"}),
		turns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "execlaw_turns_total",
			Help: "Agent turns that ended, for any reason.",
		}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "execlaw_tokens_total",
			Help: "Model tokens used, by direction (input, output).",
		}, []string{"direction"}),
		cost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "execlaw_cost_usd_total",
			Help: "Estimated model cost in US dollars, from the catalogue's prices.",
		}),
		toolCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "execlaw_tool_calls_total",
			Help: "Tool calls that returned, by tool and whether the result was an error.",
		}, []string{"tool", "error"}),
		sseClients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "execlaw_sse_clients",
			Help: "Open session event streams.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "execlaw_errors_total",
			Help: "Errors by kind: provider (a model call failed, ending the turn), provider_retry (a model call failed and was retried), sandbox_boot (a sandbox failed to start), sandbox_exit (a running sandbox died).",
		}, []string{"kind"}),
		transcripts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "execlaw_transcripts_sent_total",
			Help: "Transcripts handed on, by channel (email, email_idle, exedev) and result (ok, error).",
		}, []string{"via", "result"}),
		toolNames: map[string]bool{},
	}
	for _, kind := range []string{event.ErrorKindProvider, event.ErrorKindProviderRetry, "sandbox_boot", "sandbox_exit"} {
		m.errors.WithLabelValues(kind)
	}
	for _, dir := range []string{"input", "output"} {
		m.tokens.WithLabelValues(dir)
	}
	m.reg.MustRegister(m.boots, m.bootSeconds, m.turns, m.tokens, m.cost, m.toolCalls, m.sseClients,
		m.errors, m.transcripts, m.pool, m.poolClaims, stateCollector{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in Prometheus' text format (or OpenMetrics when
// the scraper asks for it).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Registry is where the collectors are, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetStateSource sets what execlaw_sessions counts from.
func (m *Metrics) SetStateSource(src StateSource) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states = src
}

// Event counts what a stored session event means. It implements
// session.Observer.
func (m *Metrics) Event(typ string, data json.RawMessage) {
	if m == nil {
		return
	}
	switch typ {
	case event.AgentIdle:
		m.turns.Inc()
	case event.Usage:
		var u event.UsageData
		if json.Unmarshal(data, &u) == nil {
			m.tokens.WithLabelValues("input").Add(float64(max(u.InputTokens, 0)))
			m.tokens.WithLabelValues("output").Add(float64(max(u.OutputTokens, 0)))
			m.cost.Add(max(u.CostUSD, 0))
		}
	case event.ToolResult:
		var r event.ToolResultData
		if json.Unmarshal(data, &r) == nil {
			isErr := "false"
			if r.IsError {
				isErr = "true"
			}
			m.toolCalls.WithLabelValues(m.toolLabel(r.Name), isErr).Inc()
		}
	case event.Error:
		var e event.ErrorData
		if json.Unmarshal(data, &e) == nil && (e.Kind == event.ErrorKindProvider || e.Kind == event.ErrorKindProviderRetry) {
			m.errors.WithLabelValues(e.Kind).Inc()
		}
	}
}

// toolLabel is the tool's name while there are few, else "other".
func (m *Metrics) toolLabel(name string) string {
	if !toolNameRE.MatchString(name) {
		return "other"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.toolNames[name] {
		return name
	}
	if len(m.toolNames) >= MaxToolLabels {
		return "other"
	}
	m.toolNames[name] = true
	return name
}

// SandboxStarted counts a boot and, when it worked, its time. It implements
// session.Observer.
func (m *Metrics) SandboxStarted(driver string, pooled bool, took time.Duration, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.boots.WithLabelValues(driver, "error").Inc()
		m.errors.WithLabelValues("sandbox_boot").Inc()
		return
	}
	m.boots.WithLabelValues(driver, "ok").Inc()
	m.bootSeconds.WithLabelValues(driver, strconv.FormatBool(pooled)).Observe(took.Seconds())
}

// PoolChanged shows the warm pool. It implements session.Observer.
func (m *Metrics) PoolChanged(size, ready, booting int, hits, misses int64) {
	if m == nil {
		return
	}
	m.pool.WithLabelValues("size").Set(float64(size))
	m.pool.WithLabelValues("ready").Set(float64(ready))
	m.pool.WithLabelValues("booting").Set(float64(booting))
	// The pool reports totals; the counters take what is new since.
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, v := range [2]int64{hits, misses} {
		if d := v - m.poolSeen[i]; d > 0 {
			m.poolClaims.WithLabelValues([2]string{"hit", "miss"}[i]).Add(float64(d))
			m.poolSeen[i] = v
		}
	}
}

// SandboxExited counts a sandbox that died under a running session. It
// implements session.Observer.
func (m *Metrics) SandboxExited(string) {
	if m == nil {
		return
	}
	m.errors.WithLabelValues("sandbox_exit").Inc()
}

// StreamOpened and StreamClosed track open event streams.
func (m *Metrics) StreamOpened() {
	if m != nil {
		m.sseClients.Inc()
	}
}

// StreamClosed: see StreamOpened.
func (m *Metrics) StreamClosed() {
	if m != nil {
		m.sseClients.Dec()
	}
}

// TranscriptSent counts a transcript mailed or handed to exe.dev.
func (m *Metrics) TranscriptSent(via string, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.transcripts.WithLabelValues(via, result).Inc()
}

// stateCollector reads session counts when scraped, so the gauge is never
// out of step with the sessions.
type stateCollector struct{ m *Metrics }

var sessionsDesc = prometheus.NewDesc("execlaw_sessions", "Sessions by state: running ones as they are now, ended ones (stopped, error) since the database was created.", []string{"state"}, nil)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- sessionsDesc }

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	src := c.m.states
	c.m.mu.Unlock()
	if src == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := src(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(sessionsDesc, err)
		return
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(n), state)
	}
}
