package vmtest

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/image"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/process"
	"github.com/execlaw/execlaw/internal/sandbox/qemu"
	"github.com/execlaw/execlaw/internal/testutil"
)

// BenchmarkCreateToReady boots sandboxes and reports how long each part of
// create-to-ready took, in milliseconds: preparing the disk, starting the
// VMM, the guest kernel (kernel start to /init, as the guest measured it),
// the guest init (to the control API listening), and the whole thing. It
// also reports the memory an idle sandbox holds: the VMM's (or guest
// process's) resident memory, and the server's own heap per session.
func BenchmarkCreateToReady(b *testing.B) {
	img := testutil.VMImage(b)
	tcg, err := qemu.New(qemu.Config{Image: img, Accel: qemu.AccelTCG})
	if err != nil {
		b.Fatal(err)
	}
	proc, err := process.New(process.Config{GuestBinary: testutil.GuestBinary(b)})
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range []sandbox.Driver{tcg, proc} {
		b.Run(d.Name(), func(b *testing.B) { benchDriver(b, d) })
	}
}

type timed interface {
	Timings() map[string]time.Duration
}

func benchDriver(b *testing.B, d sandbox.Driver) {
	sums := map[string]time.Duration{}
	var rss, heap int64
	for i := range b.N {
		dir := b.TempDir()
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		sb, err := d.Start(context.Background(), sandbox.Spec{SessionID: fmt.Sprintf("s_bench%04d", i), Dir: dir,
			VCPUs: 1, MemoryMiB: 512, Network: "none"})
		if err != nil {
			b.Fatal(err)
		}
		sums["ready"] += time.Since(start)
		if t, ok := sb.(timed); ok {
			for k, v := range t.Timings() {
				if k != "ready" {
					sums[k] += v
				}
			}
		}
		// Idle memory: the sandbox's processes, and what the server holds for it.
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap += int64(after.HeapInuse) - int64(before.HeapInuse)
		rss += rssOf(dir)
		sb.Stop(context.Background())
	}
	for k, v := range sums {
		b.ReportMetric(float64(v.Milliseconds())/float64(b.N), k+"-ms")
	}
	b.ReportMetric(float64(rss)/float64(b.N)/(1<<20), "sandbox-rss-MiB")
	b.ReportMetric(float64(heap)/float64(b.N)/(1<<20), "server-heap-MiB")
	b.ReportMetric(0, "ns/op")
}

// rssOf adds up the resident memory of the processes whose command line
// mentions dir (the VMM, or the process driver's guest).
func rssOf(dir string) int64 {
	var total int64
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !strings.Contains(string(cmd), dir) {
			continue
		}
		status, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}

// BenchmarkIdleSessionMemory measures what an idle session costs the host
// through the whole stack (API, session manager, agent, VM): the VMM's
// resident memory and the server's own heap, per session.
func BenchmarkIdleSessionMemory(b *testing.B) {
	const sessions = 4
	e := newBenchEnv(b)
	var rss, heap float64
	for range b.N {
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		var ids []string
		for range sessions {
			v := e.h.AnthropicSession(e.fake, map[string]any{"network": "none", "memoryMiB": 512, "vcpus": 1})
			e.h.WaitState(v.ID, "active")
			ids = append(ids, v.ID)
		}
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap += float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / sessions
		rss += float64(rssOf(e.h.DataDir)) / sessions
		for _, id := range ids {
			e.h.Must(200, "DELETE", "/api/sessions/"+id, nil)
		}
	}
	b.ReportMetric(rss/float64(b.N)/(1<<20), "vmm-rss-MiB/session")
	b.ReportMetric(heap/float64(b.N)/(1<<10), "server-heap-KiB/session")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkPauseResume measures, in one run on one machine, a cold boot, a
// pause (saving the VM), a resume from the snapshot, and a cold resume (a
// boot on the kept disk), for an idle 512 MiB guest, with the snapshot's
// size on disk.
func BenchmarkPauseResume(b *testing.B) {
	img := testutil.VMImage(b)
	d, err := qemu.New(qemu.Config{Image: img, Accel: qemu.AccelTCG})
	if err != nil {
		b.Fatal(err)
	}
	var boot, pause, restore, cold time.Duration
	var bytes int64
	for i := range b.N {
		dir := b.TempDir()
		spec := sandbox.Spec{SessionID: fmt.Sprintf("s_pausebench%04d", i), Dir: dir, VCPUs: 1, MemoryMiB: 512, Network: "none"}
		start := time.Now()
		sb, err := d.Start(context.Background(), spec)
		if err != nil {
			b.Fatal(err)
		}
		boot += time.Since(start)

		start = time.Now()
		snap, err := sb.(sandbox.Pauser).Pause(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		pause += time.Since(start)
		bytes += snap.Bytes

		start = time.Now()
		sb, err = d.Restore(context.Background(), spec, snap)
		if err != nil {
			b.Fatal(err)
		}
		restore += time.Since(start)
		if err := sb.Stop(context.Background()); err != nil {
			b.Fatal(err)
		}

		spec.Resume = true
		start = time.Now()
		sb, err = d.Start(context.Background(), spec)
		if err != nil {
			b.Fatal(err)
		}
		cold += time.Since(start)
		sb.Stop(context.Background())
	}
	n := float64(b.N)
	b.ReportMetric(float64(boot.Milliseconds())/n, "boot-ms")
	b.ReportMetric(float64(pause.Milliseconds())/n, "pause-ms")
	b.ReportMetric(float64(restore.Milliseconds())/n, "resume-snapshot-ms")
	b.ReportMetric(float64(cold.Milliseconds())/n, "resume-cold-ms")
	b.ReportMetric(float64(bytes)/n/(1<<20), "snapshot-MiB")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkKernels compares, in one run on one machine, create-to-ready of
// qemu-tcg sandboxes booting the same root filesystem and execlaw-guest
// with Debian's kernel (its modules loaded from the initramfs) and with the
// kernel execlaw builds (everything built in). The boots alternate, so a
// machine busy with something else slows both alike. Each reports its
// create-to-ready and parts in milliseconds: the guest kernel (kernel start
// to /init, as the guest measured it), the guest init (to the control API
// listening), and the VMM start; and the image's vmlinux and initramfs
// sizes.
func BenchmarkKernels(b *testing.B) {
	kernels := []string{image.KernelDebian, image.KernelBuilt}
	drivers := map[string]*qemu.Driver{}
	for _, k := range kernels {
		img := testutil.VMImageWithKernel(b, k)
		d, err := qemu.New(qemu.Config{Image: img, Accel: qemu.AccelTCG})
		if err != nil {
			b.Fatal(err)
		}
		drivers[k] = d
		for what, p := range map[string]string{"vmlinux": img.KernelELF, "initramfs": img.Initramfs} {
			if fi, err := os.Stat(p); err == nil {
				b.ReportMetric(float64(fi.Size())/(1<<20), k+"-"+what+"-MiB")
			}
		}
		b.Logf("%s kernel: %s", k, img.KernelVersion)
	}
	sums := map[string]time.Duration{}
	b.ResetTimer()
	for i := range b.N {
		for _, k := range kernels {
			start := time.Now()
			sb, err := drivers[k].Start(context.Background(), sandbox.Spec{SessionID: fmt.Sprintf("s_kbench%s%04d", k, i),
				Dir: b.TempDir(), VCPUs: 1, MemoryMiB: 512, Network: "none"})
			if err != nil {
				b.Fatalf("%s kernel: %v", k, err)
			}
			sums[k+"-ready"] += time.Since(start)
			if t, ok := sb.(timed); ok {
				for part, v := range t.Timings() {
					if part == "kernel" || part == "init" || part == "vmm" {
						sums[k+"-"+part] += v
					}
				}
			}
			sb.Stop(context.Background())
		}
	}
	for name, v := range sums {
		b.ReportMetric(float64(v.Milliseconds())/float64(b.N), name+"-ms")
	}
	for _, k := range kernels {
		ms := func(part string) int64 { return sums[k+"-"+part].Milliseconds() / int64(b.N) }
		b.Logf("%-6s ready %5d ms  kernel %5d ms  init %5d ms  vmm %4d ms", k, ms("ready"), ms("kernel"), ms("init"), ms("vmm"))
	}
	b.ReportMetric(0, "ns/op")
}
