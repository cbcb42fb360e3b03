package llmtest

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"charm.land/fantasy"
	"charm.land/fantasy/providers/anthropic"
	"charm.land/fantasy/providers/openai"
)

// The fakes driven through the real SDKs, by way of fantasy's providers.

type providerCase struct {
	name  string
	new   func(...Turn) *Server
	model func(t *testing.T, s *Server) fantasy.LanguageModel
}

var providers = []providerCase{
	{"anthropic", NewAnthropic, anthropicModel},
	{"openai", NewOpenAI, openaiModel},
}

func anthropicModel(t *testing.T, s *Server) fantasy.LanguageModel {
	t.Helper()
	p, err := anthropic.New(anthropic.WithAPIKey("k"), anthropic.WithBaseURL(s.BaseURL()))
	if err != nil {
		t.Fatal(err)
	}
	m, err := p.LanguageModel(t.Context(), "claude-sonnet-4-20250514")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func openaiModel(t *testing.T, s *Server) fantasy.LanguageModel {
	t.Helper()
	p, err := openai.New(openai.WithAPIKey("k"), openai.WithBaseURL(s.BaseURL()))
	if err != nil {
		t.Fatal(err)
	}
	m, err := p.LanguageModel(t.Context(), "gpt-4o")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var weatherTool = fantasy.FunctionTool{
	Name:        "weather",
	Description: "Get weather information for a location",
	InputSchema: map[string]any{
		"type":       "object",
		"properties": map[string]any{"location": map[string]any{"type": "string"}},
		"required":   []string{"location"},
	},
}

func userCall(prompt string) fantasy.Call {
	return fantasy.Call{
		Prompt: fantasy.Prompt{fantasy.NewUserMessage(prompt)},
		Tools:  []fantasy.Tool{weatherTool},
	}
}

// result is what a fantasy stream yielded, folded.
type result struct {
	text, reasoning string
	deltas          int
	signature       string
	calls           []fantasy.StreamPart
	finish          *fantasy.StreamPart
	err             error
}

func collect(t *testing.T, m fantasy.LanguageModel, ctx context.Context, call fantasy.Call) result {
	t.Helper()
	stream, err := m.Stream(ctx, call)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	var r result
	for p := range stream {
		r.add(p)
	}
	return r
}

func (r *result) add(p fantasy.StreamPart) {
	switch p.Type {
	case fantasy.StreamPartTypeTextDelta:
		r.text += p.Delta
		r.deltas++
	case fantasy.StreamPartTypeReasoningDelta:
		r.reasoning += p.Delta
	case fantasy.StreamPartTypeReasoningEnd:
		if md, ok := p.ProviderMetadata[anthropic.Name].(*anthropic.ReasoningOptionMetadata); ok {
			r.signature = md.Signature
		}
	case fantasy.StreamPartTypeToolCall:
		r.calls = append(r.calls, p)
	case fantasy.StreamPartTypeFinish:
		r.finish = &p
	case fantasy.StreamPartTypeError:
		r.err = p.Error
	}
}

func TestFantasyStream(t *testing.T) {
	for _, pc := range providers {
		t.Run(pc.name, func(t *testing.T) {
			turn := Turn{
				Thinking:          "The user wants the weather; I should call the tool.",
				Signature:         "c2lnbmF0dXJl",
				Text:              "Let me check the weather in Florence for you.",
				ToolCalls:         []ToolCall{{ID: "call_1", Name: "weather", Input: `{"location":"Florence, Italy"}`}},
				InputTokens:       321,
				OutputTokens:      54,
				CachedInputTokens: 100,
			}
			s := pc.new(turn).Attach(t)
			r := collect(t, pc.model(t, s), t.Context(), userCall("What's the weather in Florence?"))
			if r.err != nil {
				t.Fatalf("stream error: %v", r.err)
			}
			if r.text != turn.Text || r.deltas < 5 {
				t.Errorf("text %q in %d deltas, want %q in several", r.text, r.deltas, turn.Text)
			}
			if len(r.calls) != 1 || r.calls[0].ID != "call_1" || r.calls[0].ToolCallName != "weather" ||
				r.calls[0].ToolCallInput != turn.ToolCalls[0].Input {
				t.Errorf("tool calls %+v", r.calls)
			}
			if r.finish == nil {
				t.Fatal("no finish part")
			}
			if r.finish.FinishReason != fantasy.FinishReasonToolCalls {
				t.Errorf("finish reason %q", r.finish.FinishReason)
			}
			u := r.finish.Usage
			if u.InputTokens != 321 || u.OutputTokens != 54 || u.CacheReadTokens != 100 {
				t.Errorf("usage %s", u)
			}
			if pc.name == "anthropic" {
				if r.reasoning != turn.Thinking || r.signature != turn.Signature {
					t.Errorf("reasoning %q signature %q", r.reasoning, r.signature)
				}
				if u.TotalTokens != 321+54 {
					t.Errorf("total %d", u.TotalTokens)
				}
			} else if r.reasoning != "" || u.TotalTokens != 321+100+54 {
				t.Errorf("reasoning %q, total %d", r.reasoning, u.TotalTokens)
			}

			reqs := s.Requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests", len(reqs))
			}
			req := reqs[0]
			if req.JSON["stream"] != true {
				t.Errorf("request not streaming: %s", req.Body)
			}
			if pc.name == "anthropic" {
				if req.Path != "/v1/messages" || req.Header.Get("X-Api-Key") != "k" || req.Header.Get("Anthropic-Version") == "" {
					t.Errorf("request %s %v", req.Path, req.Header)
				}
			} else {
				opts, _ := req.JSON["stream_options"].(map[string]any)
				if req.Path != "/v1/chat/completions" || req.Header.Get("Authorization") != "Bearer k" || opts["include_usage"] != true {
					t.Errorf("request %s %v %s", req.Path, req.Header, req.Body)
				}
			}
		})
	}
}

// TestFantasyToolResultHistory checks the follow-up request carries the
// tool call and its result, as the agent loop will send them.
func TestFantasyToolResultHistory(t *testing.T) {
	for _, pc := range providers {
		t.Run(pc.name, func(t *testing.T) {
			s := pc.new(
				Turn{ToolCalls: []ToolCall{{Name: "weather", Input: `{"location":"Rome"}`}, {Name: "weather", Input: `{"location":"Oslo"}`}}},
				Turn{Text: "Hot in Rome, cold in Oslo."},
			).Attach(t)
			m := pc.model(t, s)
			call := userCall("Weather in Rome and Oslo?")
			first := collect(t, m, t.Context(), call)
			if first.err != nil || len(first.calls) != 2 || first.finish.FinishReason != fantasy.FinishReasonToolCalls {
				t.Fatalf("first turn: %+v", first)
			}
			assistant := fantasy.Message{Role: fantasy.MessageRoleAssistant}
			results := fantasy.Message{Role: fantasy.MessageRoleTool}
			for i, c := range first.calls {
				assistant.Content = append(assistant.Content, fantasy.ToolCallPart{ToolCallID: c.ID, ToolName: c.ToolCallName, Input: c.ToolCallInput})
				results.Content = append(results.Content, fantasy.ToolResultPart{
					ToolCallID: c.ID,
					Output:     fantasy.ToolResultOutputContentText{Text: []string{"40 C", "-5 C"}[i]},
				})
			}
			call.Prompt = append(call.Prompt, assistant, results)
			second := collect(t, m, t.Context(), call)
			if second.err != nil || second.text != "Hot in Rome, cold in Oslo." || second.finish.FinishReason != fantasy.FinishReasonStop {
				t.Fatalf("second turn: %+v", second)
			}
			body := string(s.Requests()[1].Body)
			for _, want := range []string{first.calls[0].ID, first.calls[1].ID, "40 C", "-5 C", "Oslo"} {
				if !strings.Contains(body, want) {
					t.Errorf("follow-up request lacks %q: %s", want, body)
				}
			}
		})
	}
}

func TestFantasyErrorReplies(t *testing.T) {
	for _, pc := range providers {
		for _, status := range []int{401, 429, 500} {
			t.Run(pc.name+"/"+strconv.Itoa(status), func(t *testing.T) {
				s := pc.new(Turn{Error: &ErrorReply{Status: status, Message: "scripted failure"}}).Attach(t)
				r := collect(t, pc.model(t, s), t.Context(), userCall("hi"))
				var pe *fantasy.ProviderError
				if !errors.As(r.err, &pe) {
					t.Fatalf("error %T %v, want *fantasy.ProviderError", r.err, r.err)
				}
				if pe.StatusCode != status || !strings.Contains(pe.Message, "scripted failure") {
					t.Errorf("status %d message %q", pe.StatusCode, pe.Message)
				}
				if pe.IsRetryable() != (status != 401) {
					t.Errorf("retryable = %v", pe.IsRetryable())
				}
			})
		}
	}
}

func TestFantasyMidStreamFailures(t *testing.T) {
	for _, pc := range providers {
		t.Run(pc.name+"/stream_error", func(t *testing.T) {
			s := pc.new(Turn{Text: "This answer will not finish.", StreamError: "Overloaded"}).Attach(t)
			r := collect(t, pc.model(t, s), t.Context(), userCall("hi"))
			var pe *fantasy.ProviderError
			if !errors.As(r.err, &pe) || !strings.Contains(pe.Message, "Overloaded") || !pe.IsRetryable() {
				t.Fatalf("error %T %v", r.err, r.err)
			}
			if r.text == "" || r.text == "This answer will not finish." || r.finish != nil {
				t.Errorf("text %q finish %v: want a partial text and no finish", r.text, r.finish)
			}
		})
		t.Run(pc.name+"/hangup", func(t *testing.T) {
			s := pc.new(Turn{Text: "This answer will not finish either.", Hangup: true}).Attach(t)
			r := collect(t, pc.model(t, s), t.Context(), userCall("hi"))
			var pe *fantasy.ProviderError
			if !errors.As(r.err, &pe) || !pe.IsRetryable() {
				t.Fatalf("error %T %v", r.err, r.err)
			}
			if r.finish != nil {
				t.Error("finish after hangup")
			}
		})
	}
}

func TestFantasyNoTurnLeft(t *testing.T) {
	for _, pc := range providers {
		t.Run(pc.name, func(t *testing.T) {
			s := pc.new()
			defer s.Close()
			r := collect(t, pc.model(t, s), t.Context(), userCall("hi"))
			var pe *fantasy.ProviderError
			if !errors.As(r.err, &pe) || pe.StatusCode != 500 || !strings.Contains(pe.Message, "llmtest: no scripted turn left") {
				t.Fatalf("error %T %v", r.err, r.err)
			}
		})
	}
}

func TestFantasyRequireKey(t *testing.T) {
	for _, pc := range providers {
		t.Run(pc.name, func(t *testing.T) {
			s := pc.new(Turn{Text: "ok"}).Attach(t)
			s.RequireKey("other")
			r := collect(t, pc.model(t, s), t.Context(), userCall("hi"))
			var pe *fantasy.ProviderError
			if !errors.As(r.err, &pe) || pe.StatusCode != 401 {
				t.Fatalf("error %T %v", r.err, r.err)
			}
			if s.Pending() != 1 {
				t.Error("a rejected request consumed the turn")
			}
			s.RequireKey("k")
			if r := collect(t, pc.model(t, s), t.Context(), userCall("hi")); r.err != nil || r.text != "ok" {
				t.Errorf("with the right key: %+v", r)
			}
		})
	}
}

func TestFantasyGenerate(t *testing.T) {
	for _, pc := range providers {
		t.Run(pc.name, func(t *testing.T) {
			s := pc.new(Turn{
				Text: "Checking.", ToolCalls: []ToolCall{{Name: "weather", Input: `{"location":"Nice"}`}},
				InputTokens: 10, OutputTokens: 5,
			}).Attach(t)
			resp, err := pc.model(t, s).Generate(t.Context(), userCall("hi"))
			if err != nil {
				t.Fatal(err)
			}
			calls := resp.Content.ToolCalls()
			if resp.Content.Text() != "Checking." || len(calls) != 1 || calls[0].Input != `{"location":"Nice"}` ||
				resp.FinishReason != fantasy.FinishReasonToolCalls || resp.Usage.InputTokens != 10 || resp.Usage.OutputTokens != 5 {
				t.Errorf("response %+v", resp)
			}
		})
	}
}

// TestFantasyGate holds a stream after its first text delta, then either
// releases it or cancels the caller.
func TestFantasyGate(t *testing.T) {
	const text = "One, two, three, four, five, six."
	for _, pc := range providers {
		t.Run(pc.name+"/release", func(t *testing.T) {
			gate := make(chan struct{})
			s := pc.new(Turn{Text: text, Gate: gate}).Attach(t)
			parts := streamParts(t, pc.model(t, s), t.Context())
			first := waitFor(t, parts, fantasy.StreamPartTypeTextDelta)
			select {
			case p, ok := <-parts:
				if ok {
					t.Fatalf("part %s %q arrived while gated", p.Type, p.Delta)
				}
				t.Fatal("stream ended while gated")
			case <-time.After(100 * time.Millisecond):
			}
			close(gate)
			r := result{text: first.Delta}
			for p := range parts {
				r.add(p)
			}
			if r.err != nil || r.text != text || r.finish == nil {
				t.Errorf("after release: %+v", r)
			}
		})
		t.Run(pc.name+"/cancel", func(t *testing.T) {
			gate := make(chan struct{})
			defer close(gate)
			s := pc.new(Turn{Text: text, Gate: gate}).Attach(t)
			ctx, cancel := context.WithCancel(t.Context())
			parts := streamParts(t, pc.model(t, s), ctx)
			waitFor(t, parts, fantasy.StreamPartTypeTextDelta)
			cancel()
			var r result
			for p := range parts {
				r.add(p)
			}
			if !errors.Is(r.err, context.Canceled) || r.finish != nil {
				t.Errorf("after cancel: err %v finish %v", r.err, r.finish)
			}
		})
		t.Run(pc.name+"/close_while_gated", func(t *testing.T) {
			s := pc.new(Turn{Text: text, Gate: make(chan struct{})})
			parts := streamParts(t, pc.model(t, s), t.Context())
			waitFor(t, parts, fantasy.StreamPartTypeTextDelta)
			done := make(chan struct{})
			go func() { s.Close(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Close hangs on a gated stream")
			}
			var r result
			for p := range parts {
				r.add(p)
			}
			if r.err == nil || r.finish != nil {
				t.Errorf("stream cut by Close: err %v finish %v", r.err, r.finish)
			}
		})
	}
}

func streamParts(t *testing.T, m fantasy.LanguageModel, ctx context.Context) <-chan fantasy.StreamPart {
	t.Helper()
	stream, err := m.Stream(ctx, userCall("count"))
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan fantasy.StreamPart)
	go func() {
		defer close(ch)
		for p := range stream {
			ch <- p
		}
	}()
	return ch
}

func waitFor(t *testing.T, parts <-chan fantasy.StreamPart, typ fantasy.StreamPartType) fantasy.StreamPart {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case p, ok := <-parts:
			if !ok {
				t.Fatalf("stream ended before a %s part", typ)
			}
			if p.Type == typ {
				return p
			}
		case <-timeout:
			t.Fatalf("no %s part", typ)
		}
	}
}
