package builtin

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"charm.land/fantasy"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/event"
)

// turn turns one fantasy agent stream into session events.
type turn struct {
	runner *Runner
	sink   agent.Sink

	// Stream callbacks run on fantasy's stream goroutine; tool results may
	// arrive from its tool goroutines, so shared state is guarded.
	mu       sync.Mutex
	open     map[string]*block // blocks being streamed, by fantasy part kind+id
	stepText strings.Builder   // text finished in the current step, not yet saved to history
	pending  []pendingCall     // tool calls announced that have no result yet
	emitErr  error
}

type pendingCall struct{ id, name string }

// block is a text or thinking block being streamed.
type block struct {
	id       string // our message id, unique across the session
	thinking bool
	text     strings.Builder
}

// Emitting must not stop when the turn is cancelled: the events that close a
// turn are written after its context has ended.
var emitCtx = context.Background()

func (t *turn) emit(typ string, data any) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.emitLocked(typ, data)
}

func (t *turn) emitLocked(typ string, data any) error {
	if t.emitErr != nil {
		return t.emitErr
	}
	if err := t.sink.Emit(emitCtx, typ, data); err != nil {
		t.emitErr = err
		return err
	}
	return nil
}

func (t *turn) streamCall() fantasy.AgentStreamCall {
	r := t.runner
	return fantasy.AgentStreamCall{
		Messages:         r.history,
		OnTextStart:      func(id string) error { t.start("t"+id, false); return nil },
		OnTextDelta:      func(id, text string) error { return t.delta("t"+id, false, text) },
		OnTextEnd:        func(id string) error { return t.end("t" + id) },
		OnReasoningStart: t.reasoningStart,
		OnReasoningDelta: func(id, text string) error { return t.delta("r"+id, true, text) },
		OnReasoningEnd:   func(id string, _ fantasy.ReasoningContent) error { return t.end("r" + id) },
		OnToolCall:       t.toolCall,
		OnToolResult:     t.toolResult,
		OnStepFinish:     t.stepFinish,
		RepairToolCall:   refuseRepair,
	}
}

func (t *turn) start(key string, thinking bool) *block {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := &block{id: newID("msg_"), thinking: thinking}
	t.open[key] = b
	return b
}

func (t *turn) reasoningStart(id string, rc fantasy.ReasoningContent) error {
	t.start("r"+id, true)
	if rc.Text != "" {
		return t.delta("r"+id, true, rc.Text)
	}
	return nil
}

func (t *turn) delta(key string, thinking bool, text string) error {
	if text == "" {
		return nil
	}
	t.mu.Lock()
	b, ok := t.open[key]
	if !ok { // a provider that streams without announcing the block first
		b = &block{id: newID("msg_"), thinking: thinking}
		t.open[key] = b
	}
	b.text.WriteString(text)
	t.mu.Unlock()
	typ := event.MessageDelta
	if thinking {
		typ = event.ThinkingDelta
	}
	return t.emit(typ, event.DeltaData{MessageID: b.id, Text: text})
}

func (t *turn) end(key string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	b, ok := t.open[key]
	if !ok {
		return nil
	}
	delete(t.open, key)
	if !b.thinking {
		t.stepText.WriteString(b.text.String())
	}
	return t.finishLocked(b)
}

// finishLocked emits the complete block after its deltas.
func (t *turn) finishLocked(b *block) error {
	if b.text.Len() == 0 {
		return nil
	}
	typ := event.Message
	if b.thinking {
		typ = event.Thinking
	}
	return t.emitLocked(typ, event.MessageData{MessageID: b.id, Role: "assistant", Content: b.text.String()})
}

// flushOpen completes blocks a failed or cancelled stream left open, so every
// run of deltas in the log ends with its complete message.
func (t *turn) flushOpen() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for key, b := range t.open {
		delete(t.open, key)
		if !b.thinking {
			t.stepText.WriteString(b.text.String())
		}
		if err := t.finishLocked(b); err != nil {
			return err
		}
	}
	return t.emitErr
}

// partialText is the assistant text of the unfinished step.
func (t *turn) partialText() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stepText.String()
}

func (t *turn) toolCall(tc fantasy.ToolCallContent) error {
	t.mu.Lock()
	t.pending = append(t.pending, pendingCall{tc.ToolCallID, tc.ToolName})
	t.mu.Unlock()
	return t.emit(event.ToolCall, event.ToolCallData{ID: tc.ToolCallID, Name: tc.ToolName, Input: inputJSON(tc.Input)})
}

func (t *turn) toolResult(res fantasy.ToolResultContent) error {
	data := event.ToolResultData{ID: res.ToolCallID, Name: res.ToolName}
	switch out := res.Result.(type) {
	case fantasy.ToolResultOutputContentText:
		data.Output = out.Text
	case fantasy.ToolResultOutputContentError:
		data.IsError = true
		if out.Error != nil {
			data.Output = out.Error.Error()
		}
	case fantasy.ToolResultOutputContentMedia:
		data.Output = fmt.Sprintf("[%s media, %d bytes base64] %s", out.MediaType, len(out.Data), out.Text)
	default:
		data.IsError = true
		data.Output = fmt.Sprintf("unexpected tool result type %T", res.Result)
	}
	if res.ClientMetadata != "" {
		var meta toolMeta
		if json.Unmarshal([]byte(res.ClientMetadata), &meta) == nil {
			data.ExitCode, data.DurationMs, data.Truncated = meta.ExitCode, meta.DurationMs, meta.Truncated
		}
	}
	data.Output, _ = truncateMiddle(data.Output, MaxToolOutput)
	t.mu.Lock()
	t.pending = slices.DeleteFunc(t.pending, func(c pendingCall) bool { return c.id == res.ToolCallID })
	t.mu.Unlock()
	return t.emit(event.ToolResult, data)
}

// closePending gives a result to every tool call that was announced but never
// ran, because the model's stream failed or the turn was cancelled after the
// call had streamed, so no call is left open in the log.
func (t *turn) closePending() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.pending {
		if err := t.emitLocked(event.ToolResult, event.ToolResultData{
			ID: c.id, Name: c.name, IsError: true,
			Output: "not run: the turn ended before this tool call could run",
		}); err != nil {
			return err
		}
	}
	t.pending = nil
	return t.emitErr
}

func (t *turn) stepFinish(step fantasy.StepResult) error {
	r := t.runner
	if err := r.appendHistory(emitCtx, t.sink, step.Messages...); err != nil {
		t.mu.Lock()
		t.emitErr = err
		t.mu.Unlock()
		return err
	}
	t.mu.Lock()
	t.stepText.Reset()
	t.mu.Unlock()

	u := step.Usage
	call := event.UsageTotals{
		InputTokens:  u.InputTokens + u.CacheCreationTokens + u.CacheReadTokens,
		OutputTokens: u.OutputTokens,
		CostUSD:      r.price.Cost(u.InputTokens, u.OutputTokens, u.CacheCreationTokens, u.CacheReadTokens),
	}
	total, err := t.sink.AddUsage(emitCtx, call)
	if err != nil {
		// fantasy ignores what OnStepFinish returns: keep the failure for Turn.
		t.mu.Lock()
		if t.emitErr == nil {
			t.emitErr = err
		}
		t.mu.Unlock()
		return err
	}
	return t.emit(event.Usage, event.UsageData{
		InputTokens: call.InputTokens, OutputTokens: call.OutputTokens, CostUSD: call.CostUSD, Total: total,
	})
}

// retry tells the user a model call failed and will be tried again.
func (t *turn) retry(err error, wait time.Duration) {
	msg := describeError(context.Background(), err)
	msg = t.runner.cfg.LLM.APIKey.Scrub(fmt.Sprintf("%s; retrying in %s", msg, wait.Round(time.Millisecond)))
	_ = t.emit(event.Error, event.ErrorData{Message: msg, Kind: event.ErrorKindProviderRetry})
}
