package kubernetes

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkPodStart is create-to-ready through the pod path on the test
// cluster's real node: Secret, NetworkPolicy and Pod made, the pod
// scheduled and started by the kubelet (containerd, runc), the guest
// answering over its TLS channel; then the stop, until the pod is gone.
// At least 5 sandboxes, one after another; p50 and p95 of each.
func BenchmarkPodStart(b *testing.B) {
	c := newCluster(b)
	n := max(b.N, 5)
	sessions := &fakeSessions{owner: map[string]string{}, over: map[string]bool{}}
	for i := range n {
		sessions.owner[fmt.Sprintf("s_bench%04d", i)] = "bench"
	}
	d := c.driver("bench", clusterTemplate, sessions)
	var ready, stop []time.Duration
	b.ResetTimer()
	for i := range n {
		spec := testSpec(fmt.Sprintf("s_bench%04d", i))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		start := time.Now()
		sb, err := d.Start(ctx, spec)
		cancel()
		if err != nil {
			b.Fatalf("start %d: %v", i, err)
		}
		ready = append(ready, time.Since(start))
		start = time.Now()
		if err := sb.Stop(context.Background()); err != nil {
			b.Fatalf("stop %d: %v", i, err)
		}
		stop = append(stop, time.Since(start))
	}
	b.StopTimer()
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{{"ready", ready}, {"stop", stop}} {
		p50, p95 := percentiles(m.d)
		b.ReportMetric(float64(p50.Milliseconds()), m.name+"-p50-ms")
		b.ReportMetric(float64(p95.Milliseconds()), m.name+"-p95-ms")
		b.Logf("%-5s p50 %5d ms  p95 %5d ms  (%d pods)", m.name, p50.Milliseconds(), p95.Milliseconds(), len(m.d))
	}
	if left := c.left("bench"); left != "" {
		b.Errorf("left behind: %s", left)
	}
	b.ReportMetric(0, "ns/op")
}

// percentiles sorts d and returns its median and 95th percentile.
func percentiles(d []time.Duration) (p50, p95 time.Duration) {
	slices.Sort(d)
	return d[len(d)/2], d[(len(d)*95+99)/100-1]
}
