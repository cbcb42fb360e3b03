package main

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/cgroup"
	"github.com/execlaw/execlaw/internal/network"
)

// The resource flags: environment variables, flags over them, defaults,
// and what is refused.
func TestServeFlagsResources(t *testing.T) {
	env := map[string]string{
		"EXECLAW_MAX_SESSIONS": "8", "EXECLAW_MAX_SESSIONS_PER_USER": "3", "EXECLAW_MEMORY_OVERCOMMIT": "1.5",
		"EXECLAW_VM_CPU_QUOTA": "0.5", "EXECLAW_VM_CGROUPS": "on",
	}
	getenv := func(k string) string { return env[k] }
	c, err := parseServeFlags(nil, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxSessionsPerUser != 3 || c.MemoryOvercommit != 1.5 || c.VMCPUQuota != 0.5 || c.VMCgroups != "on" || perUserSessions(c) != 3 {
		t.Fatalf("from env: %+v", c)
	}
	c, err = parseServeFlags([]string{"--max-sessions-per-user", "2", "--memory-overcommit", "2", "--vm-cpu-quota", "1", "--vm-cgroups", "off"}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxSessionsPerUser != 2 || c.MemoryOvercommit != 2 || c.VMCPUQuota != 1 || c.VMCgroups != "off" {
		t.Fatalf("flags over env: %+v", c)
	}

	// Defaults: no overcommit, no CPU cap, cgroups when possible; one user
	// may take every slot where there is one user, half of them where
	// exe.dev users share the server.
	none := func(string) string { return "" }
	c, err = parseServeFlags(nil, none, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.MemoryOvercommit != 1 || c.VMCPUQuota != 0 || c.VMCgroups != "auto" || c.MaxSessionsPerUser != 0 || perUserSessions(c) != 10 {
		t.Fatalf("defaults: %+v, per user %d", c, perUserSessions(c))
	}
	for _, tc := range []struct {
		auth     string
		max, per int
	}{{"exedev", 10, 5}, {"exedev", 1, 1}, {"exedev", 3, 1}, {"token", 3, 3}, {"none", 7, 7}} {
		if got := perUserSessions(serveConfig{Auth: tc.auth, MaxSessions: tc.max}); got != tc.per {
			t.Errorf("--auth %s --max-sessions %d: %d per user, want %d", tc.auth, tc.max, got, tc.per)
		}
	}

	for args, want := range map[string]string{
		"--max-sessions-per-user=-1":                 "--max-sessions-per-user",
		"--max-sessions=4 --max-sessions-per-user=5": "between 1 and --max-sessions (4)",
		"--memory-overcommit=0":                      "--memory-overcommit",
		"--memory-overcommit=11":                     "--memory-overcommit",
		"--vm-cpu-quota=1.5":                         "--vm-cpu-quota",
		"--vm-cpu-quota=-0.1":                        "--vm-cpu-quota",
		"--vm-cgroups=maybe":                         "auto, on or off",
	} {
		if _, err := parseServeFlags(strings.Fields(args), none, io.Discard); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error about %s", args, err, want)
		}
	}
	if _, err := parseServeFlags(nil, func(k string) string {
		return map[string]string{"EXECLAW_MEMORY_OVERCOMMIT": "lots"}[k]
	}, io.Discard); err == nil || !strings.Contains(err.Error(), "EXECLAW_MEMORY_OVERCOMMIT") {
		t.Errorf("a word for a ratio: %v", err)
	}
}

// At start the server sweeps the VM cgroups an earlier run of this
// instance (its data directory) left, killing what is in them, and leaves
// other instances' alone; at the end it removes its directory.
func TestVMResourcesSweep(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("per-VM cgroups need root here")
	}
	dataDir := t.TempDir()
	earlier, err := cgroup.New(network.InstanceID(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	left, err := earlier.Create("vm-s_left", cgroup.Limits{MemoryBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	orphan := exec.Command("sleep", "600")
	done, err := left.Prepare(orphan)
	if err != nil {
		t.Fatal(err)
	}
	err = orphan.Start()
	done()
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { orphan.Wait(); close(waited) }()
	t.Cleanup(func() { orphan.Process.Kill(); <-waited })

	other, err := cgroup.New(network.InstanceID(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	kept, err := other.Create("vm-s_kept", cgroup.Limits{MemoryBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kept.Remove(); other.Close() })

	log := slog.New(slog.DiscardHandler)
	res, closeCgroups, err := vmResources(serveConfig{VMCgroups: cgroupsAuto, VMCPUQuota: 0.5}, dataDir, log)
	if err != nil || res.Cgroups == nil || res.CPUQuota != 0.5 {
		t.Fatalf("resources %+v, %v", res, err)
	}
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("the process left in the earlier run's cgroup was not killed")
	}
	for _, d := range left.Dirs() {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived the sweep", d)
		}
	}
	for _, d := range kept.Dirs() {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("another instance's cgroup was swept: %v", err)
		}
	}
	closeCgroups()
	for _, d := range res.Cgroups.Dirs() {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left at the end", d)
		}
	}

	if res, _, err := vmResources(serveConfig{VMCgroups: cgroupsOff}, dataDir, log); err != nil || res.Cgroups != nil {
		t.Errorf("--vm-cgroups off: %+v, %v", res, err)
	}
}
