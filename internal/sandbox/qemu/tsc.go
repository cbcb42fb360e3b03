package qemu

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// Under TCG the guest's RDTSC reads the host's time-stamp counter, so the
// guest kernel must be told the host's TSC rate: calibrating it against
// the emulated timers takes very long under TCG (and on microvm, without a
// PIT, hangs), and a guessed rate makes the guest's clock run fast or slow
// by the ratio (a guess of 2 GHz on a 2.6 GHz host ran 30% fast, seconds
// off within a minute of a pooled VM's claim).

// fallbackTSCkHz is what the guest is told where the host's rate cannot be
// measured (no TSC instruction on this architecture).
const fallbackTSCkHz = 2_000_000

var hostTSC = sync.OnceValue(measureTSCkHz)

// tcgTiming is the guest kernel's timing arguments under TCG: the TSC rate
// and a loop calibration, so it skips measuring either.
func tcgTiming() string {
	return fmt.Sprintf("tsc_early_khz=%d lpj=8000000", hostTSC())
}

// measureTSCkHz counts the host's TSC ticks against the monotonic clock
// over a few short windows and takes the median, so one window stretched
// by preemption does not skew it.
func measureTSCkHz() int64 {
	if !haveTSC {
		return fallbackTSCkHz
	}
	const windows, window = 5, 20 * time.Millisecond
	rates := make([]int64, 0, windows)
	for range windows {
		t0, c0 := time.Now(), rdtsc()
		time.Sleep(window)
		c1, t1 := rdtsc(), time.Now()
		if ns := t1.Sub(t0).Nanoseconds(); ns > 0 && c1 > c0 {
			rates = append(rates, int64((c1-c0)*1_000_000/uint64(ns)))
		}
	}
	if len(rates) == 0 {
		return fallbackTSCkHz
	}
	slices.Sort(rates)
	return rates[len(rates)/2]
}
