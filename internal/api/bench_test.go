package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/apitest"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/session"
)

// BenchmarkEventFanout measures the whole event path: append to SQLite, fan
// out to 100 live SSE clients over real HTTP, parse on the client. It reports
// events per second and the delay from append to delivery (p50, p99) over
// every delivery. Clients cut for falling behind reconnect with Last-Event-ID,
// as browsers do, and their catch-up shows in the delay.
//
// "max" appends as fast as the store allows, which measures throughput and
// the queueing delay under saturation; "paced" appends 200 events a second,
// a fast model's token rate, which measures the delay a user sees.
func BenchmarkEventFanout(b *testing.B) {
	b.Run("max", func(b *testing.B) { benchFanout(b, 0) })
	b.Run("paced", func(b *testing.B) { benchFanout(b, 5*time.Millisecond) })
}

func benchFanout(b *testing.B, interval time.Duration) {
	const clients = 100
	fake := llmtest.NewAnthropic()
	defer fake.Close()
	h := apitest.New(b, apitest.Options{})
	s := h.AnthropicSession(fake, nil)
	h.WaitState(s.ID, "active")
	sess, running, err := h.Mgr.Get(context.Background(), session.User{ID: "owner"}, s.ID)
	if err != nil || !running {
		b.Fatalf("session not running: %v", err)
	}
	start := sess.Subscribe()
	from := start.From
	start.Close()

	var wg sync.WaitGroup
	delays := make([][]time.Duration, clients)
	last := from + int64(b.N)
	ready := make(chan struct{}, clients)
	for c := range clients {
		wg.Go(func() { delays[c] = benchClient(b, h, s.ID, from, last, ready) })
	}
	for range clients {
		<-ready
	}
	b.ResetTimer()
	began := time.Now()
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for range b.N {
		if tick != nil {
			<-tick
		}
		ts := strconv.FormatInt(time.Now().UnixNano(), 10)
		if err := sess.Emit(context.Background(), event.MessageDelta, event.DeltaData{MessageID: "bench", Text: ts}); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	elapsed := time.Since(began)
	b.StopTimer()

	var all []time.Duration
	for _, d := range delays {
		all = append(all, d...)
	}
	slices.Sort(all)
	if len(all) != clients*b.N {
		b.Fatalf("%d deliveries, want %d", len(all), clients*b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(clients*b.N)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
}

// benchClient reads the stream from after `from` up to `last`, reconnecting
// when cut, and returns each event's delay.
func benchClient(b *testing.B, h *apitest.Harness, id string, from, last int64, ready chan<- struct{}) []time.Duration {
	var out []time.Duration
	seen := from
	signalled := false
	for seen < last {
		req, _ := http.NewRequest("GET", h.URL("/api/sessions/"+id+"/stream"), nil)
		req.Header = h.AuthHeader()
		req.Header.Set("Last-Event-ID", strconv.FormatInt(seen, 10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Error(err)
			return out
		}
		if !signalled {
			signalled = true
			ready <- struct{}{}
		}
		r := bufio.NewReaderSize(resp.Body, 64<<10)
		var seq int64
		for seen < last {
			line, err := r.ReadString('\n')
			if err != nil {
				break
			}
			switch {
			case strings.HasPrefix(line, "id: "):
				seq, _ = strconv.ParseInt(strings.TrimSpace(line[4:]), 10, 64)
			case strings.HasPrefix(line, "data: "):
				var d event.DeltaData
				if json.Unmarshal([]byte(line[6:]), &d) == nil && d.MessageID == "bench" && seq > seen {
					ns, _ := strconv.ParseInt(d.Text, 10, 64)
					out = append(out, time.Since(time.Unix(0, ns)))
					seen = seq
				}
			}
		}
		resp.Body.Close()
	}
	return out
}
