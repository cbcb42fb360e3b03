package qemu

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// The guest's clock keeps the host's pace under TCG: it is told the host's
// TSC rate, which its RDTSC reads. Two readings of the guest's clock a few
// seconds apart must span the host's time between them, within 5%.
func TestGuestClockRate(t *testing.T) {
	if !haveTSC {
		t.Skip("no TSC on this architecture: the guest is given a fixed rate")
	}
	d, _ := newDriver(t)
	sb, _ := start(t, d, t.Context())
	read := func() (guest float64, before, after time.Time) {
		before = time.Now()
		_, out := run(t, sb, "date +%s.%N")
		after = time.Now()
		g, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
		if err != nil {
			t.Fatalf("guest date: %q", out)
		}
		return g, before, after
	}
	g1, b1, a1 := read()
	// An interval to measure over, not a wait for readiness.
	time.Sleep(5 * time.Second)
	g2, b2, a2 := read()
	guest := g2 - g1
	least, most := b2.Sub(a1).Seconds(), a2.Sub(b1).Seconds()
	if guest < least*0.95 || guest > most*1.05 {
		t.Errorf("the guest's clock moved %.3fs while the host's moved between %.3fs and %.3fs (told tsc_early_khz=%d)",
			guest, least, most, hostTSC())
	}
}
