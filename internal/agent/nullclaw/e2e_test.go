package nullclaw_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/agent/builtin"
	"github.com/execlaw/execlaw/internal/agent/nullclaw"
	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/testutil"
)

// These tests run a nullclaw session through the whole server: the API, the
// session manager, the process sandbox with the real execlaw-guest, the
// credential proxy's tunnel, and the adapter in agent.go. nullclaw itself is
// the stand-in executable in nullclawtest/standin, which reads the
// config.json the adapter writes, serves nullclaw's A2A wire format, and
// makes real streamed model calls, through the proxy, to an llmtest fake
// provider.
//
// The process driver shares the host's loopback, and nullclaw's ports are
// fixed (ProxyPort, GatewayPort), so only one nullclaw session may run at a
// time: these tests never run in parallel (t.Setenv enforces it).

const (
	realKey      = "sk-e2e-REAL-provider-key-0123456789"
	systemPrompt = "You are the nullclaw end-to-end test agent."
	maxTokens    = 1234
	temperature  = 0.25
	noteCommand  = "echo from-nullclaw > note.txt; cat note.txt"
	napCommand   = "sleep 3607"
)

// standinPath builds the stand-in and makes sessions' nullclaw be it.
func standinPath(t *testing.T) string {
	t.Helper()
	bin := testutil.BinaryFrom(t, "./internal/agent/nullclaw/nullclawtest/standin", "nullclaw-standin")
	t.Setenv(nullclaw.BinaryEnv, bin)
	return bin
}

// dialect is what differs between the provider APIs.
type dialect struct {
	provider string
	model    string
	newFake  func(...llmtest.Turn) *llmtest.Server
	path     string // where nullclaw's model calls arrive at the provider
	// checkRequest checks one model call as the provider got it.
	checkRequest func(t *testing.T, r llmtest.Request)
	// toolResult returns the tool output sent back in a request, if any.
	toolResult func(r llmtest.Request) (string, bool)
	// stuckCancel also cancels a turn while a tool runs, which the
	// stand-in, like nullclaw may, does not interrupt (it takes the
	// adapter's 10s grace, so one dialect is enough).
	stuckCancel bool
}

var dialects = []dialect{
	{
		provider: "anthropic", model: "claude-sonnet-4-20250514", newFake: llmtest.NewAnthropic, path: "/v1/messages",
		stuckCancel: true,
		checkRequest: func(t *testing.T, r llmtest.Request) {
			if got := r.Header.Get("X-Api-Key"); got != realKey {
				t.Errorf("provider got x-api-key %q, want the real key", got)
			}
			if got := r.Header.Get("Authorization"); got != "" {
				t.Errorf("provider got Authorization %q as well", got)
			}
			if got := r.Header.Get("Anthropic-Version"); got != "2023-06-01" {
				t.Errorf("anthropic-version %q", got)
			}
			if sys, _ := r.JSON["system"].(string); !strings.Contains(sys, systemPrompt) {
				t.Errorf("system prompt %q lacks the session's (IDENTITY.md)", sys)
			}
		},
		toolResult: func(r llmtest.Request) (string, bool) {
			var body struct {
				Messages []struct {
					Role    string
					Content json.RawMessage
				}
			}
			json.Unmarshal(r.Body, &body)
			if len(body.Messages) == 0 {
				return "", false
			}
			var blocks []struct {
				Type      string `json:"type"`
				ToolUseID string `json:"tool_use_id"`
				Content   string `json:"content"`
			}
			last := body.Messages[len(body.Messages)-1]
			if json.Unmarshal(last.Content, &blocks) != nil || len(blocks) == 0 || blocks[0].Type != "tool_result" {
				return "", false
			}
			return blocks[0].Content, true
		},
	},
	{
		provider: "openai-compatible", model: "gpt-4o-mini", newFake: llmtest.NewOpenAI, path: "/v1/chat/completions",
		checkRequest: func(t *testing.T, r llmtest.Request) {
			if got := r.Header.Get("Authorization"); got != "Bearer "+realKey {
				t.Errorf("provider got Authorization %q, want the real key", got)
			}
			if got := r.Header.Get("X-Api-Key"); got != "" {
				t.Errorf("provider got x-api-key %q as well", got)
			}
			if opts, _ := r.JSON["stream_options"].(map[string]any); opts["include_usage"] != true {
				t.Errorf("stream_options %v: the proxy could not count usage", r.JSON["stream_options"])
			}
			msgs, _ := r.JSON["messages"].([]any)
			first, _ := msgs[0].(map[string]any)
			if sys, _ := first["content"].(string); first["role"] != "system" || !strings.Contains(sys, systemPrompt) {
				t.Errorf("first message %v lacks the session's system prompt (IDENTITY.md)", first)
			}
		},
		toolResult: func(r llmtest.Request) (string, bool) {
			msgs, _ := r.JSON["messages"].([]any)
			if len(msgs) == 0 {
				return "", false
			}
			last, _ := msgs[len(msgs)-1].(map[string]any)
			if last["role"] != "tool" {
				return "", false
			}
			s, _ := last["content"].(string)
			return s, true
		},
	},
}

func TestEndToEnd(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.provider, func(t *testing.T) { runEndToEnd(t, d) })
	}
}

func runEndToEnd(t *testing.T, d dialect) {
	bin := standinPath(t)
	gate := make(chan struct{})
	defer close(gate)
	fake := d.newFake(
		// Turn 1: a tool call, then the answer.
		llmtest.Turn{Text: "I will write the note.", ToolCalls: []llmtest.ToolCall{{Name: "shell", Input: fmt.Sprintf(`{"command":%q}`, noteCommand)}}},
		llmtest.Turn{Text: "The note says from-nullclaw."},
		// Turn 2: same conversation.
		llmtest.Turn{Text: "Second turn, same conversation."},
		// Turn 3: held after its first delta, and cancelled.
		llmtest.Turn{Text: "This answer is cut off by the cancel.", Gate: gate},
		// Turn 4: the session carries on.
		llmtest.Turn{Text: "Back after the cancel."},
	).Attach(t)
	fake.RequireKey(realKey)
	if d.stuckCancel {
		fake.Enqueue(
			// Turn 5: a tool that outlasts the cancel.
			llmtest.Turn{Text: "Taking a nap.", ToolCalls: []llmtest.ToolCall{{Name: "shell", Input: fmt.Sprintf(`{"command":%q}`, napCommand)}}},
			// Turn 6: a new gateway answers.
			llmtest.Turn{Text: "A fresh nullclaw answers."},
		)
	}

	h := apitest.New(t, apitest.Options{Agents: []agent.Kind{builtin.Kind, nullclaw.Kind}})
	v := h.Create(map[string]any{
		"provider": d.provider, "apiKey": realKey, "model": d.model, "baseUrl": fake.BaseURL(),
		"agent": "nullclaw", "systemPrompt": systemPrompt, "maxTokens": maxTokens, "temperature": temperature,
	})
	if v.Agent != "nullclaw" || v.Sandbox != "process" {
		t.Fatalf("session %+v", v)
	}
	h.WaitState(v.ID, "active")
	st := h.Stream(v.ID, "")

	// Turn 1: text, a tool call nullclaw runs in the sandbox, more text.
	h.Input(v.ID, "Write a note and tell me what it says.")
	idle1 := st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	turn1 := between(st.Events(), 0, idle1.ID)
	checkTurn(t, turn1, []string{
		"message:I will write the note.",
		"tool_call:shell",
		"tool_result:shell",
		"message:The note says from-nullclaw.",
	})
	if got, err := os.ReadFile(filepath.Join(h.Workspace(v.ID), "note.txt")); err != nil || string(got) != "from-nullclaw\n" {
		t.Errorf("note.txt in the workspace: %q, %v", got, err)
	}

	reqs := fake.Requests()
	if len(reqs) != 2 {
		t.Fatalf("turn 1 made %d model calls, want 2", len(reqs))
	}
	for _, r := range reqs {
		if r.Method != "POST" || r.Path != d.path {
			t.Errorf("model call %s %s, want POST %s", r.Method, r.Path, d.path)
		}
		if r.JSON["stream"] != true || r.JSON["model"] != d.model || r.JSON["max_tokens"] != float64(maxTokens) ||
			r.JSON["temperature"] != temperature {
			t.Errorf("model call stream %v model %v max_tokens %v temperature %v", r.JSON["stream"], r.JSON["model"],
				r.JSON["max_tokens"], r.JSON["temperature"])
		}
		d.checkRequest(t, r)
	}
	if out, ok := d.toolResult(reqs[1]); !ok || !strings.Contains(out, "from-nullclaw") {
		t.Errorf("the second model call does not carry the shell's output: %q (%v)", out, ok)
	}

	// The proxy counted both calls.
	st.WaitType(t, apitest.Wait, event.Usage, 2)
	waitUsage(t, h, v.ID)

	// What "the VM" holds: the proxy token, never the key.
	stateDir := nullclaw.StateDir(h.Workspace(v.ID))
	token := checkConfig(t, filepath.Join(stateDir, ".nullclaw", "config.json"), d)
	pids := testutil.ProcessesWithArgs(gatewayArgv(bin)...)
	if len(pids) != 1 {
		t.Fatalf("%d stand-in processes %v, want 1", len(pids), pids)
	}
	checkProcess(t, pids[0], stateDir)
	checkNoKeyIn(t, filepath.Dir(h.Workspace(v.ID)))
	for _, r := range fake.Requests() {
		if hdr := fmt.Sprint(r.Header); strings.Contains(hdr, token) || bytes.Contains(r.Body, []byte(token)) {
			t.Errorf("the provider saw the proxy token in %s %s", r.Method, r.Path)
		}
	}

	// Turn 2, in the same nullclaw conversation: the model gets turn 1.
	h.Input(v.ID, "And now?")
	idle2 := st.WaitType(t, apitest.Wait, event.AgentIdle, 2)
	checkTurn(t, between(st.Events(), idle1.ID, idle2.ID), []string{"message:Second turn, same conversation."})
	reqs = fake.Requests()
	if len(reqs) != 3 {
		t.Fatalf("%d model calls after turn 2, want 3", len(reqs))
	}
	for _, want := range []string{"Write a note and tell me what it says.", "The note says from-nullclaw.", "And now?"} {
		if !bytes.Contains(reqs[2].Body, []byte(want)) {
			t.Errorf("turn 2's model call lacks %q from the conversation", want)
		}
	}

	// Turn 3: cancelled while the model streams.
	h.Input(v.ID, "Tell me a long story.")
	st.WaitFor(t, apitest.Wait, "turn 3's first delta", func(e testutil.SSEEvent) bool {
		return e.ID > idle2.ID && e.Type == event.MessageDelta
	})
	var c struct{ OK, Cancelled bool }
	h.Must(http.StatusOK, "POST", "/api/sessions/"+v.ID+"/cancel", nil).JSON(t, &c)
	if !c.Cancelled {
		t.Fatalf("cancel answered %+v", c)
	}
	idle3 := st.WaitType(t, apitest.Wait, event.AgentIdle, 3)
	turn3 := between(st.Events(), idle2.ID, idle3.ID)
	errs := ofType(turn3, event.Error)
	if len(errs) != 1 || !strings.Contains(errs[0].Field("message"), "cancel") {
		t.Errorf("turn 3 error events %v, want one about the cancel", fields(errs, "message"))
	}
	if msgs := ofType(turn3, event.Message); len(msgs) != 1 || msgs[0].Field("content") == "" ||
		!strings.HasPrefix("This answer is cut off by the cancel.", msgs[0].Field("content")) {
		t.Errorf("turn 3 messages %v, want the cut-off start of the answer", fields(msgs, "content"))
	}
	h.WaitState(v.ID, "active")

	// Turn 4: the gateway that honoured the cancel carries on.
	h.Input(v.ID, "Are you there?")
	idle4 := st.WaitType(t, apitest.Wait, event.AgentIdle, 4)
	checkTurn(t, between(st.Events(), idle3.ID, idle4.ID), []string{"message:Back after the cancel."})
	if got := testutil.ProcessesWithArgs(gatewayArgv(bin)...); len(got) != 1 || got[0] != pids[0] {
		t.Errorf("stand-in processes %v after the cancel, want the same %d", got, pids[0])
	}

	// The stand-in's own record: calls only to the proxy in the VM, the
	// cancel reached the turn, and the adapter sent nothing nullclaw would
	// object to.
	logPath := filepath.Join(stateDir, ".nullclaw", "standin.jsonl")
	kinds, interrupted := checkStandinLog(t, logPath, d)
	if kinds["start"] != 1 || kinds["model_call"] != 5 || kinds["tool"] != 1 || kinds["turn_end"] != 4 || interrupted != 1 {
		t.Errorf("stand-in log: %v, %d interrupted turns", kinds, interrupted)
	}
	if d.stuckCancel {
		stuckCancel(t, h, st, v.ID, bin, pids[0], idle4.ID)
		// The new gateway has the session's proxy token too.
		if again := checkConfig(t, filepath.Join(stateDir, ".nullclaw", "config.json"), d); again != token {
			t.Errorf("the restarted gateway got another proxy token")
		}
		checkNoKeyIn(t, filepath.Dir(h.Workspace(v.ID)))
		if kinds, _ := checkStandinLog(t, logPath, d); kinds["start"] != 2 || kinds["model_call"] != 7 {
			t.Errorf("stand-in log after the restart: %v", kinds)
		}
	}

	if n := fake.Pending(); n != 0 {
		t.Errorf("%d scripted model replies unused", n)
	}

	// Deleting the session ends nullclaw with it.
	h.Must(http.StatusOK, "DELETE", "/api/sessions/"+v.ID, nil)
	deadline := time.Now().Add(apitest.Wait)
	for len(testutil.ProcessesWithArgs(gatewayArgv(bin)...)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the stand-in outlived its session: %v", testutil.ProcessesWithArgs(gatewayArgv(bin)...))
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	h.AssertNothingLeft()
}

// stuckCancel cancels a turn while a tool runs that nullclaw does not
// interrupt: after the grace the adapter stops the gateway, which ends the
// tool, and the next message starts a new gateway.
func stuckCancel(t *testing.T, h *apitest.Harness, st *testutil.SSEStream, id, bin string, oldPID int, after int64) {
	t.Helper()
	h.Input(id, "Take a nap.")
	st.WaitFor(t, apitest.Wait, "the nap's tool call", func(e testutil.SSEEvent) bool {
		return e.ID > after && e.Type == event.ToolCall
	})
	napArgs := []string{"sleep", strings.TrimPrefix(napCommand, "sleep ")}
	deadline := time.Now().Add(apitest.Wait)
	for len(testutil.ProcessesWithArgs(napArgs...)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the nap never started")
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	h.Must(http.StatusOK, "POST", "/api/sessions/"+id+"/cancel", nil)
	idle := st.WaitType(t, apitest.Wait, event.AgentIdle, 5)
	turn := between(st.Events(), after, idle.ID)
	res := ofType(turn, event.ToolResult)
	if len(res) != 1 || res[0].Field("isError") != "true" {
		t.Errorf("the cut-off tool's results %v", fields(res, "output"))
	}
	errs := ofType(turn, event.Error)
	if len(errs) != 1 || !strings.Contains(errs[0].Field("message"), "cancel") || !strings.Contains(errs[0].Field("message"), "stopped") {
		t.Errorf("error events %v, want one saying nullclaw was stopped after the cancel", fields(errs, "message"))
	}
	// The tool went with the gateway (SIGKILL to its process group, which
	// the kernel may take a moment to finish).
	for len(testutil.ProcessesWithArgs(napArgs...)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the nap survived the stopped gateway: %v", testutil.ProcessesWithArgs(napArgs...))
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}

	// The next message, at once, starts a new gateway on the same port.
	h.Input(id, "Hello again.")
	idle6 := st.WaitType(t, apitest.Wait, event.AgentIdle, 6)
	checkTurn(t, between(st.Events(), idle.ID, idle6.ID), []string{"message:A fresh nullclaw answers."})
	if pids := testutil.ProcessesWithArgs(gatewayArgv(bin)...); len(pids) != 1 || pids[0] == oldPID {
		t.Errorf("gateways %v after the restart (the old one was %d)", pids, oldPID)
	}
}

func gatewayArgv(bin string) []string {
	return []string{bin, "gateway", "--host", "127.0.0.1", "--port", strconv.Itoa(nullclaw.GatewayPort)}
}

// between returns the events with from < ID <= to.
func between(events []testutil.SSEEvent, from, to int64) []testutil.SSEEvent {
	var out []testutil.SSEEvent
	for _, e := range events {
		if e.ID > from && e.ID <= to {
			out = append(out, e)
		}
	}
	return out
}

func ofType(events []testutil.SSEEvent, typ string) []testutil.SSEEvent {
	var out []testutil.SSEEvent
	for _, e := range events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func count(events []testutil.SSEEvent, typ string) int { return len(ofType(events, typ)) }

func fields(events []testutil.SSEEvent, name string) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.Field(name))
	}
	return out
}

// checkTurn checks a turn's messages and tool events against want
// ("message:TEXT", "tool_call:NAME", "tool_result:NAME"): every message was
// streamed as deltas first, every tool call has its result, and nothing
// failed.
func checkTurn(t *testing.T, events []testutil.SSEEvent, want []string) {
	t.Helper()
	var got []string
	deltas := map[string]string{}
	nDeltas := map[string]int{}
	calls := map[string]bool{}
	for _, e := range events {
		switch e.Type {
		case event.MessageDelta:
			deltas[e.Field("messageId")] += e.Field("text")
			nDeltas[e.Field("messageId")]++
		case event.Message:
			id, content := e.Field("messageId"), e.Field("content")
			got = append(got, "message:"+content)
			if deltas[id] != content || nDeltas[id] < 2 {
				t.Errorf("message %q came as %d deltas %q, want it streamed in pieces", content, nDeltas[id], deltas[id])
			}
		case event.ToolCall:
			got = append(got, "tool_call:"+e.Field("name"))
			calls[e.Field("id")] = true
		case event.ToolResult:
			got = append(got, "tool_result:"+e.Field("name"))
			if !calls[e.Field("id")] || e.Field("isError") != "false" {
				t.Errorf("tool result %s for no call or failed", e.Data)
			}
		case event.Error:
			got = append(got, "error_event:"+e.Field("message"))
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("turn events:\n%s\nwant:\n%s\nall: %s", strings.Join(got, "\n"), strings.Join(want, "\n"), testutil.Summary(events))
	}
	if n := count(events, event.AgentBusy); n != 1 {
		t.Errorf("%d agent_busy events in the turn", n)
	}
}

func waitUsage(t *testing.T, h *apitest.Harness, id string) {
	t.Helper()
	deadline := time.Now().Add(apitest.Wait)
	for {
		var v struct {
			Usage struct {
				InputTokens  int64 `json:"inputTokens"`
				OutputTokens int64 `json:"outputTokens"`
			} `json:"usage"`
		}
		h.Must(http.StatusOK, "GET", "/api/sessions/"+id+"/status", nil).JSON(t, &v)
		if v.Usage.InputTokens > 0 && v.Usage.OutputTokens > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("session usage %+v: the proxy counted nothing", v.Usage)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// checkConfig checks the config.json nullclaw read and returns the proxy
// token it holds.
func checkConfig(t *testing.T, path string, d dialect) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("nullclaw's config: %v", err)
	}
	if bytes.Contains(raw, []byte(realKey)) {
		t.Fatalf("config.json in the sandbox holds the real key")
	}
	var cfg struct {
		Models struct {
			Providers map[string]struct {
				APIKey  string `json:"api_key"`
				BaseURL string `json:"base_url"`
			} `json:"providers"`
		} `json:"models"`
		Agents struct {
			Defaults struct {
				Model struct{ Primary string } `json:"model"`
			} `json:"defaults"`
		} `json:"agents"`
		Gateway struct {
			PairedTokens []string `json:"paired_tokens"`
		} `json:"gateway"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	name, wantBase := "anthropic", fmt.Sprintf("http://127.0.0.1:%d", nullclaw.ProxyPort)
	if d.provider != "anthropic" {
		name, wantBase = nullclaw.ProxyProviderName, wantBase+"/v1"
	}
	p, ok := cfg.Models.Providers[name]
	if !ok || len(cfg.Models.Providers) != 1 || p.BaseURL != wantBase || cfg.Agents.Defaults.Model.Primary != name+"/"+d.model {
		t.Fatalf("config.json providers %+v, primary %q", cfg.Models.Providers, cfg.Agents.Defaults.Model.Primary)
	}
	if len(p.APIKey) != 64 || p.APIKey == realKey {
		t.Fatalf("config.json api_key %q is not a proxy token", p.APIKey)
	}
	if len(cfg.Gateway.PairedTokens) != 1 || len(cfg.Gateway.PairedTokens[0]) != 64 {
		t.Errorf("paired_tokens %v, want one SHA-256", cfg.Gateway.PairedTokens)
	}
	return p.APIKey
}

// checkProcess checks what the running stand-in got: its command line and
// environment, with nullclaw's home in the session's state directory and no
// key anywhere.
func checkProcess(t *testing.T, pid int, stateDir string) {
	t.Helper()
	for _, f := range []string{"cmdline", "environ"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(realKey)) {
			t.Errorf("the stand-in's %s holds the real key", f)
		}
		if f == "environ" && !bytes.Contains(b, []byte("\x00NULLCLAW_HOME="+filepath.Join(stateDir, ".nullclaw")+"\x00")) &&
			!bytes.HasPrefix(b, []byte("NULLCLAW_HOME="+filepath.Join(stateDir, ".nullclaw")+"\x00")) {
			t.Errorf("the stand-in's environment has no NULLCLAW_HOME in %s: %q", stateDir, b)
		}
	}
}

// checkNoKeyIn fails if any file under dir holds the real key.
func checkNoKeyIn(t *testing.T, dir string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		n++
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(realKey)) {
			t.Errorf("%s in the sandbox holds the real key", p)
		}
		return nil
	})
	if err != nil || n < 3 {
		t.Errorf("walked %d files of %s: %v", n, dir, err)
	}
}

// checkStandinLog reads what the stand-in recorded, checks it, and returns
// how many records of each kind there are and how many turns were
// interrupted.
func checkStandinLog(t *testing.T, path string, d dialect) (map[string]int, int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("the stand-in's log: %v", err)
	}
	defer f.Close()
	kinds := map[string]int{}
	interrupted := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("stand-in log line %q: %v", sc.Text(), err)
		}
		kind, _ := rec["kind"].(string)
		kinds[kind]++
		switch kind {
		case "violation":
			t.Errorf("the adapter sent what nullclaw would not accept: %v", rec["text"])
		case "model_call":
			want := fmt.Sprintf("http://127.0.0.1:%d%s", nullclaw.ProxyPort, d.path)
			if rec["url"] != want {
				t.Errorf("the stand-in called %v, want the proxy at %s", rec["url"], want)
			}
		case "tool":
			if rec["command"] != noteCommand || rec["exit"] != float64(0) {
				t.Errorf("tool run %v", rec)
			}
		case "turn_end":
			if rec["error"] != nil {
				t.Errorf("a turn failed in the stand-in: %v", rec["error"])
			}
			if rec["interrupted"] == true {
				interrupted++
			}
		}
	}
	return kinds, interrupted
}

// With the process driver every sandbox shares the host's loopback, and
// nullclaw's ports are fixed: a second nullclaw session cannot start its
// proxy port while the first runs, and says so; the first is unharmed.
func TestSecondProcessSandboxSessionIsRefused(t *testing.T) {
	standinPath(t)
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "First one here."}).Attach(t)
	h := apitest.New(t, apitest.Options{Agents: []agent.Kind{nullclaw.Kind}})
	create := func() string {
		v := h.Create(map[string]any{"provider": "anthropic", "apiKey": realKey, "model": "claude-sonnet-4-20250514",
			"baseUrl": fake.BaseURL(), "agent": "nullclaw"})
		h.WaitState(v.ID, "active")
		return v.ID
	}
	first, second := create(), create()
	st1, st2 := h.Stream(first, ""), h.Stream(second, "")
	h.Input(first, "hello")
	idle := st1.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	checkTurn(t, between(st1.Events(), 0, idle.ID), []string{"message:First one here."})

	h.Input(second, "hello")
	idle = st2.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	errs := ofType(between(st2.Events(), 0, idle.ID), event.Error)
	if len(errs) != 1 || !strings.Contains(errs[0].Field("message"), "could not start nullclaw") ||
		!strings.Contains(errs[0].Field("message"), strconv.Itoa(nullclaw.ProxyPort)) {
		t.Errorf("second session's errors %v", fields(errs, "message"))
	} else {
		t.Logf("the second session says: %s", errs[0].Field("message"))
	}
	for _, id := range []string{first, second} {
		h.Must(http.StatusOK, "DELETE", "/api/sessions/"+id, nil)
	}
	h.AssertNothingLeft()
}
