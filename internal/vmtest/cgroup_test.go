package vmtest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/cgroup"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/sandbox"
	"github.com/execlaw/execlaw/internal/sandbox/qemu"
	"github.com/execlaw/execlaw/internal/sandbox/vm"
	"github.com/execlaw/execlaw/internal/testutil"
)

func testCgroups(t *testing.T) *cgroup.Manager {
	t.Helper()
	return testutil.Cgroups(t)
}

// A session whose VM passes its cgroup's memory limit ends, through the
// whole stack, with an exit event that says so, and leaves nothing behind:
// no process, cgroup or sandbox directory. The VM runs in its own cgroup,
// limited to its memory plus QEMU's overhead, with QEMU's OOM score
// raised. The limit is lowered by the test: at the real one the guest's
// own kernel runs out of guest memory first.
func TestVMOutOfMemoryEndsSession(t *testing.T) {
	cg := testCgroups(t)
	d, err := qemu.New(qemu.Config{Image: testutil.VMImage(t), Accel: qemu.AccelTCG, Resources: vm.Resources{Cgroups: cg}})
	if err != nil {
		t.Fatal(err)
	}
	h := apitest.New(t, apitest.Options{Driver: d, MaxSessions: 4})
	fake := llmtest.NewAnthropic().Attach(t)
	v := h.AnthropicSession(fake, map[string]any{"network": "none", "memoryMiB": 256, "vcpus": 1})
	h.WaitState(v.ID, "active")

	g := cg.Open("vm-" + v.ID)
	if limit, err := g.MemoryLimit(); err != nil || limit != (256+64+192)<<20 {
		t.Errorf("the VM's memory limit is %d MiB (%v), want 512", limit>>20, err)
	}
	sbDir := filepath.Join(h.DataDir, "sandboxes", v.ID)
	qemuPids := apitest.ProcessesMentioning(sbDir)
	inGroup, _ := g.PIDs()
	if len(qemuPids) != 1 || !slices.Equal(inGroup, qemuPids) {
		t.Fatalf("QEMU %v, in the VM's cgroup %v", qemuPids, inGroup)
	}
	if adj, err := cgroup.OOMScoreAdj(qemuPids[0]); err != nil || adj != cgroup.VMMOOMScoreAdj {
		t.Errorf("QEMU's oom_score_adj %d (%v)", adj, err)
	}

	used, err := g.MemoryUsage()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.SetMemoryLimit(used + 48<<20); err != nil {
		t.Fatal(err)
	}
	st := h.Stream(v.ID, "")
	fake.Enqueue(llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash",
		Input: `{"command": "mkdir -p /tmp/fill && mount -t tmpfs -o size=90% tmpfs /tmp/fill && head -c 200M /dev/zero > /tmp/fill/x", "timeoutSec": 120}`}}},
		llmtest.Turn{Text: "The sandbox is gone."})
	h.Input(v.ID, "fill your memory")
	exit := st.WaitType(t, 3*time.Minute, event.Exit, 1)
	if exit.Field("code") == "0" || !strings.Contains(exit.Field("reason"), "the VM ran out of its memory limit") ||
		!strings.Contains(exit.Field("reason"), "OOM killer") {
		t.Fatalf("exit: %s", exit.Data)
	}
	t.Logf("exit reason: %.160s", exit.Field("reason"))
	if s := h.WaitState(v.ID, "error"); !strings.Contains(s.Error, "memory limit") {
		t.Errorf("session error %q", s.Error)
	}
	st.WaitEnd(t, apitest.Wait)
	h.AssertNothingLeft()
	for _, d := range g.Dirs() {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the VM's cgroup %s is still there (%v)", d, err)
		}
	}
	if _, err := os.Stat(sbDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sandbox directory left: %v", err)
	}
}

// cgroup v2, for real: this host binds its controllers to v1 hierarchies,
// so the cgroup package's own tests run inside a VM whose kernel (Debian's
// 6.1) mounts cgroup2 with every controller. The test binary is started in
// a cgroup of its own holding nothing else, as systemd's Delegate=yes gives
// the server one, so it also takes the path that moves the server into a
// leaf before enabling controllers for the VM cgroups.
func TestCgroupV2InGuest(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "cgroup.test")
	build := exec.Command("go", "test", "-c", "-o", bin, "./internal/cgroup")
	build.Dir = "../.."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the cgroup tests: %v\n%s", err, out)
	}
	code, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}

	d, err := qemu.New(qemu.Config{Image: testutil.VMImage(t), Accel: qemu.AccelTCG})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := d.Start(context.Background(), sandbox.Spec{SessionID: "s_cgroupv2", Dir: t.TempDir(), VCPUs: 2, MemoryMiB: 768, Network: "none"})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Stop(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// In pieces: a request body is bounded.
	const chunk = 4 << 20
	for off := 0; off < len(code); off += chunk {
		err := sb.Guest().Write(ctx, guest.WriteRequest{Path: "cgroup.test", Data: code[off:min(off+chunk, len(code))], Mode: 0o755, Append: off > 0})
		if err != nil {
			t.Fatal(err)
		}
	}
	script := `set -e
mountpoint -q /sys/fs/cgroup || mount -t cgroup2 none /sys/fs/cgroup
cd /sys/fs/cgroup
for c in memory pids cpu io; do echo +$c > cgroup.subtree_control; done
mkdir svc
echo $$ > svc/cgroup.procs
exec /workspace/cgroup.test -test.v -test.count=1`
	var out bytes.Buffer
	res, err := sb.Guest().Exec(ctx, guest.ExecRequest{Argv: []string{"sh", "-c", script}, Env: []string{"EXECLAW_CGROUP_WANT_VERSION=2"}, TimeoutSec: 200},
		func(_ string, b []byte) { out.Write(b) })
	t.Logf("in the guest:\n%s", out.String())
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("the cgroup tests in the guest: %+v, %v", res, err)
	}
	for _, want := range []string{
		"--- PASS: TestMemoryLimitOOMKills", "--- PASS: TestPidsLimitStopsForkBomb", "--- PASS: TestCreateWritesLimits",
		"--- PASS: TestSweepOnlyThisInstance", "--- PASS: TestJailerArgs",
		"cgroup v2 (memory pids cpu io): per-VM cgroups in /sys/fs/cgroup/svc/execlaw-", "under the server's delegated cgroup",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the guest's run lacks %q", want)
		}
	}
	if strings.Contains(out.String(), "--- SKIP") {
		t.Error("a cgroup test skipped in the guest")
	}
}
