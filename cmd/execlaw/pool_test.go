package main

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/process"
	"github.com/execlaw/execlaw/internal/testutil"
)

// --warm-pool: auto by default, a number from the environment or a flag,
// and refused when it would leave no room for a session.
func TestServeFlagsWarmPool(t *testing.T) {
	none := func(string) string { return "" }
	c, err := parseServeFlags(nil, none, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.WarmPool != warmPoolAuto {
		t.Errorf("default --warm-pool: %d, want auto", c.WarmPool)
	}
	env := map[string]string{"EXECLAW_WARM_POOL": "3"}
	if c, err = parseServeFlags(nil, func(k string) string { return env[k] }, io.Discard); err != nil || c.WarmPool != 3 {
		t.Errorf("EXECLAW_WARM_POOL=3: %d, %v", c.WarmPool, err)
	}
	if c, err = parseServeFlags([]string{"--warm-pool", "0"}, func(k string) string { return env[k] }, io.Discard); err != nil || c.WarmPool != 0 {
		t.Errorf("--warm-pool 0 over the environment: %d, %v", c.WarmPool, err)
	}
	for _, args := range [][]string{
		{"--warm-pool", "-1"}, {"--warm-pool", "many"}, {"--warm-pool", "65", "--max-sessions", "100"},
		{"--warm-pool", "4", "--max-sessions", "4"}, {"--warm-pool", "1", "--max-sessions", "1"},
	} {
		if _, err := parseServeFlags(args, none, io.Discard); err == nil || !strings.Contains(err.Error(), "--warm-pool") {
			t.Errorf("%v: %v, want a --warm-pool error", args, err)
		}
	}
}

// auto keeps no pool for the process driver, whose sessions cannot be
// claimed (and start in milliseconds); doctor says so, and counts the
// pooled VMs a data directory holds.
func TestWarmPoolForDriver(t *testing.T) {
	d, err := process.New(process.Config{GuestBinary: testutil.GuestBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := serveConfig{WarmPool: warmPoolAuto, MaxSessions: 10, MemoryPercent: 90, MemoryOvercommit: 1}
	if n := warmPoolSize(c, d); n != 0 {
		t.Errorf("auto with the process driver: %d", n)
	}
	c.WarmPool = 2
	if n := warmPoolSize(c, d); n != 2 {
		t.Errorf("--warm-pool 2: %d", n)
	}
	// A cluster's pods: poolable, but not kept warm unless asked.
	pods := podsDriver{d}
	if n := warmPoolSize(serveConfig{WarmPool: warmPoolAuto, MaxSessions: 10}, pods); n != 0 {
		t.Errorf("auto with a driver whose sandboxes run elsewhere: %d", n)
	}
	if n := warmPoolSize(serveConfig{WarmPool: 3, MaxSessions: 10}, pods); n != 3 {
		t.Errorf("--warm-pool 3 with pods: %d", n)
	}
	dir := t.TempDir()
	for _, p := range []string{"p_1", "p_2", "s_1"} {
		if err := os.MkdirAll(filepath.Join(dir, "sandboxes", p), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	f := poolFinding(c, d, dir)
	if f.OK || !strings.Contains(f.Detail, "cannot be claimed") || !strings.Contains(f.Detail, "2 pooled VMs") || !strings.Contains(f.Detail, "next start removes them") {
		t.Errorf("doctor on the process driver: %+v", f)
	}
	release, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if f := poolFinding(c, d, dir); !strings.Contains(f.Detail, "pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("doctor with a server on the data directory: %+v", f)
	}
}

// podsDriver is a driver whose sandboxes can be pooled and run on other
// machines, as the kubernetes driver's pods.
type podsDriver struct{ sandbox.Driver }

func (podsDriver) Poolable() bool      { return true }
func (podsDriver) RunsElsewhere() bool { return true }
