package hostinfo

import (
	"math"
	"runtime"
	"testing"
)

const meminfoSample = `MemTotal:       16315240 kB
MemFree:         1048576 kB
MemAvailable:    8388608 kB
Buffers:          204800 kB
Cached:          4194304 kB
SwapCached:            0 kB
Active:          6291456 kB
SReclaimable:     524288 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
`

func TestParseMeminfo(t *testing.T) {
	m, err := parseMeminfo([]byte(meminfoSample))
	if err != nil {
		t.Fatal(err)
	}
	want := Memory{
		TotalMiB:     16315240 / 1024, // 15932
		AvailableMiB: 8192,
		FreeMiB:      1024,
		CachedMiB:    (204800 + 4194304 + 524288) / 1024, // 4808
	}
	if m != want {
		t.Errorf("parseMeminfo = %+v, want %+v", m, want)
	}
	if got := m.UsedMiB(); got != want.TotalMiB-8192 {
		t.Errorf("UsedMiB = %d, want %d", got, want.TotalMiB-8192)
	}
	if got, want := m.PercentUsed(), float64(want.TotalMiB-8192)*100/float64(want.TotalMiB); math.Abs(got-want) > 1e-9 {
		t.Errorf("PercentUsed = %v, want %v", got, want)
	}
}

// Kernels before 3.14 have no MemAvailable: free + buffers + page cache stands in.
func TestParseMeminfoWithoutMemAvailable(t *testing.T) {
	m, err := parseMeminfo([]byte(`MemTotal:        4194304 kB
MemFree:          524288 kB
Buffers:          102400 kB
Cached:          1048576 kB
`))
	if err != nil {
		t.Fatal(err)
	}
	if m.TotalMiB != 4096 || m.FreeMiB != 512 || m.AvailableMiB != 512+100+1024 {
		t.Errorf("parseMeminfo = %+v, want total 4096, free 512, available 1636", m)
	}
}

func TestParseMeminfoRejectsGarbage(t *testing.T) {
	for name, in := range map[string]string{
		"empty":       "",
		"no total":    "MemFree: 100 kB\nMemAvailable: 50 kB\n",
		"zero total":  "MemTotal: 0 kB\n",
		"not numbers": "MemTotal: lots kB\n",
	} {
		if m, err := parseMeminfo([]byte(in)); err == nil {
			t.Errorf("%s: parseMeminfo = %+v, want an error", name, m)
		}
	}
}

func TestPercentUsedOfNothing(t *testing.T) {
	if got := (Memory{}).PercentUsed(); got != 0 {
		t.Errorf("PercentUsed of a zero Memory = %v, want 0", got)
	}
}

func TestReadMemoryOnThisHost(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	m, err := ReadMemory()
	if err != nil {
		t.Fatal(err)
	}
	if m.TotalMiB < 64 {
		t.Errorf("TotalMiB = %d; this host surely has more than 64 MiB", m.TotalMiB)
	}
	if m.AvailableMiB <= 0 || m.AvailableMiB > m.TotalMiB {
		t.Errorf("AvailableMiB = %d of %d", m.AvailableMiB, m.TotalMiB)
	}
	if m.FreeMiB < 0 || m.FreeMiB > m.TotalMiB || m.CachedMiB < 0 || m.CachedMiB > m.TotalMiB {
		t.Errorf("implausible %+v", m)
	}
	if p := m.PercentUsed(); p < 0 || p > 100 {
		t.Errorf("PercentUsed = %v", p)
	}
}

func TestReadLoadOnThisHost(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	l, err := ReadLoad()
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]float64{"load1": l.Load1, "load5": l.Load5, "load15": l.Load15} {
		if v < 0 || math.IsNaN(v) || v > 100000 {
			t.Errorf("%s = %v", name, v)
		}
	}
}
