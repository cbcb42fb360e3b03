// Package transcript renders a session's event log as a document people read:
// Markdown for downloads and mail. Streaming details (deltas, busy/idle) are
// left out; messages, thinking, tool calls with their results, errors and
// usage are kept in order.
package transcript

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"time"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/store"
)

// Header is what the transcript says about the session.
type Header struct {
	ID        string
	Name      string
	Provider  string
	Model     string
	Sandbox   string
	CreatedAt time.Time
	Usage     store.Usage
}

// Events yields a session's events in order, or the error that stopped
// reading them; a transcript is written as they come, so a long log is
// never held in memory whole.
type Events = iter.Seq2[store.Event, error]

// Slice yields the events of a slice.
func Slice(events []store.Event) Events {
	return func(yield func(store.Event, error) bool) {
		for _, e := range events {
			if !yield(e, nil) {
				return
			}
		}
	}
}

// Markdown renders the events as a Markdown document.
func Markdown(h Header, events []store.Event) string {
	var b strings.Builder
	_ = Write(&b, h, Slice(events)) // a Builder does not fail, nor does Slice
	return b.String()
}

// Write writes the events as a Markdown document to w, event by event.
func Write(w io.Writer, h Header, events Events) error { return render(w, h, events, false) }

// ErrTooLong is what Bounded gives for a transcript longer than its limit.
var ErrTooLong = errors.New("the transcript is longer than its limit")

// Bounded renders the events as Markdown of at most max bytes, for where a
// transcript must fit (a mail, a prompt). A longer one is cut at the limit
// and ends with a note saying so; truncated reports it.
func Bounded(h Header, events Events, max int) (md string, truncated bool, err error) {
	return bounded(h, events, max, false)
}

func bounded(h Header, events Events, max int, forHTML bool) (string, bool, error) {
	lw := &limitWriter{max: max}
	err := render(lw, h, events, forHTML)
	if errors.Is(err, ErrTooLong) {
		return strings.ToValidUTF8(lw.b.String(), "") + "\n\n*[The transcript is cut here: it is longer than this copy may be. Download it for the rest.]*\n", true, nil
	}
	return lw.b.String(), false, err
}

type limitWriter struct {
	b   strings.Builder
	max int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); len(p) > room {
		l.b.Write(p[:max(room, 0)])
		return max(room, 0), ErrTooLong
	}
	return l.b.Write(p)
}

// render writes the document. forHTML leaves out the raw <details> block
// around thinking (safe HTML rendering drops raw HTML) and labels it instead.
func render(w io.Writer, h Header, events Events, forHTML bool) error {
	b := &errWriter{w: w}
	fmt.Fprintf(b, "# %s\n\n", oneLine(h.Name))
	fmt.Fprintf(b, "- Session: `%s`\n- Model: %s / %s\n- Sandbox: %s\n- Started: %s\n",
		h.ID, oneLine(h.Provider), oneLine(h.Model), oneLine(h.Sandbox), h.CreatedAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(b, "- Usage: %d input tokens, %d output tokens, $%.4f\n", h.Usage.InputTokens, h.Usage.OutputTokens, h.Usage.CostUSD)

	for e, err := range events {
		if err != nil {
			return err
		}
		if b.err != nil {
			return b.err
		}
		renderEvent(b, e, forHTML)
	}
	return b.err
}

// errWriter keeps the first write error, so rendering stays readable.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func renderEvent(b io.Writer, e store.Event, forHTML bool) {
	switch e.Type {
	case event.UserMessage:
		var d event.UserMessageData
		if decode(e, &d) {
			fmt.Fprintf(b, "\n## User\n\n%s\n", strings.TrimSpace(d.Content))
		}
	case event.Message:
		var d event.MessageData
		if decode(e, &d) {
			fmt.Fprintf(b, "\n## Assistant\n\n%s\n", strings.TrimSpace(d.Content))
		}
	case event.Thinking:
		var d event.MessageData
		if decode(e, &d) && forHTML {
			fmt.Fprintf(b, "\n*Thinking:*\n\n%s\n", quote(d.Content))
		} else if decode(e, &d) {
			fmt.Fprintf(b, "\n<details><summary>Thinking</summary>\n\n%s\n\n</details>\n", quote(d.Content))
		}
	case event.ToolCall:
		var d event.ToolCallData
		if decode(e, &d) {
			fmt.Fprintf(b, "\n### Tool call: %s\n\n%s", oneLine(d.Name), fence("json", prettyJSON(d.Input)))
		}
	case event.ToolResult:
		var d event.ToolResultData
		if decode(e, &d) {
			status := "ok"
			if d.IsError {
				status = "error"
			}
			if d.ExitCode != nil {
				status += fmt.Sprintf(", exit code %d", *d.ExitCode)
			}
			fmt.Fprintf(b, "\n**Result** (%s, %d ms):\n\n%s", status, d.DurationMs, fence("", d.Output))
		}
	case event.Error:
		var d event.ErrorData
		if decode(e, &d) {
			fmt.Fprintf(b, "\n> **Error:** %s\n", oneLine(d.Message))
		}
	case event.Exit:
		var d event.ExitData
		if decode(e, &d) {
			fmt.Fprintf(b, "\n---\n\n*Session ended: %s*\n", oneLine(d.Reason))
		}
	}
}

func decode(e store.Event, v any) bool { return json.Unmarshal(e.Data, v) == nil }

// fence wraps text in a code fence longer than any backtick run inside it, so
// output cannot close the fence and turn into Markdown.
func fence(lang, text string) string {
	longest, run := 0, 0
	for _, r := range text {
		if r == '`' {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	ticks := strings.Repeat("`", max(3, longest+1))
	return ticks + lang + "\n" + strings.TrimRight(text, "\n") + "\n" + ticks + "\n"
}

// quote renders text as a blockquote inside a <details> block; a closing
// tag in the text would end the block early, so it is neutralised.
func quote(text string) string {
	text = strings.ReplaceAll(strings.TrimSpace(text), "</details", "&lt;/details")
	return "> " + strings.ReplaceAll(text, "\n", "\n> ")
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func prettyJSON(raw json.RawMessage) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return string(raw)
	}
	// Not MarshalIndent: it writes <, > and & as \u003c..., which nobody
	// reading a transcript wants to decode.
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if enc.Encode(v) != nil {
		return string(raw)
	}
	return strings.TrimSuffix(b.String(), "\n")
}
