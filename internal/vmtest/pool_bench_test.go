package vmtest

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/network"
	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/testutil"
)

// BenchmarkWarmPool runs, in one run on one machine, sessions of the
// default size through the whole server (POST /api/sessions to the status
// event that says active, then the first tool call) with no pool and with
// a pool of one, and reports the p50 and p95 of each in milliseconds. With
// the pool each session is created once the pool has a VM ready: the
// steady state of a server whose sessions come less often than a boot
// takes. At least 10 sessions each, whatever -benchtime says.
func BenchmarkWarmPool(b *testing.B) {
	n := max(b.N, 10)
	results := map[string][]time.Duration{}
	for _, mode := range []struct {
		name string
		pool int
	}{{"cold", 0}, {"pooled", 1}} {
		tb, pfx := newTestbed(b)
		cfg := network.Config{NetNSPrefix: pfx + "s-", DNS: []netip.Addr{netip.MustParseAddr("192.0.2.53")}}
		e := newServerWith(b, tb, pfx, cfg, testutil.VMImage(b), 3, nil, func(o *apitest.Options) { o.WarmPool = mode.pool })
		for i := range n {
			if mode.pool > 0 {
				e.waitPool(b, "a ready VM", func(p session.PoolStats) bool { return p.Ready == mode.pool })
			}
			ready, tool := e.timeSession(b)
			results[mode.name+"-ready"] = append(results[mode.name+"-ready"], ready)
			results[mode.name+"-tool"] = append(results[mode.name+"-tool"], tool)
			b.Logf("%s %2d: ready %5d ms, first tool call %4d ms", mode.name, i, ready.Milliseconds(), tool.Milliseconds())
		}
		if mode.pool > 0 {
			if p := e.pool(b); p.Hits != int64(n) {
				b.Errorf("%d sessions took a pooled VM, want %d: %+v", p.Hits, n, p)
			}
		}
		e.h.Stop()
	}
	for _, what := range []string{"cold-ready", "pooled-ready", "cold-tool", "pooled-tool"} {
		d := results[what]
		slices.Sort(d)
		p50, p95 := percentile(d, 50), percentile(d, 95)
		b.ReportMetric(float64(p50.Milliseconds()), what+"-p50-ms")
		b.ReportMetric(float64(p95.Milliseconds()), what+"-p95-ms")
		b.Logf("%-13s p50 %5d ms  p95 %5d ms  (%d sessions)", what, p50.Milliseconds(), p95.Milliseconds(), len(d))
	}
	b.ReportMetric(0, "ns/op")
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (p*len(sorted) + 99) / 100
	return sorted[max(i-1, 0)]
}

// timeSession creates a session of the default size and measures how long
// it takes to be active, and then how long its first tool call takes
// (input sent to the tool's result streamed), and deletes it.
func (e *env) timeSession(b *testing.B) (ready, tool time.Duration) {
	b.Helper()
	start := time.Now()
	v := e.h.AnthropicSession(e.fake, nil)
	st := e.h.Stream(v.ID, "")
	defer st.Close()
	st.WaitFor(b, 3*time.Minute, "active", func(ev testutil.SSEEvent) bool {
		return ev.Type == event.Status && ev.Field("state") == session.StateActive
	})
	ready = time.Since(start)
	e.fake.Enqueue(llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command": "echo hi"}`}}}, llmtest.Turn{Text: "done"})
	start = time.Now()
	e.h.Input(v.ID, "say hi")
	res := st.WaitType(b, apitest.Wait, event.ToolResult, 1)
	tool = time.Since(start)
	if out := res.Field("output"); out != "hi\n" && out != "hi" {
		b.Fatalf("first tool call: %s", res.Data)
	}
	st.WaitType(b, apitest.Wait, event.AgentIdle, 1)
	e.h.Must(200, "DELETE", "/api/sessions/"+v.ID, nil)
	return ready, tool
}
