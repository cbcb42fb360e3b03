// Package hostinfo reads the host's memory and load from /proc.
package hostinfo

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Memory is the host's memory in MiB.
type Memory struct {
	TotalMiB     int64
	AvailableMiB int64
	FreeMiB      int64
	CachedMiB    int64 // page cache and reclaimable slab: used, but given back on demand
}

// UsedMiB is memory the host cannot hand out now.
func (m Memory) UsedMiB() int64 { return m.TotalMiB - m.AvailableMiB }

// PercentUsed is UsedMiB as a share of the total.
func (m Memory) PercentUsed() float64 {
	if m.TotalMiB == 0 {
		return 0
	}
	return float64(m.UsedMiB()) * 100 / float64(m.TotalMiB)
}

// ReadMemory reads /proc/meminfo.
func ReadMemory() (Memory, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return Memory{}, err
	}
	return parseMeminfo(b)
}

func parseMeminfo(b []byte) (Memory, error) {
	kib := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		kib[name] = v
	}
	total, ok := kib["MemTotal"]
	if !ok || total == 0 {
		return Memory{}, fmt.Errorf("/proc/meminfo has no MemTotal")
	}
	avail, ok := kib["MemAvailable"]
	if !ok { // kernels before 3.14
		avail = kib["MemFree"] + kib["Buffers"] + kib["Cached"]
	}
	return Memory{
		TotalMiB:     total / 1024,
		AvailableMiB: avail / 1024,
		FreeMiB:      kib["MemFree"] / 1024,
		CachedMiB:    (kib["Buffers"] + kib["Cached"] + kib["SReclaimable"]) / 1024,
	}, nil
}

// Load is the host's load average.
type Load struct {
	Load1, Load5, Load15 float64
}

// ReadLoad reads /proc/loadavg.
func ReadLoad() (Load, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return Load{}, err
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return Load{}, fmt.Errorf("/proc/loadavg: unexpected %q", b)
	}
	var l Load
	for i, p := range []*float64{&l.Load1, &l.Load5, &l.Load15} {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return Load{}, fmt.Errorf("/proc/loadavg: %w", err)
		}
		*p = v
	}
	return l, nil
}
