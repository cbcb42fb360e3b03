// Package nullclaw drives the nullclaw agent (github.com/nullclaw/nullclaw, a
// static Zig binary) inside a session's sandbox: it renders nullclaw's
// config, starts its gateway, and runs each turn as one A2A message/stream
// call (package a2a has the wire protocol), turning what nullclaw streams
// into ExeClaw's session events.
//
// NOTES.md in this directory says what was read in nullclaw's source and
// docs, what is inferred, and what is still unverified.
package nullclaw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"sync"
	"time"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/agent/invm"
	"github.com/execlaw/execlaw/internal/agent/nullclaw/a2a"
	"github.com/execlaw/execlaw/internal/credproxy"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/llm"
)

// Ports nullclaw uses inside the VM: the credential proxy's tunnel and its
// own gateway. Both are on the guest's loopback only.
const (
	proxyPort   = 4002
	gatewayPort = 4100
	// defaultBinary is where the image build installs nullclaw.
	defaultBinary = "/usr/local/bin/nullclaw"
	// binaryEnv, when set on the host, replaces defaultBinary as the
	// default of AgentConfig.Binary: the path, inside the sandbox, of the
	// nullclaw executable. With the process driver the sandbox is the
	// host's own filesystem, so this is how a host without
	// /usr/local/bin/nullclaw (or a test, with a stand-in) points sessions
	// at another executable.
	binaryEnv = "EXECLAW_NULLCLAW_BIN"
	// stateDirName is the directory, next to the workspace, that holds
	// nullclaw's config.json (in .nullclaw/) and whatever it keeps in HOME.
	stateDirName = ".execlaw-nullclaw"
)

// stateDir is where a session's nullclaw keeps its config and memory: next
// to the workspace, never inside it. In a VM (workspace /workspace) that is
// /.execlaw-nullclaw; with the process driver it is inside the session's
// sandbox directory, so it is private to the session and goes with it.
func stateDir(workspace string) string {
	return path.Join(path.Dir(path.Clean(workspace)), stateDirName)
}

// AgentConfig is how a session's nullclaw runs.
type AgentConfig struct {
	LLM          llm.Config
	SystemPrompt string
	Temperature  *float64
	MaxTokens    int
	// Binary is nullclaw inside the guest; default $EXECLAW_NULLCLAW_BIN
	// on the host, else /usr/local/bin/nullclaw, where the image build
	// installs it.
	Binary string
	// StartTimeout bounds waiting for the gateway to answer (default 60s).
	StartTimeout time.Duration
	Logger       *slog.Logger
	// ResumeContext, when set, is the A2A conversation to go on with: the
	// one it had when its session was paused (nullclaw keeps it in its
	// state directory, on the VM's disk).
	ResumeContext string
}

// Agent is nullclaw as a session's agent: its gateway runs in the VM, and
// each turn is one A2A message/stream request to it, reached through the
// control channel. Its model calls go through the host's credential proxy.
type Agent struct {
	cfg AgentConfig
	log *slog.Logger

	mu        sync.Mutex // one turn at a time; guards the fields below
	proxy     *invm.Proxy
	gateway   *guest.Attached
	gwOut     *invm.Tail
	gwDone    chan struct{}
	hc        *http.Client // reaches the gateway through the guest's port forward
	client    *a2a.Client
	contextID string
}

var _ agent.Agent = (*Agent)(nil)

// NewAgent checks cfg.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	switch cfg.LLM.Provider {
	case llm.Anthropic, llm.OpenAI, llm.OpenRouter, llm.OpenAICompatible:
	default:
		return nil, fmt.Errorf("nullclaw cannot use provider %q", cfg.LLM.Provider)
	}
	if cfg.Binary == "" {
		cfg.Binary = os.Getenv(binaryEnv)
	}
	if cfg.Binary == "" {
		cfg.Binary = defaultBinary
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{cfg: cfg, log: log}
	if a2a.ValidContextID(cfg.ResumeContext) {
		a.contextID = cfg.ResumeContext
	}
	return a, nil
}

// Turn sends one message to nullclaw and maps its task stream to events.
func (a *Agent) Turn(ctx context.Context, ws agent.Workspace, env agent.Environment, text string, sink agent.Sink) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.ensure(ctx, ws, sink); err != nil {
		msg := "could not start nullclaw in the sandbox: " + err.Error()
		if ctx.Err() != nil {
			msg = describeCause(ctx) + " while nullclaw was starting"
		} else if a.gwOut != nil && a.gwOut.String() != "" {
			msg += " (" + a.gwOut.String() + ")"
		}
		a.stopGateway()
		return sink.Emit(context.WithoutCancel(ctx), event.Error, event.ErrorData{Message: msg})
	}
	// The usage of the turn's last model call is in before the turn ends.
	defer a.proxy.Settle(context.WithoutCancel(ctx))
	out, err := runTurn(ctx, a.client, sink, a.contextID, text, turnOptions{})
	if err != nil {
		return err
	}
	switch {
	case ctx.Err() != nil && out.Err == nil && out.State != a2a.StateCompleted:
		// Cut short by the user or the session's end. runTurn reports no
		// error for that (the caller says why), so say it here, as the
		// other agents do.
		msg := describeCause(ctx)
		if out.TaskID != "" && !out.State.Terminal() {
			// nullclaw did not end the task within the grace (a tool that
			// does not notice the interrupt, a hung gateway): it may still
			// run tools. Stopping the gateway stops them; the next turn
			// starts a new one.
			a.stopGateway()
			msg += "; nullclaw did not end the task in time and was stopped (the next message starts it again)"
		}
		return sink.Emit(context.WithoutCancel(ctx), event.Error, event.ErrorData{Message: msg})
	case out.Err != nil && a.gatewayGone():
		// The gateway died with the turn; the next turn starts it again.
		a.stopGateway()
	}
	return nil
}

func describeCause(ctx context.Context) string {
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		return c.Error()
	}
	return "turn cancelled"
}

// ensure starts the proxy and the gateway if they are not running.
func (a *Agent) ensure(ctx context.Context, ws agent.Workspace, sink agent.Sink) error {
	g := ws.Guest()
	if a.proxy == nil {
		p, err := invm.StartProxy(ctx, g, proxyPort, a.cfg.LLM, a.log)
		if err != nil {
			return err
		}
		a.proxy = p
	}
	a.proxy.SetSink(sink)
	if a.client != nil && !a.gatewayGone() {
		return nil
	}
	a.stopGateway()

	base := fmt.Sprintf("http://127.0.0.1:%d", proxyPort)
	if a.cfg.LLM.Provider != llm.Anthropic {
		base += "/v1" // nullclaw appends /chat/completions
	}
	gwToken := credproxy.NewToken()
	cfg := Config{
		Provider: a.cfg.LLM.Provider, BaseURL: base, APIKey: a.proxy.Token, Model: a.cfg.LLM.Model,
		SystemPrompt: a.cfg.SystemPrompt, Workspace: ws.Workspace(), GatewayPort: gatewayPort,
		GatewayToken: gwToken, Temperature: a.cfg.Temperature, MaxTokens: a.cfg.MaxTokens,
	}
	launch, err := cfg.launch(a.cfg.Binary, stateDir(ws.Workspace()))
	if err != nil {
		return err
	}
	for _, f := range launch.Files {
		if f.KeepExisting {
			if _, err := g.Stat(ctx, f.Path); err == nil {
				continue
			}
		}
		if err := g.Write(ctx, guest.WriteRequest{Path: f.Path, Data: f.Data, Mode: uint32(f.Perm)}); err != nil {
			return fmt.Errorf("write %s: %w", f.Path, err)
		}
	}
	att, err := g.Attach(ctx, guest.ExecRequest{Argv: launch.Argv, Env: launch.Env, Dir: ws.Workspace()})
	if err != nil {
		return err
	}
	a.gateway, a.gwOut, a.gwDone = att, &invm.Tail{Max: 2 << 10}, make(chan struct{})
	go drain(att, a.gwOut, a.gwDone)

	// The gateway listens on the guest's loopback; the host reaches it
	// through the control channel.
	a.hc = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return g.Forward(ctx, gatewayPort)
		},
		DisableCompression: true,
	}}
	a.client = a2a.NewClient(launch.BaseURL, a.hc, gwToken)
	if err := a.waitHealthy(ctx); err != nil {
		return err
	}
	if a.contextID == "" {
		a.contextID = "execlaw-" + credproxy.NewToken()[:24]
	}
	return nil
}

// resumeState is what a paused session keeps of nullclaw.
type resumeState struct {
	ContextID string `json:"contextId"`
}

// ResumeState is the conversation to go on with after a pause.
func (a *Agent) ResumeState() json.RawMessage {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.contextID == "" {
		return nil
	}
	b, _ := json.Marshal(resumeState{ContextID: a.contextID})
	return b
}

func (a *Agent) waitHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.StartTimeout)
	defer cancel()
	for {
		hctx, hcancel := context.WithTimeout(ctx, 2*time.Second)
		err := a.client.Health(hctx)
		hcancel()
		if err == nil {
			return nil
		}
		select {
		case <-a.gwDone:
			return errors.New("the nullclaw gateway exited")
		case <-ctx.Done():
			return fmt.Errorf("the nullclaw gateway did not answer within %s: %w", a.cfg.StartTimeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (a *Agent) gatewayGone() bool {
	if a.gwDone == nil {
		return true
	}
	select {
	case <-a.gwDone:
		return true
	default:
		return false
	}
}

// stopKillWait bounds waiting for a killed gateway to be reported gone.
const stopKillWait = 5 * time.Second

// stopGateway kills the gateway's process group (its tools too) and waits,
// briefly, until the guest reports it gone, so that its port is free for
// the next gateway.
func (a *Agent) stopGateway() {
	if a.gateway != nil {
		if a.gateway.Signal(guest.SignalKill) == nil {
			select {
			case <-a.gwDone:
			case <-time.After(stopKillWait):
				a.log.Warn("the nullclaw gateway did not exit after SIGKILL")
			}
		}
		a.gateway.Close()
		a.gateway = nil
	}
	if a.hc != nil {
		// Idle keep-alive connections would hold forwarded connections
		// (and their goroutines) open for a gateway that is gone.
		a.hc.CloseIdleConnections()
		a.hc = nil
	}
	a.client = nil
}

// Close ends the gateway and the proxy.
func (a *Agent) Close(context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopGateway()
	if a.proxy != nil {
		a.proxy.Stop()
		a.proxy = nil
	}
	return nil
}

// drain keeps the gateway's output tail until it exits.
func drain(att *guest.Attached, tail *invm.Tail, done chan struct{}) {
	defer close(done)
	for {
		f, err := att.Next()
		if err != nil {
			return
		}
		switch f.Type {
		case guest.FrameStdout, guest.FrameStderr:
			tail.Write(f.Data)
		case guest.FrameExit, guest.FrameError:
			return
		}
	}
}
