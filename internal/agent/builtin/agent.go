// Package builtin is the built-in agent: a loop on the host that streams a
// model's answer, runs the tools it asks for inside the session's sandbox, and
// feeds the results back until the model is done. Everything it does is
// reported as events; the conversation it resumes from is saved step by step.
package builtin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"charm.land/fantasy"
	"charm.land/fantasy/providers/anthropic"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm"
)

// Config is how a session's agent talks to its model.
type Config struct {
	LLM          llm.Config
	SystemPrompt string // the user's own instructions, added to the built-in prompt
	Temperature  *float64
	MaxTokens    *int64
	// MaxSteps bounds model calls per turn (default 50).
	MaxSteps int
	// ThinkingBudget enables Anthropic extended thinking with this many tokens; 0 is off.
	ThinkingBudget int64
	// MaxRetries is how often a model call that fails before streaming
	// anything is retried (429, 5xx, network); RetryBase is the first backoff
	// when the provider gives no Retry-After (default 1s).
	MaxRetries int
	RetryBase  time.Duration
}

// DefaultMaxSteps bounds a turn that never stops calling tools.
const DefaultMaxSteps = 50

// Runner is one session's agent. Turns run one at a time.
type Runner struct {
	cfg   Config
	model fantasy.LanguageModel
	price llm.Price

	mu      sync.Mutex
	history []fantasy.Message
}

// New builds a runner that continues the given stored history.
func New(ctx context.Context, cfg Config, history []json.RawMessage) (*Runner, error) {
	model, err := llm.NewModel(ctx, cfg.LLM)
	if err != nil {
		return nil, err
	}
	if cfg.MaxSteps <= 0 {
		cfg.MaxSteps = DefaultMaxSteps
	}
	r := &Runner{cfg: cfg, model: model, price: llm.PriceOf(cfg.LLM.Provider, cfg.LLM.Model)}
	for i, raw := range history {
		var m fantasy.Message
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("stored message %d: %w", i, err)
		}
		r.history = append(r.history, m)
	}
	return r, nil
}

// Turn answers one user message: model calls and tool calls until the model
// stops, the step limit is reached, the model call fails, or ctx ends. Model
// and tool failures become error_event events and Turn returns nil; an error
// return means events could not be recorded.
func (r *Runner) Turn(ctx context.Context, ws agent.Workspace, env agent.Environment, text string, sink agent.Sink) error {
	r.mu.Lock()
	defer r.mu.Unlock()

	if err := r.appendHistory(ctx, sink, fantasy.NewUserMessage(text)); err != nil {
		return err
	}
	t := &turn{runner: r, sink: sink, open: map[string]*block{}}
	model := llm.WithRetry(r.model, llm.RetryPolicy{Max: r.cfg.MaxRetries, Base: r.cfg.RetryBase, OnRetry: t.retry})
	agent := fantasy.NewAgent(model, r.agentOptions(ws, env)...)
	result, err := agent.Stream(ctx, t.streamCall())
	if t.emitErr != nil {
		return t.emitErr
	}
	// Events must be written even when the turn's context is cancelled.
	wctx := context.WithoutCancel(ctx)
	if err != nil {
		if ferr := t.flushOpen(); ferr != nil {
			return ferr
		}
		if ferr := t.closePending(); ferr != nil {
			return ferr
		}
		reason := r.cfg.LLM.APIKey.Scrub(describeError(ctx, err))
		if herr := r.noteInterruption(wctx, sink, t.partialText(), reason); herr != nil {
			return herr
		}
		kind := event.ErrorKindProvider
		if ctx.Err() != nil {
			kind = "" // cancelled or ended, not the provider's doing
		}
		return sink.Emit(wctx, event.Error, event.ErrorData{Message: reason, Kind: kind})
	}
	if n := len(result.Steps); n >= r.cfg.MaxSteps && result.Steps[n-1].FinishReason == fantasy.FinishReasonToolCalls {
		msg := fmt.Sprintf("The turn stopped after %d model calls, the per-turn limit. Send a message to let the agent continue.", n)
		if err := r.noteInterruption(wctx, sink, "", msg); err != nil {
			return err
		}
		return sink.Emit(wctx, event.Error, event.ErrorData{Message: msg})
	}
	if n := len(result.Steps); n > 0 && result.Steps[n-1].FinishReason == fantasy.FinishReasonLength {
		msg := "The model's answer was cut off at its output token limit. Send a message to let the agent continue."
		if err := r.noteInterruption(wctx, sink, "", msg); err != nil {
			return err
		}
		return sink.Emit(wctx, event.Error, event.ErrorData{Message: msg})
	}
	return nil
}

func (r *Runner) agentOptions(ws agent.Workspace, env agent.Environment) []fantasy.AgentOption {
	opts := []fantasy.AgentOption{
		fantasy.WithSystemPrompt(SystemPrompt(env, r.cfg.SystemPrompt)),
		fantasy.WithTools(newTools(ws)...),
		fantasy.WithStopConditions(fantasy.StepCountIs(r.cfg.MaxSteps)),
		fantasy.WithMaxRetries(0), // retried by llm.WithRetry instead
	}
	if r.cfg.Temperature != nil {
		opts = append(opts, fantasy.WithTemperature(*r.cfg.Temperature))
	}
	if r.cfg.MaxTokens != nil {
		opts = append(opts, fantasy.WithMaxOutputTokens(*r.cfg.MaxTokens))
	}
	if r.cfg.ThinkingBudget > 0 && r.cfg.LLM.Provider == llm.Anthropic {
		opts = append(opts, fantasy.WithProviderOptions(fantasy.ProviderOptions{
			anthropic.Name: &anthropic.ProviderOptions{
				Thinking: &anthropic.ThinkingProviderOption{BudgetTokens: r.cfg.ThinkingBudget},
			},
		}))
	}
	return opts
}

// refuseRepair keeps fantasy from "repairing" a tool call whose input is not
// valid JSON: by default it runs jsonrepair over it, which closes the strings
// of an input cut off at the output token limit, and the tool then runs a
// truncated command or writes a truncated file as if nothing were wrong.
// Refused, the call fails with the validation error and the model can retry.
// It goes in the AgentStreamCall: Agent.Stream (v0.41.2) ignores the
// WithRepairToolCall agent option.
func refuseRepair(context.Context, fantasy.ToolCallRepairOptions) (*fantasy.ToolCallContent, error) {
	return nil, errors.New("tool call repair is disabled")
}

// appendHistory saves messages and then keeps them for the next model call.
func (r *Runner) appendHistory(ctx context.Context, sink agent.Sink, msgs ...fantasy.Message) error {
	raw := make([]json.RawMessage, 0, len(msgs))
	for _, m := range msgs {
		b, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("encode message: %w", err)
		}
		raw = append(raw, b)
	}
	if err := sink.SaveMessages(ctx, raw); err != nil {
		return err
	}
	r.history = append(r.history, msgs...)
	return nil
}

// noteInterruption closes a turn that ended early so the conversation stays
// well formed for the next one: the model sees what it had said so far and why
// it was cut off, instead of two user messages in a row.
func (r *Runner) noteInterruption(ctx context.Context, sink agent.Sink, partial, reason string) error {
	note := fmt.Sprintf("[The turn ended early: %s]", reason)
	if partial != "" {
		note = partial + "\n\n" + note
	}
	return r.appendHistory(ctx, sink, fantasy.Message{
		Role:    fantasy.MessageRoleAssistant,
		Content: []fantasy.MessagePart{fantasy.TextPart{Text: note}},
	})
}

// describeError words a failed turn for the user. What a provider said is
// shown only as the message of a JSON error (see providerMessage), bounded.
func describeError(ctx context.Context, err error) string {
	if ctx.Err() != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			return cause.Error()
		}
		return "turn cancelled"
	}
	var pe *fantasy.ProviderError
	if errors.As(err, &pe) {
		msg := providerMessage(pe)
		switch {
		case pe.StatusCode == 401 || pe.StatusCode == 403:
			return fmt.Sprintf("the provider rejected the API key (HTTP %d): %s", pe.StatusCode, msg)
		case pe.StatusCode == 429:
			return fmt.Sprintf("the provider is rate limiting this key (HTTP 429): %s", msg)
		case pe.StatusCode >= 500:
			return fmt.Sprintf("the provider failed (HTTP %d): %s", pe.StatusCode, msg)
		case pe.StatusCode != 0:
			return fmt.Sprintf("the provider refused the request (HTTP %d): %s", pe.StatusCode, msg)
		}
		if pe.Title != "" {
			return "model call failed: " + pe.Title + ": " + msg
		}
		return "model call failed: " + msg
	}
	return "model call failed: " + llm.CleanMessage(err.Error())
}

// providerMessage is what the provider said, as a message fit to show: the
// message of its JSON error, cleaned and bounded. fantasy's Anthropic provider
// puts the SDK's whole error line in Message: `POST "https://…/v1/messages":
// 401 Unauthorized (Request-ID: …) {"type":"error","error":{"type":…,"message":…}}`;
// the message inside the JSON is the part meant for people. Its OpenAI
// provider puts the JSON's message there or, when it finds none, the whole
// body. The clients the server builds (llm.HTTPClient) cut every error
// answer down to its JSON message already; for any other client, an SDK
// error whose JSON held no message shows no body either.
func providerMessage(pe *fantasy.ProviderError) string {
	if i := strings.IndexByte(pe.Message, '{'); i >= 0 {
		if e, ok := llm.ParseError([]byte(pe.Message[i:])); ok {
			return e.Message
		}
	}
	// Both SDKs' HTTP errors keep the JSON they parsed (OpenAI's: the
	// "error" object; Anthropic's: the body).
	var sdk interface{ RawJSON() string }
	if errors.As(pe.Cause, &sdk) {
		if e, ok := llm.ParseError([]byte(sdk.RawJSON())); ok {
			return e.Message
		}
		return llm.NoErrorMessage
	}
	if msg := llm.CleanMessage(pe.Message); msg != "" {
		return msg
	}
	return llm.NoErrorMessage
}

func newID(prefix string) string {
	var b [8]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}
