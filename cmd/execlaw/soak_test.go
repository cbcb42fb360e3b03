package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/network"
	"github.com/execlaw/execlaw/internal/testutil"
)

// The fault and soak test: hundreds of sessions of the real server binary,
// process sandboxes and QEMU VMs, created and ended while their sandboxes,
// their guests and the server itself are killed with SIGKILL at random
// moments (booting, mid-turn). At the end nothing may be left on the host
// (processes, namespaces, links, nftables table, cgroups, mounts, files),
// and no event a client was sent may be missing from the store. The server
// runs in a network namespace of the test's own (network.Testbed) as its
// "host": everything it does to a host's network stays there.
func TestFaultSoak(t *testing.T) {
	bin := testutil.Binary(t, "execlaw")
	testutil.GuestBinary(t) // next to execlaw, where serve looks for it
	if err := network.SweepTestbeds("xls"); err != nil {
		t.Logf("removing what killed runs left: %v", err)
	}
	tb, err := network.NewTestbed(fmt.Sprintf("xls%d-", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	var total soakCounts
	for _, phase := range []soakPhase{
		{name: "process", sessions: 200, parallel: 8, args: []string{"--sandbox", "process"}, serverKills: 4},
		{name: "qemu", sessions: 20, parallel: 2, vm: true, args: []string{"--sandbox", "qemu", "--image", "minimal"}, serverKills: 2},
	} {
		c := phase.run(t, rng, tb, bin)
		t.Logf("%s: %s", phase.name, c)
		total.add(c)
	}
	t.Logf("in all: %s", total)
	fmt.Printf("soak: %s\n", total)
}

type soakPhase struct {
	name        string
	sessions    int
	parallel    int
	vm          bool
	args        []string
	serverKills int
}

type soakCounts struct {
	sessions, clean, sandboxKills, serverKills, events int
	leftovers                                          []string
}

func (c *soakCounts) add(o soakCounts) {
	c.sessions += o.sessions
	c.clean += o.clean
	c.sandboxKills += o.sandboxKills
	c.serverKills += o.serverKills
	c.events += o.events
	c.leftovers = append(c.leftovers, o.leftovers...)
}

func (c soakCounts) String() string {
	return fmt.Sprintf("%d sessions (%d ended cleanly, %d sandboxes or guests SIGKILLed, %d server SIGKILLs mid-boot or mid-turn), %d events checked, %d leftovers %q",
		c.sessions, c.clean, c.sandboxKills, c.serverKills, c.events, len(c.leftovers), c.leftovers)
}

// soakRun is one phase's server and what its clients saw.
type soakRun struct {
	t       *testing.T
	tb      *network.Testbed
	client  *http.Client // connects from the testbed's host namespace
	bin     string
	dataDir string
	args    []string
	srv     *server

	mu   sync.Mutex
	seen map[string][]testutil.SSEEvent // what clients were sent, by session
}

func (p soakPhase) run(t *testing.T, rng *rand.Rand, tb *network.Testbed, bin string) soakCounts {
	dataDir := t.TempDir()
	if p.vm {
		// The server boots the tests' cached guest image.
		if err := os.Symlink(filepath.Join(testutil.VMImageDir(t), "images"), filepath.Join(dataDir, "images")); err != nil {
			t.Fatal(err)
		}
	}
	tr := &http.Transport{DialContext: tb.Dial}
	t.Cleanup(tr.CloseIdleConnections)
	r := &soakRun{t: t, tb: tb, client: &http.Client{Transport: tr}, bin: bin, dataDir: dataDir, args: p.args, seen: map[string][]testutil.SSEEvent{}}
	r.srv = r.start()
	var c soakCounts

	// Server kills fall between batches, each on a session of its own.
	killAfter := map[int]bool{}
	for len(killAfter) < p.serverKills {
		killAfter[1+rng.IntN(p.sessions/p.parallel-1)] = true
	}
	started := 0
	for batch := 0; started < p.sessions; batch++ {
		n := min(p.parallel, p.sessions-started)
		var wg sync.WaitGroup
		results := make([]string, n)
		for i := range n {
			kill := rng.IntN(3) == 0 // a third of the sessions lose their sandbox
			network := "none"
			if p.vm && rng.IntN(2) == 0 {
				network = "full"
			}
			wg.Go(func() { results[i] = r.session(network, kill) })
		}
		wg.Wait()
		started += n
		for _, res := range results {
			switch res {
			case "clean":
				c.clean++
			case "killed":
				c.sandboxKills++
			default:
				t.Errorf("%s session: %s", p.name, res)
			}
		}
		if killAfter[batch] {
			r.killServer(rng.IntN(2) == 0, p.vm)
			c.serverKills++
			started++
		}
	}
	c.sessions = started

	// Every event any client was sent is in the store, unchanged.
	r.mu.Lock()
	seen := r.seen
	r.mu.Unlock()
	for id, events := range seen {
		stored := r.storedEvents(id)
		if len(stored) < len(events) || !sameEvents(stored[:len(events)], events) {
			t.Errorf("session %s: the store lost or changed events a client was sent:\nsent   %s\nstored %s", id, testutil.Summary(events), testutil.Summary(stored))
		}
		c.events += len(events)
	}

	if err := r.srv.terminate(2 * time.Minute); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	c.leftovers = leftovers(t, tb, dataDir)
	for _, l := range c.leftovers {
		t.Errorf("%s: left behind: %s", p.name, l)
	}
	return c
}

func (r *soakRun) url() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.srv.url
}

// session runs one session to its end: a turn that runs a command, then
// either an ordinary end or its sandbox (the VMM, or the process guest)
// killed with SIGKILL mid-command. It says how it ended, or what went wrong.
func (r *soakRun) session(network string, kill bool) (result string) {
	// A model of its own: sessions running side by side each get their turn
	// in order.
	fake := llmtest.NewAnthropic(
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"echo soak; sleep 3"}`}}},
		llmtest.Turn{Text: "done"},
	)
	defer fake.Close()
	id, err := r.create(fake, network)
	if err != nil {
		return err.Error()
	}
	defer func() {
		if result != "clean" && result != "killed" {
			r.delete(id) // a failed session must not hold a slot for the others
		}
	}()
	st, err := r.openStream(id)
	if err != nil {
		return err.Error()
	}
	defer st.Close()
	defer r.record(id, st)
	if err := waitEvent(st, 3*time.Minute, func(e testutil.SSEEvent) bool {
		return e.Type == event.Status && e.Field("state") == "active"
	}); err != nil {
		return "boot: " + err.Error()
	}
	if err := r.post("/api/sessions/"+id+"/input", map[string]string{"message": "run it"}); err != nil {
		return err.Error()
	}
	if err := waitEvent(st, time.Minute, func(e testutil.SSEEvent) bool { return e.Type == event.ToolCall }); err != nil {
		return "turn: " + err.Error()
	}
	if kill {
		pids := sandboxPIDs(filepath.Join(r.dataDir, "sandboxes", id))
		if len(pids) == 0 {
			return "no sandbox process to kill"
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if err := waitEvent(st, time.Minute, func(e testutil.SSEEvent) bool { return e.Type == event.Exit }); err != nil {
			return "after the kill: " + err.Error()
		}
		if err := waitGoneErr(filepath.Join(r.dataDir, "sandboxes", id), time.Minute); err != nil {
			return err.Error()
		}
		return "killed"
	}
	if err := waitEvent(st, time.Minute, func(e testutil.SSEEvent) bool { return e.Type == event.AgentIdle }); err != nil {
		return "turn end: " + err.Error()
	}
	if err := r.delete(id); err != nil {
		return err.Error()
	}
	if err := waitEvent(st, time.Minute, func(e testutil.SSEEvent) bool { return e.Type == event.Exit }); err != nil {
		return "end: " + err.Error()
	}
	return "clean"
}

// killServer SIGKILLs the server while a session boots or runs a command,
// starts it again on the same data directory, and checks the session's
// sandbox died with it.
func (r *soakRun) killServer(midTurn, vm bool) {
	t := r.t
	fake := llmtest.NewAnthropic(llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"sleep 30"}`}}})
	defer fake.Close()
	id, err := r.create(fake, "none")
	if err != nil {
		t.Fatal(err)
	}
	st, err := r.openStream(id)
	if err != nil {
		t.Fatal(err)
	}
	if midTurn || !vm { // a process sandbox boots faster than a kill could land
		if err := waitEvent(st, 3*time.Minute, func(e testutil.SSEEvent) bool { return e.Field("state") == "active" }); err != nil {
			t.Fatal(err)
		}
		if err := r.post("/api/sessions/"+id+"/input", map[string]string{"message": "sleep"}); err != nil {
			t.Fatal(err)
		}
		if err := waitEvent(st, time.Minute, func(e testutil.SSEEvent) bool { return e.Type == event.ToolCall }); err != nil {
			t.Fatal(err)
		}
	}
	r.srv.cmd.Process.Signal(syscall.SIGKILL)
	<-r.srv.done
	st.Close()
	r.record(id, st)
	// The sandbox dies with the server (its VMM or guest has Pdeathsig).
	if err := waitGoneErr(filepath.Join(r.dataDir, "sandboxes", id), time.Minute); err != nil {
		t.Error(err)
	}
	srv := r.start()
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	var v struct{ State string }
	if err := r.getJSON("/api/sessions/"+id+"/status", &v); err != nil || v.State != "paused" {
		t.Errorf("a session whose server was killed is %q after the restart (%v)", v.State, err)
		return
	}
	// It resumes cold on its files, given its key again, and ends cleanly.
	if err := r.post("/api/sessions/"+id+"/resume", map[string]string{"apiKey": "sk-ant-soak"}); err != nil {
		t.Error(err)
		return
	}
	st, err = r.openStream(id)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := waitEvent(st, 3*time.Minute, func(e testutil.SSEEvent) bool {
		return e.Type == event.Status && e.Field("state") == "active"
	}); err != nil {
		t.Errorf("resume after the server was killed: %v", err)
	}
	if err := r.delete(id); err != nil {
		t.Error(err)
	}
	if err := waitEvent(st, time.Minute, func(e testutil.SSEEvent) bool { return e.Type == event.Exit }); err != nil {
		t.Errorf("end after the resume: %v", err)
	}
	r.record(id, st)
}

// start runs the server in the testbed's host namespace.
func (r *soakRun) start() *server {
	argv := append([]string{"--net=" + r.tb.HostNS, "--", r.bin, "serve", "--data-dir", r.dataDir, "--listen", "127.0.0.1:0", "--auth", "none"}, r.args...)
	return startServerCmd(r.t, exec.Command("nsenter", argv...))
}

func (r *soakRun) record(id string, st *testutil.SSEStream) {
	events := st.Events()
	r.mu.Lock()
	defer r.mu.Unlock()
	// A stream opened again later repeats what an earlier one was sent:
	// keep the longest.
	if len(events) > len(r.seen[id]) {
		r.seen[id] = events
	}
}

func (r *soakRun) create(fake *llmtest.Server, network string) (string, error) {
	// The server runs in the testbed's host namespace: the model is served
	// there too.
	ln, err := r.tb.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	var v struct{ ID string }
	body := map[string]any{"provider": "anthropic", "apiKey": "sk-ant-soak", "model": "claude-sonnet-4-20250514",
		"baseUrl": fake.ServeOn(ln), "network": network, "memoryMiB": 256, "vcpus": 1}
	raw, _ := json.Marshal(body)
	resp, err := r.client.Post(r.url()+"/api/sessions", "application/json", bytes.NewReader(raw))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &v) != nil {
		return "", fmt.Errorf("create: %d %s", resp.StatusCode, b)
	}
	return v.ID, nil
}

func (r *soakRun) post(path string, body any) error {
	raw, _ := json.Marshal(body)
	resp, err := r.client.Post(r.url()+path, "application/json", bytes.NewReader(raw))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("POST %s: %d %s", path, resp.StatusCode, b)
	}
	return nil
}

func (r *soakRun) delete(id string) error {
	req, _ := http.NewRequest(http.MethodDelete, r.url()+"/api/sessions/"+id, nil)
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("delete %s: %d", id, resp.StatusCode)
	}
	return nil
}

func (r *soakRun) getJSON(path string, v any) error {
	resp, err := r.client.Get(r.url() + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d", path, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// storedEvents is a session's whole log as the server replays it.
func (r *soakRun) storedEvents(id string) []testutil.SSEEvent {
	var doc struct {
		Events []struct {
			ID   int64
			Type string
			Data json.RawMessage
		}
	}
	if err := r.getJSON("/api/sessions/"+id+"/transcript?format=json", &doc); err != nil {
		r.t.Errorf("transcript of %s: %v", id, err)
		return nil
	}
	out := make([]testutil.SSEEvent, len(doc.Events))
	for i, e := range doc.Events {
		out[i] = testutil.SSEEvent{ID: e.ID, Type: e.Type, Data: e.Data}
	}
	return out
}

// openStream opens a session's event stream without a test's helpers, which
// may only fail the test from its own goroutine.
func (r *soakRun) openStream(id string) (*testutil.SSEStream, error) {
	return testutil.DialSSE(r.client, r.url()+"/api/sessions/"+id+"/stream", nil)
}

func waitEvent(st *testutil.SSEStream, timeout time.Duration, match func(testutil.SSEEvent) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		ended := st.Ended() // before reading: an event and the end can arrive together
		events := st.Events()
		for _, e := range events {
			if match(e) {
				return nil
			}
		}
		if ended {
			return fmt.Errorf("the stream ended first: %s", testutil.Summary(events))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %s", timeout, testutil.Summary(events))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sandboxPIDs are the processes of a session's sandbox: its VMM, or its
// process guest (the processes that name the sandbox directory).
func sandboxPIDs(dir string) []int {
	var pids []int
	for _, p := range processesMentioning(dir) {
		var pid int
		if _, err := fmt.Sscanf(p, "/proc/%d/cmdline", &pid); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

func waitGoneErr(dir string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for len(processesMentioning(dir)) > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("processes still running for %s: %v", dir, processesMentioning(dir))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// leftovers lists what a stopped server left on the host: processes that
// name its data directory, its network namespaces, links and nftables
// table, its cgroups, mounts under its directories, sandbox directories.
func leftovers(t *testing.T, tb *network.Testbed, dataDir string) []string {
	inst := network.InstanceID(dataDir)
	var found []string
	for _, p := range processesMentioning(dataDir) {
		found = append(found, "process "+p)
	}
	nss, _ := filepath.Glob("/run/netns/execlaw-" + inst + "-*")
	for _, ns := range nss {
		found = append(found, "netns "+ns)
	}
	st, err := tb.State() // the server's "host": its session links and nftables rules
	if err != nil {
		t.Errorf("reading the testbed host: %v", err)
	}
	for _, l := range st.Links {
		found = append(found, "link "+l)
	}
	if st.Rules > 0 {
		found = append(found, fmt.Sprintf("%d nftables rules", st.Rules))
	}
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*/execlaw-" + inst + "*")
	cgs2, _ := filepath.Glob("/sys/fs/cgroup/*/*/execlaw-" + inst + "*")
	for _, cg := range append(cgs, cgs2...) {
		found = append(found, "cgroup "+cg)
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, dataDir) || strings.Contains(line, "/run/netns/execlaw-"+inst) {
				found = append(found, "mount "+line)
			}
		}
	}
	if entries, err := os.ReadDir(filepath.Join(dataDir, "sandboxes")); err == nil {
		for _, e := range entries {
			found = append(found, "sandbox directory "+e.Name())
		}
	}
	return found
}

// sameEvents compares events by meaning: the JSON transcript escapes what
// the stream sends as it is (<, >, &).
func sameEvents(a, b []testutil.SSEEvent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		var x, y any
		if a[i].ID != b[i].ID || a[i].Type != b[i].Type || json.Unmarshal(a[i].Data, &x) != nil || json.Unmarshal(b[i].Data, &y) != nil || !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}
