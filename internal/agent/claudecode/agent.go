package claudecode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/agent/invm"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/llm"
)

const (
	// ProxyPort is where, inside the VM, the credential proxy's tunnel listens.
	ProxyPort = 4001
	// Binary is the CLI the image build installs (on PATH in the guest).
	Binary = "claude"
	// BinaryEnv, when set on the host, replaces Binary as the default of
	// Config.Binary. With the process driver the sandbox is the host's own
	// filesystem, so this is how tests point sessions at a CLI installed
	// elsewhere.
	BinaryEnv = "EXECLAW_CLAUDE_BIN"
	// HomeDirName is the CLI's HOME (its settings, session files), next to
	// the workspace, never inside it: /.execlaw-claude-code in a VM, inside
	// the session's own directory with the process driver.
	HomeDirName = ".execlaw-claude-code"
)

// Timing of a turn's end.
const (
	// Watchdog: a turn whose process prints nothing this long is stopped and
	// reported (a model answer streams; a tool prints when it finishes).
	DefaultWatchdog = 10 * time.Minute
	// DefaultInterruptGrace: how long a turn waits for Claude Code to end
	// after an interrupt before the process is signalled and dropped.
	DefaultInterruptGrace = 10 * time.Second
	signalGrace           = 5 * time.Second
)

// Config is how a session's Claude Code runs.
type Config struct {
	LLM          llm.Config // provider anthropic; the key stays on the host
	SystemPrompt string     // appended to Claude Code's own
	// Binary is the CLI inside the guest; default $EXECLAW_CLAUDE_BIN
	// (BinaryEnv), else Binary.
	Binary         string
	Watchdog       time.Duration // default DefaultWatchdog
	InterruptGrace time.Duration // default DefaultInterruptGrace
	Logger         *slog.Logger
	// ResumeSession, when set, is the Claude Code conversation to go on
	// with (--resume): the one it had when its session was paused.
	ResumeSession string
}

// Agent is Claude Code as a session's agent: one long-lived
// `claude -p --input-format stream-json` process in the VM, fed one user
// message per turn.
type Agent struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex // one turn at a time; guards the fields below
	proc      *process
	proxy     *invm.Proxy // its token is the only credential in the VM
	sessionID string      // Claude Code's conversation, as it last said
	resume    string      // the conversation the next CLI started goes on with
}

var _ agent.Agent = (*Agent)(nil)

// New checks cfg.
func New(cfg Config) (*Agent, error) {
	if cfg.LLM.Provider != llm.Anthropic {
		return nil, fmt.Errorf("claude-code speaks Anthropic's API: create the session with provider anthropic, not %s", cfg.LLM.Provider)
	}
	if cfg.LLM.APIKey.Empty() {
		return nil, errors.New("claude-code needs an API key")
	}
	if cfg.Binary == "" {
		cfg.Binary = os.Getenv(BinaryEnv)
	}
	if cfg.Binary == "" {
		cfg.Binary = Binary
	}
	if cfg.Watchdog == 0 {
		cfg.Watchdog = DefaultWatchdog
	}
	if cfg.InterruptGrace == 0 {
		cfg.InterruptGrace = DefaultInterruptGrace
	}
	if cfg.ResumeSession != "" && !validSessionID(cfg.ResumeSession) {
		return nil, errors.New("claude-code: the conversation to resume has no valid id")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Agent{cfg: cfg, log: log, sessionID: cfg.ResumeSession, resume: cfg.ResumeSession}, nil
}

// validSessionID accepts what Claude Code's conversation ids look like
// (UUIDs): it goes on its command line.
func validSessionID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// resumeState is what a paused session keeps of Claude Code.
type resumeState struct {
	SessionID string `json:"sessionId"`
}

// ResumeState is the conversation to go on with after a pause.
func (a *Agent) ResumeState() json.RawMessage {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sessionID == "" {
		return nil
	}
	b, _ := json.Marshal(resumeState{SessionID: a.sessionID})
	return b
}

// process is the running CLI and what it printed, line by line.
type process struct {
	att    *guest.Attached
	lines  chan []byte   // stdout lines; closed when the process is gone
	stderr *invm.Tail    // its last words, for error messages
	exit   chan struct{} // closed with lines
	result guest.ExecResult
}

// Turn sends one message and maps Claude Code's output until its result.
func (a *Agent) Turn(ctx context.Context, ws agent.Workspace, env agent.Environment, text string, sink agent.Sink) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := a.ensure(ctx, ws, sink)
	if err != nil {
		return sink.Emit(context.WithoutCancel(ctx), event.Error, event.ErrorData{Message: "could not start Claude Code in the sandbox: " + err.Error()})
	}
	// The usage of the turn's last model call is in before the turn ends.
	defer a.proxy.Settle(context.WithoutCancel(ctx))
	msg, _ := json.Marshal(map[string]any{
		"type":    "user",
		"message": map[string]any{"role": "user", "content": []map[string]string{{"type": "text", "text": text}}},
	})
	if _, err := p.att.Write(append(msg, '\n')); err != nil {
		a.drop()
		return sink.Emit(context.WithoutCancel(ctx), event.Error, event.ErrorData{Message: "Claude Code stopped reading its input: " + err.Error()})
	}

	m := NewMapper(context.WithoutCancel(ctx), sink)
	watchdog := time.NewTimer(a.cfg.Watchdog)
	defer watchdog.Stop()
	cancelled := ctx.Done()
	var deadline <-chan time.Time // set once an interrupt was sent
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				a.drop()
				msg := fmt.Sprintf("Claude Code exited (%s)", describeExit(p.result))
				if tail := p.stderr.String(); tail != "" {
					msg += ": " + tail
				}
				if err := m.PendingTools("not finished: " + msg); err != nil {
					return err
				}
				return sink.Emit(context.Background(), event.Error, event.ErrorData{Message: msg + ". The next message starts a new Claude Code conversation."})
			}
			watchdog.Reset(a.cfg.Watchdog)
			res, err := m.Line(line)
			if err != nil {
				return err
			}
			if id := m.SessionID(); id != "" && validSessionID(id) {
				a.sessionID = id
			}
			if res == nil {
				continue
			}
			switch {
			case cancelled == nil:
				// Interrupted: Claude Code ends the turn with an error
				// result, which is the cancel, not a failure to report.
				return sink.Emit(context.Background(), event.Error, event.ErrorData{Message: describeCause(ctx)})
			case res.IsError:
				return sink.Emit(context.Background(), event.Error, event.ErrorData{Message: res.describe()})
			}
			return nil
		case <-cancelled:
			cancelled = nil
			a.interrupt(p)
			deadline = time.After(a.cfg.InterruptGrace)
		case <-deadline:
			// No result after the interrupt: signal the process group, then
			// give up on this process; the next turn starts a new one.
			_ = p.att.Signal(guest.SignalInt)
			select {
			case <-p.exit:
			case <-time.After(signalGrace):
			}
			a.drop()
			if err := m.PendingTools("not finished: " + describeCause(ctx)); err != nil {
				return err
			}
			return sink.Emit(context.Background(), event.Error, event.ErrorData{Message: describeCause(ctx) + "; Claude Code was stopped. The next message starts a new Claude Code conversation."})
		case <-watchdog.C:
			a.drop()
			msg := fmt.Sprintf("Claude Code printed nothing for %s and was stopped", a.cfg.Watchdog)
			if err := m.PendingTools("not finished: " + msg); err != nil {
				return err
			}
			return sink.Emit(context.Background(), event.Error, event.ErrorData{Message: msg + ". The next message starts a new Claude Code conversation."})
		}
	}
}

// interrupt asks Claude Code to end the turn, as its SDKs do.
func (a *Agent) interrupt(p *process) {
	req, _ := json.Marshal(map[string]any{
		"type": "control_request", "request_id": "interrupt_" + strconv.FormatInt(time.Now().UnixNano(), 36),
		"request": map[string]string{"subtype": "interrupt"},
	})
	if _, err := p.att.Write(append(req, '\n')); err != nil {
		a.log.Warn("interrupt Claude Code", "err", err)
	}
}

// ensure starts the proxy tunnel and the CLI if they are not running.
func (a *Agent) ensure(ctx context.Context, ws agent.Workspace, sink agent.Sink) (*process, error) {
	g := ws.Guest()
	if a.proxy == nil {
		// The proxy (and its token) live as long as the agent; a restarted
		// CLI gets the same token.
		p, err := invm.StartProxy(ctx, g, ProxyPort, a.cfg.LLM, a.log)
		if err != nil {
			return nil, err
		}
		a.proxy = p
	}
	a.proxy.SetSink(sink)
	if a.proc != nil {
		return a.proc, nil
	}
	token := a.proxy.Token
	home := path.Join(path.Dir(path.Clean(ws.Workspace())), HomeDirName)
	if res, err := g.Exec(ctx, guest.ExecRequest{Argv: []string{"mkdir", "-p", home}}, nil); err != nil || res.ExitCode != 0 {
		return nil, fmt.Errorf("create %s: %v (exit %d)", home, err, res.ExitCode)
	}
	argv := []string{a.cfg.Binary, "-p", "--output-format", "stream-json", "--input-format", "stream-json", "--verbose",
		"--include-partial-messages", "--permission-mode", "bypassPermissions", "--model", a.cfg.LLM.Model}
	if sp := strings.TrimSpace(a.cfg.SystemPrompt); sp != "" {
		argv = append(argv, "--append-system-prompt", sp)
	}
	if a.resume != "" {
		// Its conversation is on the VM's disk, which a pause kept.
		argv = append(argv, "--resume", a.resume)
		a.resume = ""
	}
	att, err := g.Attach(ctx, guest.ExecRequest{
		Argv: argv,
		Dir:  ws.Workspace(),
		Env: []string{
			"ANTHROPIC_BASE_URL=http://127.0.0.1:" + strconv.Itoa(ProxyPort),
			"ANTHROPIC_API_KEY=" + token, // the proxy's token, never the key
			"ANTHROPIC_SMALL_FAST_MODEL=" + a.cfg.LLM.Model,
			"HOME=" + home,
			// The VM is the sandbox: Claude Code's root check and prompts are moot.
			"IS_SANDBOX=1",
			"DISABLE_TELEMETRY=1", "DISABLE_ERROR_REPORTING=1", "DISABLE_AUTOUPDATER=1",
			"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
		},
	})
	if err != nil {
		return nil, err
	}
	p := &process{att: att, lines: make(chan []byte, 64), stderr: &invm.Tail{Max: 2 << 10}, exit: make(chan struct{})}
	go p.read()
	a.proc = p
	return p, nil
}

// drop forgets the current process, ending it: it failed, and the next
// turn starts a new conversation.
func (a *Agent) drop() {
	a.stopProc()
	a.sessionID, a.resume = "", ""
}

// stopProc ends the current process.
func (a *Agent) stopProc() {
	if a.proc != nil {
		a.proc.att.Close()
		a.proc = nil
	}
}

// Close ends the CLI and the proxy.
func (a *Agent) Close(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.proc; p != nil {
		_ = p.att.CloseStdin()
		select {
		case <-p.exit:
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
		}
		a.stopProc() // its conversation stays on disk, for ResumeState
	}
	if a.proxy != nil {
		a.proxy.Stop()
		a.proxy = nil
	}
	return nil
}

// read splits stdout into lines and keeps the end of stderr.
func (p *process) read() {
	defer close(p.exit)
	defer close(p.lines)
	var partial []byte
	for {
		f, err := p.att.Next()
		if err != nil {
			return
		}
		switch f.Type {
		case guest.FrameStdout:
			partial = append(partial, f.Data...)
			for {
				i := bytes.IndexByte(partial, '\n')
				if i < 0 {
					break
				}
				line := bytes.TrimSpace(partial[:i])
				partial = partial[i+1:]
				if len(line) > 0 {
					p.lines <- bytes.Clone(line)
				}
			}
			if len(partial) > maxLineBytes {
				partial = partial[:0] // an endless line is dropped, not buffered
			}
		case guest.FrameStderr:
			p.stderr.Write(f.Data)
		case guest.FrameExit, guest.FrameError:
			p.result = f.Result()
			return
		}
	}
}

func describeExit(r guest.ExecResult) string {
	if r.Signal != "" {
		return "killed by " + r.Signal
	}
	return "exit code " + strconv.Itoa(r.ExitCode)
}

func describeCause(ctx context.Context) string {
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		return c.Error()
	}
	return "turn cancelled"
}
