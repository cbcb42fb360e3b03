package credproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
)

// maxEventLine bounds one SSE line the meter keeps to parse. Usage events
// are small; a longer line is a content delta and is skipped unparsed.
const maxEventLine = 1 << 20

// usageFields is a usage object in any of the shapes the providers send.
type usageFields struct {
	// Anthropic, and OpenAI's Responses API (whose input_tokens include
	// the cached ones).
	InputTokens  *int64         `json:"input_tokens"`
	OutputTokens *int64         `json:"output_tokens"`
	CacheRead    *int64         `json:"cache_read_input_tokens"`
	CacheWrite   *int64         `json:"cache_creation_input_tokens"`
	InputDetails *cachedDetails `json:"input_tokens_details"`
	// OpenAI Chat Completions (prompt_tokens include the cached ones).
	PromptTokens     *int64         `json:"prompt_tokens"`
	CompletionTokens *int64         `json:"completion_tokens"`
	PromptDetails    *cachedDetails `json:"prompt_tokens_details"`
}

type cachedDetails struct {
	CachedTokens *int64 `json:"cached_tokens"`
}

// modelUsage is an object that may carry a model name and usage: a whole
// JSON answer, an OpenAI chunk, or the message (Anthropic message_start) or
// response (OpenAI Responses events) inside an event.
type modelUsage struct {
	Model string       `json:"model"`
	Usage *usageFields `json:"usage"`
}

type event struct {
	modelUsage
	Message  *modelUsage `json:"message"`
	Response *modelUsage `json:"response"`
}

// meter reads usage out of a response body as it streams past, keeping only
// the current line (SSE) or the decoder's state (JSON), never the body.
type meter struct {
	anthropic bool
	u         Usage
	seen      bool

	// SSE
	sse      bool
	line     []byte
	overflow bool // the current line outgrew maxEventLine; skip to its end

	// JSON: a decoder reading the body through a pipe, in its own goroutine.
	pw   *io.PipeWriter
	done chan struct{}
}

// newMeter returns a meter for a successful response of contentType, or nil
// when such a body carries no usage worth looking for.
func newMeter(d dialect, contentType string) *meter {
	mt, _, _ := mime.ParseMediaType(contentType)
	m := &meter{anthropic: d.anthropic}
	switch mt {
	case "text/event-stream":
		m.sse = true
	case "application/json":
		pr, pw := io.Pipe()
		m.pw, m.done = pw, make(chan struct{})
		go func() {
			defer close(m.done)
			var top modelUsage
			err := decodeTop(json.NewDecoder(pr), &top)
			// Stop the writer side too, so a body the decoder gave up on is
			// no longer fed to it.
			pr.CloseWithError(io.ErrClosedPipe)
			if err == nil {
				m.apply(top)
			}
		}()
	default:
		return nil
	}
	return m
}

// write feeds the next piece of the body.
func (m *meter) write(p []byte) {
	if m.pw != nil {
		if _, err := m.pw.Write(p); err != nil {
			m.pw = nil // the decoder is done or gave up
		}
		return
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		part := p
		if i >= 0 {
			part = p[:i]
		}
		if !m.overflow {
			if len(m.line)+len(part) > maxEventLine {
				m.overflow, m.line = true, m.line[:0]
			} else {
				m.line = append(m.line, part...)
			}
		}
		if i < 0 {
			return
		}
		if !m.overflow {
			m.sseLine(bytes.TrimSuffix(m.line, []byte("\r")))
		}
		m.line, m.overflow = m.line[:0], false
		p = p[i+1:]
	}
}

// sseLine parses one complete line of an event stream.
func (m *meter) sseLine(line []byte) {
	data, ok := bytes.CutPrefix(line, []byte("data:"))
	// Only events with a usage key matter; the cheap check skips the
	// content deltas. (Inside a JSON string the quotes would be escaped.)
	if !ok || !bytes.Contains(data, []byte(`"usage"`)) {
		return
	}
	var ev event
	if json.Unmarshal(bytes.TrimSpace(data), &ev) != nil {
		return
	}
	m.apply(ev.modelUsage)
	if ev.Message != nil {
		m.apply(*ev.Message)
	}
	if ev.Response != nil {
		m.apply(*ev.Response)
	}
}

// apply takes the counts one object reports. Later reports win: Anthropic
// sends a preliminary output count in message_start and the final one in
// message_delta, and may repeat the input counts there.
func (m *meter) apply(mu modelUsage) {
	if mu.Model != "" {
		m.u.Model = mu.Model
	}
	u := mu.Usage
	if u == nil {
		return
	}
	set := func(dst *int64, v *int64) {
		if v != nil && *v > 0 {
			*dst = *v
		}
		if v != nil {
			m.seen = true
		}
	}
	cached := func(d *cachedDetails) *int64 {
		if d == nil {
			return nil
		}
		return d.CachedTokens
	}
	// OpenAI's input counts include the cached tokens; ours do not.
	withoutCached := func(in, c *int64) *int64 {
		if in == nil || c == nil {
			return in
		}
		v := max(*in-*c, 0)
		return &v
	}
	if m.anthropic {
		set(&m.u.InputTokens, u.InputTokens)
		set(&m.u.CacheReadTokens, u.CacheRead)
		set(&m.u.CacheWriteTokens, u.CacheWrite)
	} else {
		set(&m.u.InputTokens, withoutCached(u.InputTokens, cached(u.InputDetails)))
		set(&m.u.CacheReadTokens, cached(u.InputDetails))
		set(&m.u.InputTokens, withoutCached(u.PromptTokens, cached(u.PromptDetails)))
		set(&m.u.CacheReadTokens, cached(u.PromptDetails))
	}
	set(&m.u.OutputTokens, u.OutputTokens)
	set(&m.u.OutputTokens, u.CompletionTokens)
}

// finish ends the body and returns the usage seen, if any.
func (m *meter) finish() (Usage, bool) {
	if m.done != nil {
		if m.pw != nil {
			m.pw.Close()
		}
		<-m.done
	}
	return m.u, m.seen
}

// decodeTop reads a JSON object's top-level "model" and "usage", skipping
// every other value token by token instead of keeping it.
func decodeTop(dec *json.Decoder, out *modelUsage) error {
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errNotObject
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		switch t {
		case "model":
			err = dec.Decode(&out.Model)
		case "usage":
			err = dec.Decode(&out.Usage)
		default:
			err = skipValue(dec)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

var errNotObject = errors.New("not a JSON object")

func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}
