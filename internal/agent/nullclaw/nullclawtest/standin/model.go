package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// message is one entry of a conversation, in neither provider's format.
type message struct {
	Role        string // "user", "assistant" or "tool" (the results of the assistant's calls)
	Text        string
	ToolCalls   []toolCall
	ToolResults []toolResult
}

type toolCall struct {
	ID    string
	Name  string
	Input json.RawMessage
}

type toolResult struct {
	CallID  string
	Output  string
	IsError bool
}

// tool is a tool offered to the model.
type tool struct {
	Name        string
	Description string
	Schema      json.RawMessage
}

// modelRequest is one call: the system prompt, the conversation, the tools.
type modelRequest struct {
	System   string
	Messages []message
	Tools    []tool
}

// model calls the configured provider with stream:true and hands each text
// delta to onText as it arrives. It returns the assistant's message.
type model struct {
	cfg *config
	hc  *http.Client
	log *eventLog
}

func newModel(cfg *config, log *eventLog) *model {
	return &model{cfg: cfg, log: log, hc: &http.Client{Transport: &http.Transport{
		Proxy:                 nil, // the provider is the credential proxy on the loopback
		ResponseHeaderTimeout: 5 * time.Minute,
		DisableCompression:    true,
	}}}
}

// maxErrorBody bounds what is kept of a provider's error answer.
const maxErrorBody = 4 << 10

func (m *model) call(ctx context.Context, req modelRequest, onText func(string)) (message, error) {
	var (
		url  string
		body []byte
		err  error
		hdr  = http.Header{"Content-Type": {"application/json"}}
	)
	switch m.cfg.Dialect {
	case dialectAnthropic:
		// AnthropicProvider: base_url + "/v1/messages", x-api-key (a setup
		// token "sk-ant-oat01-…" goes as a Bearer token), anthropic-version.
		url = m.cfg.BaseURL + "/v1/messages"
		if strings.HasPrefix(m.cfg.APIKey, "sk-ant-oat01-") {
			hdr.Set("Authorization", "Bearer "+m.cfg.APIKey)
		} else {
			hdr.Set("X-Api-Key", m.cfg.APIKey)
		}
		hdr.Set("Anthropic-Version", "2023-06-01")
		body, err = m.anthropicBody(req)
	default:
		// OpenAiCompatibleProvider: base_url + "/chat/completions", Bearer.
		url = m.cfg.BaseURL + "/chat/completions"
		if m.cfg.APIKey != "" {
			hdr.Set("Authorization", "Bearer "+m.cfg.APIKey)
		}
		body, err = m.openaiBody(req)
	}
	if err != nil {
		return message{}, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return message{}, err
	}
	hreq.Header = hdr
	hreq.Header.Set("Accept", "text/event-stream")
	resp, err := m.hc.Do(hreq)
	if err != nil {
		m.log.add("model_call", map[string]any{"url": url, "error": err.Error()})
		return message{}, err
	}
	defer resp.Body.Close()
	m.log.add("model_call", map[string]any{"url": url, "status": resp.StatusCode})
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return message{}, fmt.Errorf("%s answered %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	if m.cfg.Dialect == dialectAnthropic {
		return readAnthropic(resp.Body, onText)
	}
	return readOpenAI(resp.Body, onText)
}

func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

func inputOrEmpty(in json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(in)) == 0 || !json.Valid(in) {
		return json.RawMessage(`{}`)
	}
	return in
}

func (m *model) anthropicBody(req modelRequest) ([]byte, error) {
	type block map[string]any
	msgs := []map[string]any{}
	for _, msg := range req.Messages {
		switch msg.Role {
		case "user":
			msgs = append(msgs, map[string]any{"role": "user", "content": msg.Text})
		case "assistant":
			content := []block{}
			if msg.Text != "" {
				content = append(content, block{"type": "text", "text": msg.Text})
			}
			for _, tc := range msg.ToolCalls {
				content = append(content, block{"type": "tool_use", "id": tc.ID, "name": tc.Name, "input": inputOrEmpty(tc.Input)})
			}
			msgs = append(msgs, map[string]any{"role": "assistant", "content": content})
		case "tool":
			content := []block{}
			for _, r := range msg.ToolResults {
				b := block{"type": "tool_result", "tool_use_id": r.CallID, "content": r.Output}
				if r.IsError {
					b["is_error"] = true
				}
				content = append(content, b)
			}
			msgs = append(msgs, map[string]any{"role": "user", "content": content})
		}
	}
	body := map[string]any{
		"model":       m.cfg.Model,
		"max_tokens":  m.cfg.MaxTokens,
		"messages":    msgs,
		"temperature": m.cfg.Temperature,
		"stream":      true,
	}
	if req.System != "" {
		body["system"] = req.System
	}
	if len(req.Tools) > 0 {
		var tools []block
		for _, t := range req.Tools {
			tools = append(tools, block{"name": t.Name, "description": t.Description, "input_schema": t.Schema})
		}
		body["tools"] = tools
	}
	return marshal(body)
}

func (m *model) openaiBody(req modelRequest) ([]byte, error) {
	msgs := []map[string]any{}
	if req.System != "" {
		msgs = append(msgs, map[string]any{"role": "system", "content": req.System})
	}
	for _, msg := range req.Messages {
		switch msg.Role {
		case "user":
			msgs = append(msgs, map[string]any{"role": "user", "content": msg.Text})
		case "assistant":
			am := map[string]any{"role": "assistant", "content": nil}
			if msg.Text != "" {
				am["content"] = msg.Text
			}
			if len(msg.ToolCalls) > 0 {
				var calls []map[string]any
				for _, tc := range msg.ToolCalls {
					calls = append(calls, map[string]any{"id": tc.ID, "type": "function",
						"function": map[string]any{"name": tc.Name, "arguments": string(inputOrEmpty(tc.Input))}})
				}
				am["tool_calls"] = calls
			}
			msgs = append(msgs, am)
		case "tool":
			for _, r := range msg.ToolResults {
				msgs = append(msgs, map[string]any{"role": "tool", "tool_call_id": r.CallID, "content": r.Output})
			}
		}
	}
	body := map[string]any{
		"model":       m.cfg.Model,
		"messages":    msgs,
		"temperature": m.cfg.Temperature,
		"max_tokens":  m.cfg.MaxTokens,
		// buildStreamingChatRequestBody ends with these two.
		"stream":         true,
		"stream_options": map[string]any{"include_usage": true},
	}
	if len(req.Tools) > 0 {
		var tools []map[string]any
		for _, t := range req.Tools {
			tools = append(tools, map[string]any{"type": "function",
				"function": map[string]any{"name": t.Name, "description": t.Description, "parameters": t.Schema}})
		}
		body["tools"] = tools
		body["tool_choice"] = "auto"
	}
	return marshal(body)
}

// sseEvent is one server-sent event: its name (may be empty) and data.
type sseEvent struct {
	name string
	data []byte
}

// readSSE calls fn for each event of r until fn says done, or r ends.
func readSSE(r io.Reader, fn func(sseEvent) (done bool, err error)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	var ev sseEvent
	var data [][]byte
	for sc.Scan() {
		line := bytes.TrimRight(sc.Bytes(), "\r")
		switch {
		case len(line) == 0:
			if ev.name == "" && len(data) == 0 {
				continue
			}
			ev.data = bytes.Join(data, []byte("\n"))
			done, err := fn(ev)
			if err != nil || done {
				return err
			}
			ev, data = sseEvent{}, nil
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("event:")):
			ev.name = string(bytes.TrimSpace(line[len("event:"):]))
		case bytes.HasPrefix(line, []byte("data:")):
			d := line[len("data:"):]
			if len(d) > 0 && d[0] == ' ' {
				d = d[1:]
			}
			data = append(data, bytes.Clone(d))
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}

// readAnthropic reads a Messages API stream: text deltas as they come, tool
// use blocks with their streamed JSON input, until message_stop.
func readAnthropic(r io.Reader, onText func(string)) (message, error) {
	reply := message{Role: "assistant"}
	type open struct {
		kind  string
		call  toolCall
		input strings.Builder
	}
	blocks := map[int]*open{}
	var text strings.Builder
	err := readSSE(r, func(ev sseEvent) (bool, error) {
		var e struct {
			Type         string `json:"type"`
			Index        int    `json:"index"`
			ContentBlock struct {
				Type string `json:"type"`
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"content_block"`
			Delta struct {
				Type        string `json:"type"`
				Text        string `json:"text"`
				PartialJSON string `json:"partial_json"`
			} `json:"delta"`
			Error struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(ev.data, &e); err != nil {
			return false, fmt.Errorf("anthropic stream: bad event %.200q: %w", ev.data, err)
		}
		switch e.Type {
		case "content_block_start":
			b := &open{kind: e.ContentBlock.Type}
			if b.kind == "tool_use" {
				b.call = toolCall{ID: e.ContentBlock.ID, Name: e.ContentBlock.Name}
			}
			blocks[e.Index] = b
		case "content_block_delta":
			b := blocks[e.Index]
			if b == nil {
				return false, fmt.Errorf("anthropic stream: delta for block %d that never started", e.Index)
			}
			switch e.Delta.Type {
			case "text_delta":
				text.WriteString(e.Delta.Text)
				onText(e.Delta.Text)
			case "input_json_delta":
				b.input.WriteString(e.Delta.PartialJSON)
			}
		case "content_block_stop":
			if b := blocks[e.Index]; b != nil && b.kind == "tool_use" {
				b.call.Input = json.RawMessage(b.input.String())
				reply.ToolCalls = append(reply.ToolCalls, b.call)
			}
		case "message_stop":
			return true, nil
		case "error":
			return false, fmt.Errorf("anthropic stream: %s: %s", e.Error.Type, e.Error.Message)
		}
		return false, nil
	})
	if err != nil {
		return message{}, err
	}
	reply.Text = text.String()
	return reply, nil
}

// readOpenAI reads a chat completions stream: content deltas as they come,
// tool calls assembled by index, until [DONE].
func readOpenAI(r io.Reader, onText func(string)) (message, error) {
	reply := message{Role: "assistant"}
	var text strings.Builder
	var calls []*toolCall
	var args []*strings.Builder
	finished := false
	err := readSSE(r, func(ev sseEvent) (bool, error) {
		if string(ev.data) == "[DONE]" {
			return true, nil
		}
		var c struct {
			Choices []struct {
				Delta struct {
					Content   *string `json:"content"`
					ToolCalls []struct {
						Index    int    `json:"index"`
						ID       string `json:"id"`
						Function struct {
							Name      string `json:"name"`
							Arguments string `json:"arguments"`
						} `json:"function"`
					} `json:"tool_calls"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Error *struct {
				Message string `json:"message"`
				Type    string `json:"type"`
			} `json:"error"`
		}
		if err := json.Unmarshal(ev.data, &c); err != nil {
			return false, fmt.Errorf("chat completions stream: bad chunk %.200q: %w", ev.data, err)
		}
		if c.Error != nil {
			return false, fmt.Errorf("chat completions stream: %s: %s", c.Error.Type, c.Error.Message)
		}
		for _, ch := range c.Choices {
			if d := ch.Delta.Content; d != nil && *d != "" {
				text.WriteString(*d)
				onText(*d)
			}
			for _, tc := range ch.Delta.ToolCalls {
				if tc.Index < 0 || tc.Index > 128 {
					return false, fmt.Errorf("chat completions stream: tool call index %d", tc.Index)
				}
				for len(calls) <= tc.Index {
					calls, args = append(calls, &toolCall{}), append(args, &strings.Builder{})
				}
				if tc.ID != "" {
					calls[tc.Index].ID = tc.ID
				}
				if tc.Function.Name != "" {
					calls[tc.Index].Name = tc.Function.Name
				}
				args[tc.Index].WriteString(tc.Function.Arguments)
			}
			if ch.FinishReason != nil {
				finished = true
			}
		}
		return false, nil
	})
	if errors.Is(err, io.ErrUnexpectedEOF) && finished {
		err = nil // a server that ends the body without [DONE]
	}
	if err != nil {
		return message{}, err
	}
	for i, c := range calls {
		c.Input = json.RawMessage(args[i].String())
		reply.ToolCalls = append(reply.ToolCalls, *c)
	}
	reply.Text = text.String()
	return reply, nil
}
