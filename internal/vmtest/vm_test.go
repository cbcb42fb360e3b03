// Package vmtest runs the whole product with real microVMs: the API server,
// the session manager, the built-in agent against a fake LLM, and QEMU (TCG
// here) booting the real guest image, with per-session networking inside
// namespaces the tests create. Nothing any test sends leaves those namespaces.
package vmtest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/image"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/network"
	"github.com/execlaw/execlaw/internal/sandbox/vm"
	"github.com/execlaw/execlaw/internal/testutil"
)

// env is one full server with VM sessions.
type env struct {
	h    *apitest.Harness
	fake *llmtest.Server
	tb   *network.Testbed
	net  *vm.HostNetwork
	img  image.Boot
	pfx  string
}

var (
	envCounter int
	sweepOnce  sync.Once
)

func newEnv(t *testing.T) *env { return newBenchEnv(t) }

func newBenchEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t, testutil.VMImage(t), nil)
}

// newEnvWith runs img, offering agents besides the built-in one.
func newEnvWith(t testing.TB, img image.Boot, agents []agent.Kind) *env {
	t.Helper()
	tb, pfx := newTestbed(t)
	return newServerWith(t, tb, pfx, network.Config{NetNSPrefix: pfx + "s-", DNS: []netip.Addr{netip.MustParseAddr("192.0.2.53")}},
		img, 8, agents)
}

// session creates a VM session and waits until it is ready.
func (e *env) session(t *testing.T, network string) string {
	t.Helper()
	v := e.h.AnthropicSession(e.fake, map[string]any{"network": network, "memoryMiB": 512, "vcpus": 1})
	if v.Sandbox != "qemu-tcg" || !v.Isolated {
		t.Fatalf("session runs in %s (isolated %v)", v.Sandbox, v.Isolated)
	}
	e.h.WaitState(v.ID, "active")
	return v.ID
}

// bash has the agent run one command in a session's VM through the bash
// tool, and returns the tool's output.
func (e *env) bash(t *testing.T, id, command string) string {
	t.Helper()
	var v struct{ LastEventID int64 }
	e.h.Must(200, "GET", "/api/sessions/"+id+"/status", nil).JSON(t, &v)
	input := fmt.Sprintf(`{"command": %q, "timeoutSec": 60}`, command)
	e.fake.Enqueue(llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: input}}}, llmtest.Turn{Text: "done"})
	began := time.Now()
	e.h.Input(id, "run: "+command)
	// Opened after the input: a paused session's stream ends at once, and
	// the input is what resumes it. Nothing is missed: it replays from v.
	st := e.h.Stream(id, strconv.FormatInt(v.LastEventID, 10))
	st.WaitType(t, 3*time.Minute, event.AgentIdle, 1)
	res := st.WaitType(t, apitest.Wait, event.ToolResult, 1)
	st.Close()
	t.Logf("bash %.40q took %s", command, time.Since(began).Round(time.Millisecond))
	return res.Field("output")
}

// The agent's tools run inside the VM: its own kernel, and files that persist
// from one tool call to the next. Boot progress is reported as it happens.
func TestToolsRunInVM(t *testing.T) {
	e := newEnv(t)
	id := e.session(t, "none")
	out := e.bash(t, id, "uname -r")
	if strings.TrimSpace(out) != e.img.KernelVersion {
		t.Fatalf("uname -r in the VM printed %q, want the guest kernel %s", out, e.img.KernelVersion)
	}
	host, _ := exec.Command("uname", "-r").Output()
	if strings.TrimSpace(string(host)) == e.img.KernelVersion {
		t.Log("note: host and guest kernels are the same release")
	}

	st := e.h.Stream(id, "")
	e.fake.Enqueue(
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "write_file", Input: `{"path":"notes/plan.md","content":"step one\nstep two\n"}`}}},
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"wc -l < /workspace/notes/plan.md; cat notes/plan.md"}`}}},
		llmtest.Turn{Text: "The plan has two steps."},
	)
	e.h.Input(id, "write a plan, then read it")
	st.WaitType(t, 3*time.Minute, event.AgentIdle, 2)
	res := st.WaitType(t, apitest.Wait, event.ToolResult, 3)
	if out := res.Field("output"); !strings.Contains(out, "2\nstep one\nstep two") {
		t.Fatalf("second tool call did not read the first one's file: %q", out)
	}
	var phases []string
	for _, ev := range st.Events() {
		if ev.Type == event.Status && ev.Field("phase") != "" {
			phases = append(phases, ev.Field("phase"))
		}
	}
	if got := strings.Join(phases, ","); !strings.Contains(got, "vmm") || !strings.Contains(got, "kernel") || !strings.Contains(got, "guest-api") {
		t.Errorf("boot phases in status events: %s", got)
	}
}

// listen serves TCP inside a namespace of the testbed and returns the port.
func listen(t *testing.T, do func(func() error) error, ip netip.Addr) int {
	t.Helper()
	var ln net.Listener
	if err := do(func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(ip, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello\n"))
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// probe is a bash snippet that tries a TCP connection and says what happened:
// "open", "refused" (the packet reached something) or "timeout" (dropped).
func probe(ip string, port int) string {
	return fmt.Sprintf(`if timeout 4 bash -c 'exec 3<>/dev/tcp/%s/%d' 2>/tmp/err; then echo open; `+
		`elif grep -q refused /tmp/err; then echo refused; else echo timeout; fi`, ip, port)
}

// Sessions are isolated: the guest reaches the internet through NAT, but not
// the host's own services (the API port), not the metadata address, not
// another session, and no session sees another's files.
func TestIsolation(t *testing.T) {
	e := newEnv(t)
	// Stand-ins: the host's API port in the "host" namespace, and a server
	// on the "internet".
	apiPort := listen(t, e.tb.HostDo, netip.IPv4Unspecified())
	inetPort := listen(t, e.tb.InternetDo, e.tb.InternetAddr)
	metaPort := listen(t, e.tb.InternetDo, e.tb.MetadataAddr)

	a := e.session(t, "full")
	b := e.session(t, "full")
	ipA := strings.TrimSpace(e.bash(t, a, "hostname -I"))
	ipB := strings.TrimSpace(e.bash(t, b, "hostname -I"))
	if ipA == "" || ipB == "" || ipA == ipB {
		t.Fatalf("guest addresses %q and %q", ipA, ipB)
	}
	gw := strings.TrimSpace(e.bash(t, a, "awk '$2==\"00000000\" {print $3}' /proc/net/route"))
	if gw == "" {
		t.Fatal("no default route in the guest")
	}

	checks := []struct {
		what, cmd, want string
	}{
		{"the internet, through NAT", probe(e.tb.InternetAddr.String(), inetPort), "open"},
		{"the host's API port on its uplink address", probe(e.tb.HostAddr.String(), apiPort), "timeout"},
		{"the host's API port on the session's gateway", probe(gatewayOf(ipA), apiPort), "timeout"},
		{"the host's API port on the host side of the session link", probe(hostLinkOf(ipA), apiPort), "timeout"},
		{"the cloud metadata address", probe(e.tb.MetadataAddr.String(), metaPort), "timeout"},
		{"the other session", probe(ipB, 22), "timeout"},
	}
	for _, c := range checks {
		if got := strings.TrimSpace(e.bash(t, a, c.cmd)); got != c.want {
			t.Errorf("guest A → %s: %s, want %s", c.what, got, c.want)
		}
	}
	if got := strings.TrimSpace(e.bash(t, b, probe(ipA, 22))); got != "timeout" {
		t.Errorf("guest B → guest A: %s, want timeout", got)
	}
	e.bash(t, a, "echo secret-of-a > /workspace/a-only.txt; echo changed-by-a >> /etc/hostname")
	if out := e.bash(t, b, "cat /workspace/a-only.txt; grep -c changed-by-a /etc/hostname; ls /workspace"); strings.Contains(out, "secret-of-a") || !strings.Contains(out, "No such file") {
		t.Errorf("guest B sees guest A's files: %q", out)
	}
}

// The guest of a session with network none has no network card at all.
func TestNetworkNone(t *testing.T) {
	e := newEnv(t)
	id := e.session(t, "none")
	out := e.bash(t, id, "ls /sys/class/net; "+probe(e.tb.InternetAddr.String(), 80))
	if strings.TrimSpace(out) != "lo\ntimeout" && !strings.HasPrefix(strings.TrimSpace(out), "lo\n") {
		t.Fatalf("network none: %q", out)
	}
	if strings.Contains(out, "eth") || strings.Contains(out, "open") {
		t.Fatalf("network none has a NIC: %q", out)
	}
}

// gatewayOf is the guest's gateway: the first address of its /30.
func gatewayOf(ip string) string {
	a := netip.MustParseAddr(ip).As4()
	a[3] = a[3]&^3 + 1
	return netip.AddrFrom4(a).String()
}

// hostLinkOf is the host side of the session's veth: the /29's first address.
func hostLinkOf(ip string) string {
	a := netip.MustParseAddr(ip).As4()
	a[3] = a[3]&^7 + 1
	return netip.AddrFrom4(a).String()
}

// leftovers lists what a run could leave behind on the host: VMM processes,
// namespaces (and their bind mounts), disks.
func (e *env) leftovers() []string {
	var left []string
	for _, pid := range apitest.ProcessesMentioning(e.h.DataDir) {
		left = append(left, fmt.Sprintf("process %d", pid))
	}
	nss, _ := filepath.Glob("/run/netns/" + e.pfx + "s-*")
	left = append(left, nss...)
	mounts, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, e.pfx+"s-") || strings.Contains(line, e.h.DataDir) {
			left = append(left, "mount "+line)
		}
	}
	disks, _ := filepath.Glob(filepath.Join(e.h.DataDir, "sandboxes", "*"))
	left = append(left, disks...)
	return left
}

// waitNothingLeft waits until the host is as it was before the test: no
// leftovers, no host links, as many firewall rules.
func (e *env) waitNothingLeft(t *testing.T, before network.HostState) {
	t.Helper()
	deadline := time.Now().Add(apitest.Wait)
	for {
		left := e.leftovers()
		after, err := e.tb.State()
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 && len(after.Links) == 0 && after.Rules == before.Rules {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: %v; host links %v; firewall rules %d (before %d)", left, after.Links, after.Rules, before.Rules)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// After 20 create/delete cycles and a VMM killed in the middle of a command,
// nothing is left: no process, namespace, TAP, link, firewall rule, mount or
// disk.
func TestNothingLeftBehind(t *testing.T) {
	e := newEnv(t)
	before, err := e.tb.State()
	if err != nil {
		t.Fatal(err)
	}
	const cycles, parallel = 20, 4
	errs := make(chan error, cycles)
	sem := make(chan struct{}, parallel)
	for i := range cycles {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			r := e.h.Do("POST", "/api/sessions", map[string]any{"provider": "anthropic", "apiKey": "k",
				"model": "claude-sonnet-4-20250514", "baseUrl": e.fake.BaseURL(), "memoryMiB": 256, "vcpus": 1}, nil)
			if r.Status != 201 {
				errs <- fmt.Errorf("cycle %d create: %d %s", i, r.Status, r.Body)
				return
			}
			var v struct{ ID string }
			r.JSON(t, &v)
			if i%5 != 4 { // every fifth session is deleted while it boots
				if err := e.waitActive(v.ID); err != nil {
					errs <- fmt.Errorf("cycle %d: %w", i, err)
					return
				}
			}
			if r := e.h.Do("DELETE", "/api/sessions/"+v.ID, nil, nil); r.Status != 200 {
				errs <- fmt.Errorf("cycle %d delete: %d %s", i, r.Status, r.Body)
				return
			}
			errs <- nil
		}()
	}
	for range cycles {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}

	// kill -9 of the VMM while a command runs.
	id := e.session(t, "full")
	st := e.h.Stream(id, "")
	// The second turn answers the failed tool call, if the model is asked
	// again before the session is torn down.
	e.fake.Enqueue(llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"sleep 600"}`}}},
		llmtest.Turn{Text: "The sandbox is gone."})
	e.h.Input(id, "sleep")
	st.WaitType(t, apitest.Wait, event.ToolCall, 1)
	pids := apitest.ProcessesMentioning(filepath.Join(e.h.DataDir, "sandboxes", id))
	if len(pids) == 0 {
		t.Fatal("no VMM process for the session")
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	exit := st.WaitType(t, apitest.Wait, event.Exit, 1)
	if !strings.Contains(exit.Field("reason"), "unexpectedly") {
		t.Errorf("exit after kill -9: %s", exit.Data)
	}
	e.h.WaitState(id, "error")

	e.waitNothingLeft(t, before)
}

// waitActive is WaitState for goroutines other than the test's: it returns
// an error instead of failing the test.
func (e *env) waitActive(id string) error {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		r := e.h.Do("GET", "/api/sessions/"+id+"/status", nil, nil)
		var v struct{ State, Error string }
		if err := json.Unmarshal(r.Body, &v); err != nil {
			return err
		}
		switch v.State {
		case "active":
			return nil
		case "error", "stopped":
			return fmt.Errorf("session %s ended while booting: %s", id, v.Error)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("session %s did not become active", id)
}
