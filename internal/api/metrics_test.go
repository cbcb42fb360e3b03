package api_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/testutil"
)

// scrape reads a metrics page into "name{labels}" -> value (labels as the
// exposition format writes them, sorted by name).
func scrape(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad metrics line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

func (m metricsPage) get(t *testing.T, key string) float64 {
	t.Helper()
	v, ok := m[key]
	if !ok {
		t.Errorf("no %s in the metrics", key)
	}
	return v
}

type metricsPage map[string]float64

func getMetrics(t *testing.T, h *apitest.Harness) metricsPage {
	t.Helper()
	r := h.Must(200, "GET", "/metrics", nil)
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q", ct)
	}
	return scrape(t, string(r.Body))
}

func TestMetrics(t *testing.T) {
	fake := llmtest.NewAnthropic(
		llmtest.Turn{Text: "Running it.", ToolCalls: []llmtest.ToolCall{
			{Name: "bash", Input: `{"command":"echo ok"}`},
			{Name: "bash", Input: `{"command":"exit 3"}`},
			{Name: "read_file", Input: `{"path":"/nonexistent/file"}`},
		}, InputTokens: 100, OutputTokens: 10},
		llmtest.Turn{Text: "Done.", InputTokens: 50, OutputTokens: 5},
		llmtest.Turn{Error: &llmtest.ErrorReply{Status: 400, Message: "bad request"}},
	).Attach(t)
	h := apitest.New(t, apitest.Options{})

	// Authentication like the API.
	if r := h.Do("GET", "/metrics", nil, http.Header{}); r.Status != 401 {
		t.Errorf("without a token: %d", r.Status)
	}

	s := h.AnthropicSession(fake, nil)
	h.WaitState(s.ID, "active")
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "run things")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	h.WaitState(s.ID, "active")

	m := getMetrics(t, h)
	checks := map[string]float64{
		`execlaw_sessions{state="active"}`:                                     1,
		`execlaw_sessions{state="busy"}`:                                       0,
		`execlaw_sessions{state="stopped"}`:                                    0,
		`execlaw_sandbox_boots_total{result="ok",sandbox="process"}`:           1,
		`execlaw_sandbox_boot_seconds_count{pooled="false",sandbox="process"}`: 1,
		`execlaw_turns_total`:                                                  1,
		`execlaw_tokens_total{direction="input"}`:                              150,
		`execlaw_tokens_total{direction="output"}`:                             15,
		`execlaw_tool_calls_total{error="false",tool="bash"}`:                  1,
		`execlaw_tool_calls_total{error="true",tool="bash"}`:                   1,
		`execlaw_tool_calls_total{error="true",tool="read_file"}`:              1,
		`execlaw_sse_clients`:                                                  1,
		`execlaw_errors_total{kind="provider"}`:                                0,
		`execlaw_errors_total{kind="sandbox_boot"}`:                            0,
	}
	for k, want := range checks {
		if got := m.get(t, k); got != want {
			t.Errorf("%s = %v, want %v", k, got, want)
		}
	}
	if cost := m.get(t, "execlaw_cost_usd_total"); cost <= 0 {
		t.Errorf("cost %v", cost)
	}
	if _, ok := m["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}

	// A provider error, the stream closing, and the session ending.
	h.Input(s.ID, "fail now")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 2)
	st.Close()
	h.Must(200, "DELETE", "/api/sessions/"+s.ID, nil)
	h.WaitState(s.ID, "stopped")
	testutil.Poll(t, "the stream gauge back at 0", apitest.Wait, func() bool { return getMetrics(t, h)["execlaw_sse_clients"] == 0 })
	m = getMetrics(t, h)
	for k, want := range map[string]float64{
		`execlaw_errors_total{kind="provider"}`: 1,
		`execlaw_turns_total`:                   2,
		`execlaw_sessions{state="active"}`:      0,
		`execlaw_sessions{state="stopped"}`:     1,
	} {
		if got := m.get(t, k); got != want {
			t.Errorf("%s = %v, want %v", k, got, want)
		}
	}
}

// --metrics-listen: its own handler, open on loopback, else authenticated;
// the API's address no longer serves it.
func TestMetricsElsewhere(t *testing.T) {
	h := apitest.New(t, apitest.Options{MetricsElsewhere: true})
	if r := h.Do("GET", "/metrics", nil, nil); r.Status != 404 {
		t.Errorf("/metrics on the API address: %d", r.Status)
	}
	get := func(ts *httptest.Server, path string, hdr http.Header) (int, string) {
		req, _ := http.NewRequest("GET", ts.URL+path, nil)
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	open := httptest.NewServer(h.Srv.MetricsHandler(true))
	defer open.Close()
	if code, body := get(open, "/metrics", nil); code != 200 || !strings.Contains(body, "execlaw_sessions{") {
		t.Errorf("loopback: %d %.200s", code, body)
	}
	if code, _ := get(open, "/api/sessions", nil); code != 404 {
		t.Errorf("the metrics listener serves the API: %d", code)
	}
	guarded := httptest.NewServer(h.Srv.MetricsHandler(false))
	defer guarded.Close()
	if code, _ := get(guarded, "/metrics", nil); code != 401 {
		t.Errorf("not loopback, no token: %d", code)
	}
	if code, _ := get(guarded, "/metrics", h.AuthHeader()); code != 200 {
		t.Errorf("not loopback, with token: %d", code)
	}
}
