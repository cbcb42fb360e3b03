package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/execlaw/execlaw/internal/event"
)

// value finds a metric by name and label values ("k=v" pairs).
func value(t *testing.T, m *Metrics, name string, labels ...string) (float64, bool) {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, metric := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range metric.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for _, kv := range labels {
				k, v, _ := strings.Cut(kv, "=")
				if have[k] != v {
					continue next
				}
			}
			return read(metric), true
		}
	}
	return 0, false
}

func read(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func raw(t *testing.T, v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestToolLabelsAreBounded(t *testing.T) {
	m := New()
	for i := range 50 {
		m.Event(event.ToolResult, raw(t, event.ToolResultData{Name: fmt.Sprintf("tool_%d", i)}))
	}
	m.Event(event.ToolResult, raw(t, event.ToolResultData{Name: "bad name with spaces", IsError: true}))
	families, _ := m.Registry().Gather()
	series := 0
	for _, f := range families {
		if f.GetName() == "execlaw_tool_calls_total" {
			series = len(f.GetMetric())
		}
	}
	if series != MaxToolLabels+2 { // 32 names, "other" without and with error
		t.Errorf("%d tool series", series)
	}
	if v, _ := value(t, m, "execlaw_tool_calls_total", "tool=other", "error=false"); v != 50-MaxToolLabels {
		t.Errorf("other = %v", v)
	}
	if v, _ := value(t, m, "execlaw_tool_calls_total", "tool=other", "error=true"); v != 1 {
		t.Errorf("other with error = %v", v)
	}
}

func TestObserver(t *testing.T) {
	m := New()
	m.SandboxStarted("qemu", false, 1500*time.Millisecond, nil)
	m.SandboxStarted("qemu", true, 80*time.Millisecond, nil)
	m.SandboxStarted("qemu", false, time.Second, errors.New("no kvm"))
	m.PoolChanged(1, 1, 0, 1, 2) // totals so far: the counters add what is new
	m.PoolChanged(1, 0, 1, 3, 2)
	m.SandboxExited("qemu")
	m.Event(event.Usage, raw(t, event.UsageData{InputTokens: 10, OutputTokens: 3, CostUSD: 0.25}))
	m.Event(event.Usage, raw(t, event.UsageData{InputTokens: 5, OutputTokens: 1, CostUSD: 0.25}))
	m.Event(event.Error, raw(t, event.ErrorData{Message: "x", Kind: event.ErrorKindProviderRetry}))
	m.Event(event.Error, raw(t, event.ErrorData{Message: "turn cancelled"}))
	m.Event(event.AgentIdle, raw(t, event.Empty{}))
	m.Event("garbage", json.RawMessage(`not json`))
	m.Event(event.Usage, json.RawMessage(`not json`))
	m.StreamOpened()
	m.StreamOpened()
	m.StreamClosed()
	m.TranscriptSent("email", nil)
	m.TranscriptSent("exedev", errors.New("x"))
	m.SetStateSource(func(context.Context) (map[string]int, error) {
		return map[string]int{"active": 2, "stopped": 7}, nil
	})
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"execlaw_sandbox_boots_total", []string{"sandbox=qemu", "result=ok"}, 2},
		{"execlaw_sandbox_boots_total", []string{"sandbox=qemu", "result=error"}, 1},
		{"execlaw_sandbox_boot_seconds", []string{"sandbox=qemu", "pooled=false"}, 1},
		{"execlaw_sandbox_boot_seconds", []string{"sandbox=qemu", "pooled=true"}, 1},
		{"execlaw_pool_vms", []string{"state=size"}, 1},
		{"execlaw_pool_vms", []string{"state=booting"}, 1},
		{"execlaw_pool_sessions_total", []string{"result=hit"}, 3},
		{"execlaw_pool_sessions_total", []string{"result=miss"}, 2},
		{"execlaw_errors_total", []string{"kind=sandbox_boot"}, 1},
		{"execlaw_errors_total", []string{"kind=sandbox_exit"}, 1},
		{"execlaw_errors_total", []string{"kind=provider_retry"}, 1},
		{"execlaw_errors_total", []string{"kind=provider"}, 0},
		{"execlaw_tokens_total", []string{"direction=input"}, 15},
		{"execlaw_tokens_total", []string{"direction=output"}, 4},
		{"execlaw_cost_usd_total", nil, 0.5},
		{"execlaw_turns_total", nil, 1},
		{"execlaw_sse_clients", nil, 1},
		{"execlaw_transcripts_sent_total", []string{"via=email", "result=ok"}, 1},
		{"execlaw_transcripts_sent_total", []string{"via=exedev", "result=error"}, 1},
		{"execlaw_sessions", []string{"state=active"}, 2},
		{"execlaw_sessions", []string{"state=stopped"}, 7},
	} {
		if got, ok := value(t, m, c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}

	// A failing state source does not break the other metrics.
	m.SetStateSource(func(context.Context) (map[string]int, error) { return nil, errors.New("db down") })
	if _, err := m.Registry().Gather(); err == nil {
		t.Error("a failing source is not reported")
	}

	// A nil *Metrics is a no-op.
	var none *Metrics
	none.Event(event.AgentIdle, nil)
	none.SandboxStarted("x", false, 0, nil)
	none.PoolChanged(1, 1, 1, 1, 1)
	none.SandboxExited("x")
	none.StreamOpened()
	none.StreamClosed()
	none.TranscriptSent("x", nil)
	none.SetStateSource(nil)
}
