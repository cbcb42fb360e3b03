package kubernetes

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/testutil"
	"github.com/execlaw/execlaw/internal/testutil/kwok"
)

const (
	kwokNodes    = 100
	kwokSessions = 500
	// kwok on the test bed sees new and deleted pods in batches, when it
	// lists again (see testutil/kwok): as many at once as it takes.
	kwokConcurrency     = 100
	kwokStopConcurrency = 100
	kwokInstance        = "kwokscale"
)

// kwokScaleMetrics are the figures of this process's scale run: the run
// is 500 sessions whatever b.N, done once, and a later call (the b.N > 1
// round of -benchtime Nx) reports the same figures again.
var kwokScaleMetrics []kwokMetric

type kwokMetric struct {
	value float64
	unit  string
}

// kwokSession is one session of the scale run: what the driver made of it,
// and when.
type kwokSession struct {
	p       podParams
	made    made
	node    string
	running time.Duration // from the start of its creation to Running
	err     error
}

// BenchmarkKwokScale is the driver and the control plane at scale: kwok
// simulates 100 nodes on the test cluster's API server, and 500 sessions'
// objects (Secret, NetworkPolicy, Pod) are made through the driver's own
// start path, 100 at a time, each pod placed by the scheduler on a fake node
// and reported Running by kwok; then all are deleted through the driver's
// teardown. kwok pods run nothing, so the guest is not dialled: this is
// Start up to its guest (startPod), not the guest's start. Reported: p50
// and p95 of create-to-Running, the wall time and pods/s of the 500, the
// teardown's, this process's heap and peak RSS growth, the API server's
// RSS growth, and how many nodes the scheduler used.
func BenchmarkKwokScale(b *testing.B) {
	if kwokScaleMetrics == nil {
		kwokScaleMetrics = kwokScale(b)
	}
	for _, m := range kwokScaleMetrics {
		b.ReportMetric(m.value, m.unit)
	}
	b.ReportMetric(0, "ns/op")
}

func kwokScale(b *testing.B) []kwokMetric {
	c := newCluster(b)
	kubeconfig := testutil.K8sCluster(b)
	begin := time.Now()
	fake := kwok.Start(b, kubeconfig, kwokNodes)
	b.Logf("%d kwok nodes (run %s) Ready in %v", kwokNodes, fake.Run, time.Since(begin).Round(time.Millisecond))
	// Runs before the nodes go: a run that failed half-way leaves no pod
	// bound to a node that is gone. Force: kwok may be stopping.
	b.Cleanup(func() {
		zero := int64(0)
		_ = c.cs.CoreV1().Pods(c.ns).DeleteCollection(context.Background(), metav1.DeleteOptions{GracePeriodSeconds: &zero},
			metav1.ListOptions{LabelSelector: instanceSelector(kwokInstance)})
	})

	tm, err := ParseTemplate([]byte(clusterTemplate))
	if err != nil {
		b.Fatal(err)
	}
	tm.Spec.NodeSelector = fake.NodeSelector
	tm.Spec.Tolerations = append(tm.Spec.Tolerations, fake.Toleration)
	d, err := New(Config{
		Client: c.cs, Namespace: c.ns, Instance: kwokInstance, Template: tm,
		Image:  "execlaw-guest:kwok", // never pulled: kwok runs nothing
		Server: ServerPeers{CIDRs: []netip.Prefix{testutil.K8sServerFrom(b)}},
		// The API server is shared with the scheduler and kwok on 2 cores.
		StartTimeout: 5 * time.Minute, StopTimeout: 3 * time.Minute,
	})
	if err != nil {
		b.Fatal(err)
	}

	apiserver := apiserverPID(kubeconfig)
	apiRSS0 := procStatusKiB(apiserver, "VmRSS")
	runtime.GC()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	rss0, hwm0 := procStatusKiB("self", "VmRSS"), procStatusKiB("self", "VmHWM")

	sessions := make([]kwokSession, kwokSessions)
	b.ResetTimer()
	start := time.Now()
	each(kwokSessions, kwokConcurrency, func(i int) {
		s := &sessions[i]
		spec := testSpec(fmt.Sprintf("s_kwok%04d", i))
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.StartTimeout)
		defer cancel()
		if s.p, s.err = d.params(ctx, spec); s.err != nil {
			return
		}
		if !d.claim(spec.SessionID) {
			s.err = errors.New("claimed twice")
			return
		}
		cred, err := guest.NewPodCredentials(spec.SessionID)
		if err != nil {
			s.err = err
			return
		}
		pod, err := d.startPod(ctx, spec, s.p, cred, &s.made, func(string) {}, d.log)
		if err != nil {
			s.err = fmt.Errorf("session %d: %w", i, err)
			return
		}
		s.running, s.node = time.Since(t0), pod.Spec.NodeName
	})
	wall := time.Since(start)
	b.StopTimer()

	runtime.GC()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	rss1, apiRSS1 := procStatusKiB("self", "VmRSS"), procStatusKiB(apiserver, "VmRSS")

	// Everything made goes, whether its start worked or not.
	start = time.Now()
	stops := make([]time.Duration, kwokSessions)
	var stopErrs []error
	var mu sync.Mutex
	each(kwokSessions, kwokStopConcurrency, func(i int) {
		s := &sessions[i]
		if s.p.Names.Pod == "" {
			return
		}
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.StopTimeout)
		defer cancel()
		err := d.teardown(ctx, s.p.Names, s.made)
		d.release(s.p.Session)
		stops[i] = time.Since(t0)
		if err != nil {
			mu.Lock()
			stopErrs = append(stopErrs, fmt.Errorf("teardown %s: %w", s.p.Names.Pod, err))
			mu.Unlock()
		}
	})
	delWall := time.Since(start)
	hwm1 := procStatusKiB("self", "VmHWM")

	var errs []error
	var ready []time.Duration
	perNode := map[string]int{}
	for _, s := range sessions {
		if s.err != nil {
			errs = append(errs, s.err)
			continue
		}
		ready = append(ready, s.running)
		perNode[s.node]++
	}
	if len(errs) > 0 {
		b.Errorf("%d of %d starts failed; the first: %v", len(errs), kwokSessions, errs[0])
	}
	if err := errors.Join(stopErrs...); err != nil {
		b.Errorf("%d teardowns failed: %v", len(stopErrs), err)
	}
	if left := c.left(kwokInstance); left != "" {
		b.Errorf("left after the teardown: %s", left)
	}
	if len(ready) == 0 {
		b.FailNow()
	}
	for node := range perNode {
		if !slices.Contains(fake.Names, node) {
			b.Errorf("a pod ran on %s, not on a fake node", node)
		}
	}

	p50, p95 := percentiles(ready)
	stopP50, _ := percentiles(stops)
	counts := make([]int, 0, len(perNode))
	for _, n := range perNode {
		counts = append(counts, n)
	}
	slices.Sort(counts)
	heapGrowth := (float64(ms1.HeapInuse) - float64(ms0.HeapInuse)) / (1 << 20)
	b.Logf("%d pods Running on %d of %d nodes (%d to %d a node) in %v: %.1f pods/s; create-to-Running p50 %v, p95 %v (%d at once)",
		len(ready), len(perNode), kwokNodes, counts[0], counts[len(counts)-1], wall.Round(time.Millisecond),
		float64(len(ready))/wall.Seconds(), p50.Round(time.Millisecond), p95.Round(time.Millisecond), kwokConcurrency)
	b.Logf("teardown of all: %v (p50 %v each)", delWall.Round(time.Millisecond), stopP50.Round(time.Millisecond))
	b.Logf("this process: heap in use %.1f -> %.1f MiB (+%.1f) with all %d running; RSS %.1f -> %.1f MiB, peak (VmHWM) %.1f -> %.1f MiB",
		float64(ms0.HeapInuse)/(1<<20), float64(ms1.HeapInuse)/(1<<20), heapGrowth, len(ready),
		kib(rss0), kib(rss1), kib(hwm0), kib(hwm1))
	if apiRSS0 > 0 {
		b.Logf("kube-apiserver RSS: %.1f -> %.1f MiB", kib(apiRSS0), kib(apiRSS1))
	}
	return []kwokMetric{
		{float64(p50.Milliseconds()), "create-p50-ms"},
		{float64(p95.Milliseconds()), "create-p95-ms"},
		{wall.Seconds(), "wall-s"},
		{float64(len(ready)) / wall.Seconds(), "pods/s"},
		{delWall.Seconds(), "delete-wall-s"},
		{float64(len(perNode)), "nodes-used"},
		{heapGrowth, "heap-growth-MiB"},
		{kib(hwm1 - hwm0), "hwm-growth-MiB"},
		{kib(apiRSS1 - apiRSS0), "apiserver-rss-growth-MiB"},
	}
}

// each calls fn(0..n-1), at most conc at once.
func each(n, conc int, fn func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for i := range next {
				fn(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// apiserverPID is the test bed's kube-apiserver's pid, as a /proc name;
// "" when its pid file is not where scripts/k8s-testbed.sh writes it.
func apiserverPID(kubeconfig string) string {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(kubeconfig), "pids", "kube-apiserver.pid"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// procStatusKiB is a "Name: N kB" field of /proc/<pid>/status; 0 when
// there is none.
func procStatusKiB(pid, field string) int64 {
	if pid == "" {
		return 0
	}
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if ok && name == field {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

func kib(n int64) float64 { return float64(n) / 1024 }
