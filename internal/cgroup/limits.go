package cgroup

import (
	"fmt"
	"strconv"
	"strings"
)

// Limits are what one VM cgroup may use. A zero field sets nothing.
type Limits struct {
	// MemoryBytes caps the group's memory (anonymous and page cache; page
	// cache is reclaimed first, so only what cannot be reclaimed makes the
	// kernel's OOM killer end the group's process). Swap is denied where the
	// kernel accounts it (v2 memory.swap.max, v1 memory.memsw), so the limit
	// is a wall, not a push into swap.
	MemoryBytes int64
	// Pids caps the group's tasks: processes and threads.
	Pids int64
	// CPUWeight is the group's share of CPU time under contention, on
	// cgroup v2's scale (1-10000, 100 is a default cgroup's); v1 gets
	// cpu.shares = CPUWeight*1024/100.
	CPUWeight uint64
	// CPUQuota caps CPU time, in CPUs (1.5: one and a half CPUs' worth per
	// period); 0 for no cap.
	CPUQuota float64
	// IOWeight is the group's share of block IO under contention (v2
	// io.weight, 1-10000, default 100; v1 blkio.weight, 10-1000, default
	// 500, gets five times it). Set only where the kernel offers the file
	// (v1 blkio.weight needs the BFQ or CFQ scheduler).
	IOWeight uint64
}

// cpuPeriod is the CFS period quotas are expressed in: 100 ms, the kernel's
// default.
const cpuPeriod = 100000

// setting is one cgroup file and the value written to it.
type setting struct {
	file, value string
	required    bool // the group cannot be made without it
}

// settings are the files Limits writes, in the order they must be written
// (v1's memsw limit may not be below the memory limit, so it comes after).
func (l Limits) settings(version int) []setting {
	var s []setting
	add := func(file, value string, required bool) { s = append(s, setting{file, value, required}) }
	if version == V2 {
		if l.MemoryBytes > 0 {
			add("memory.max", strconv.FormatInt(l.MemoryBytes, 10), true)
			add("memory.swap.max", "0", false)
			// The OOM killer ends every process of the group at once.
			add("memory.oom.group", "1", false)
		}
		if l.Pids > 0 {
			add("pids.max", strconv.FormatInt(l.Pids, 10), false)
		}
		if l.CPUWeight > 0 {
			add("cpu.weight", strconv.FormatUint(clamp(l.CPUWeight, 1, 10000), 10), false)
		}
		if l.CPUQuota > 0 {
			add("cpu.max", fmt.Sprintf("%d %d", quotaMicros(l.CPUQuota), cpuPeriod), false)
		}
		if l.IOWeight > 0 {
			add("io.weight", "default "+strconv.FormatUint(clamp(l.IOWeight, 1, 10000), 10), false)
		}
		return s
	}
	if l.MemoryBytes > 0 {
		add("memory.limit_in_bytes", strconv.FormatInt(l.MemoryBytes, 10), true)
		add("memory.memsw.limit_in_bytes", strconv.FormatInt(l.MemoryBytes, 10), false)
	}
	if l.Pids > 0 {
		add("pids.max", strconv.FormatInt(l.Pids, 10), false)
	}
	if l.CPUWeight > 0 {
		add("cpu.shares", strconv.FormatUint(clamp(l.CPUWeight*1024/100, 2, 262144), 10), false)
	}
	if l.CPUQuota > 0 {
		add("cpu.cfs_period_us", strconv.Itoa(cpuPeriod), false)
		add("cpu.cfs_quota_us", strconv.FormatInt(quotaMicros(l.CPUQuota), 10), false)
	}
	if l.IOWeight > 0 {
		add("blkio.weight", strconv.FormatUint(clamp(l.IOWeight*5, 10, 1000), 10), false)
	}
	return s
}

func quotaMicros(cpus float64) int64 { return max(int64(cpus*cpuPeriod), 1000) }

func clamp(v, lo, hi uint64) uint64 { return min(max(v, lo), hi) }

// controller is the controller a cgroup file belongs to ("memory.max" ->
// "memory").
func controller(file string) string {
	c, _, _ := strings.Cut(file, ".")
	return c
}
