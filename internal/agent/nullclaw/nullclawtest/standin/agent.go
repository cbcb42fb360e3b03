package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/execlaw/execlaw/internal/agent/nullclaw/nullclawtest"
)

// Limits of the agent loop.
const (
	maxToolIterations = 25
	shellTimeout      = 2 * time.Minute
	maxToolOutput     = 64 << 10
	// prompt.zig reads at most this much of one workspace file, and of all
	// of them together.
	maxPromptFile  = 20_000
	maxPromptTotal = 24_000
)

// promptFiles are the workspace files nullclaw builds its system prompt
// from, in its order (src/agent/prompt.zig).
var promptFiles = []string{"AGENTS.md", "SOUL.md", "TOOLS.md", "IDENTITY.md", "USER.md", "HEARTBEAT.md", "BOOTSTRAP.md", "MEMORY.md"}

var shellTool = tool{
	Name:        "shell",
	Description: "Run a shell command in the workspace and return its output.",
	Schema:      json.RawMessage(`{"type":"object","properties":{"command":{"type":"string","description":"The command, run with sh -c"}},"required":["command"]}`),
}

// agent runs nullclaw's turn loop: model call, tools, model call, ... It
// keeps each conversation (A2A contextId) in memory, as the gateway's
// session manager does.
type agent struct {
	cfg   *config
	model *model
	log   *eventLog

	mu    sync.Mutex
	convs map[string][]message
}

func newAgent(cfg *config, log *eventLog) *agent {
	return &agent{cfg: cfg, model: newModel(cfg, log), log: log, convs: map[string][]message{}}
}

// turn is the gateway's script for one message/stream task.
//
// tasks/cancel (requestTurnInterrupt), the client leaving and the gateway
// shutting down interrupt the turn: a model call in flight is aborted, and
// no further step starts. A tool that is running is not interrupted; it
// runs to its end (or its timeout), and the turn ends after it. How fast
// real nullclaw stops a running tool was not read, so the stand-in takes
// the slow case, which the adapter has to handle anyway.
func (a *agent) turn(t *nullclawtest.Turn) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	toolCtx, toolCancel := context.WithCancel(context.Background())
	defer toolCancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-t.Canceled():
		case <-t.Gone():
		case <-t.Stopped():
			toolCancel()
		case <-stop:
		}
		cancel()
	}()

	// The agent sees the text as nullclaw's extractObjectStringField leaves
	// it: JSON escapes included.
	err := a.run(ctx, toolCtx, t, t.ContextID, t.RawText)
	switch {
	case err == nil || ctx.Err() != nil:
		// A cancelled task stays canceled: Complete then sends the final
		// "canceled" update.
		a.log.add("turn_end", map[string]any{"task": t.TaskID, "interrupted": ctx.Err() != nil})
		t.Complete()
	default:
		a.log.add("turn_end", map[string]any{"task": t.TaskID, "error": err.Error()})
		fmt.Fprintf(os.Stderr, "nullclaw stand-in: turn %s failed: %v\n", t.TaskID, err)
		t.Fail()
	}
}

func (a *agent) run(ctx, toolCtx context.Context, t *nullclawtest.Turn, contextID, text string) error {
	a.mu.Lock()
	msgs := append([]message(nil), a.convs[contextID]...)
	a.mu.Unlock()
	msgs = append(msgs, message{Role: "user", Text: text})

	for range maxToolIterations {
		reply, err := a.model.call(ctx, modelRequest{System: a.systemPrompt(), Messages: msgs, Tools: []tool{shellTool}}, t.Chunk)
		if err != nil {
			return err
		}
		msgs = append(msgs, reply)
		if len(reply.ToolCalls) == 0 {
			// Only a finished turn joins the conversation.
			a.mu.Lock()
			a.convs[contextID] = msgs
			a.mu.Unlock()
			return nil
		}
		results := message{Role: "tool"}
		for _, tc := range reply.ToolCalls {
			if err := ctx.Err(); err != nil {
				return err
			}
			t.ToolHint(tc.Name)
			out, isErr := a.runTool(toolCtx, tc)
			if err := ctx.Err(); err != nil {
				return err
			}
			results.ToolResults = append(results.ToolResults, toolResult{CallID: tc.ID, Output: out, IsError: isErr})
		}
		msgs = append(msgs, results)
	}
	return fmt.Errorf("more than %d tool iterations", maxToolIterations)
}

// systemPrompt is built from the workspace files nullclaw reads.
func (a *agent) systemPrompt() string {
	var b strings.Builder
	b.WriteString("You are nullclaw, an AI assistant (ExeClaw's stand-in).")
	total := 0
	for _, name := range promptFiles {
		data, err := os.ReadFile(filepath.Join(a.cfg.Workspace, name))
		if err != nil || len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		s := truncate(string(data), min(maxPromptFile, maxPromptTotal-total))
		if s == "" {
			break
		}
		total += len(s)
		fmt.Fprintf(&b, "\n\n## %s\n\n%s", name, s)
	}
	return b.String()
}

func truncate(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// runTool runs one tool call. Only shell exists: sh -c in the workspace.
func (a *agent) runTool(ctx context.Context, tc toolCall) (string, bool) {
	if tc.Name != shellTool.Name {
		return fmt.Sprintf("unknown tool %q", tc.Name), true
	}
	var in struct {
		Command string `json:"command"`
	}
	if err := json.Unmarshal(inputOrEmpty(tc.Input), &in); err != nil || strings.TrimSpace(in.Command) == "" {
		return "shell needs {\"command\": \"...\"}", true
	}
	ctx, cancel := context.WithTimeout(ctx, shellTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", in.Command)
	cmd.Dir = a.cfg.Workspace
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	res := out.String()
	if len(res) > maxToolOutput {
		res = truncate(res, maxToolOutput) + "\n[output truncated]"
	}
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else {
			code = -1
			res += err.Error()
		}
	}
	a.log.add("tool", map[string]any{"name": tc.Name, "command": in.Command, "exit": code})
	if code != 0 {
		return fmt.Sprintf("%s\n[exit code %d]", res, code), true
	}
	return res, false
}
