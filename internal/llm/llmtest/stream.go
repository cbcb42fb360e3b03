package llmtest

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// sse writes one server-sent-event stream and applies a Turn's pacing:
// Delay between deltas, the Gate, and the injected mid-stream failure.
type sse struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	ctx  context.Context
	stop <-chan struct{}
	turn *Turn

	deltas  int
	reached bool // the gate/failure point has been passed
	// fail writes the provider's in-band error event.
	fail func(message, typ string)
}

func newSSE(w http.ResponseWriter, r *http.Request, stop <-chan struct{}, t *Turn) *sse {
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	return &sse{w: w, rc: http.NewResponseController(w), ctx: r.Context(), stop: stop, turn: t}
}

// send writes one event; an empty name writes a data-only event (OpenAI).
// Write errors are ignored: a vanished client shows up as ctx.Done, which
// every wait checks.
func (s *sse) send(name string, data []byte) {
	var b strings.Builder
	if name != "" {
		b.WriteString("event: ")
		b.WriteString(name)
		b.WriteByte('\n')
	}
	b.WriteString("data: ")
	b.Write(data)
	b.WriteString("\n\n")
	_, _ = s.w.Write([]byte(b.String()))
	_ = s.rc.Flush()
}

// delta sends one content delta. point marks a delta that may serve as the
// gate/failure point (a text delta, or any non-empty delta when the turn
// has no text). It reports whether the stream goes on.
func (s *sse) delta(point bool, send func()) bool {
	if s.deltas > 0 && s.turn.Delay > 0 && !s.sleep(s.turn.Delay) {
		return false
	}
	send()
	s.deltas++
	if point {
		return s.checkpoint()
	}
	return s.alive()
}

// checkpoint is where a Gate holds and a StreamError or Hangup strikes.
// Writers call it once more before their closing events so that turns
// without any delta still get there.
func (s *sse) checkpoint() bool {
	if s.reached {
		return s.alive()
	}
	s.reached = true
	if s.turn.Gate != nil && !s.wait(s.turn.Gate) {
		return false
	}
	switch {
	case s.turn.Hangup:
		// The server closes the connection without the final empty chunk,
		// so the client's body read fails with io.ErrUnexpectedEOF.
		panic(http.ErrAbortHandler)
	case s.turn.StreamError != "":
		s.fail(s.turn.StreamError, s.turn.StreamErrorType)
		return false
	}
	return s.alive()
}

func (s *sse) wait(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return s.alive()
	case <-s.ctx.Done():
		return false
	case <-s.stop:
		return false
	}
}

func (s *sse) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return s.alive()
	case <-s.ctx.Done():
		return false
	case <-s.stop:
		return false
	}
}

func (s *sse) alive() bool {
	select {
	case <-s.ctx.Done():
		return false
	case <-s.stop:
		return false
	default:
		return true
	}
}

// waitGate holds a non-streaming reply until the gate opens, so a gated
// turn behaves the same whether or not the client streams.
func waitGate(r *http.Request, stop <-chan struct{}, gate <-chan struct{}) bool {
	if gate == nil {
		return true
	}
	select {
	case <-gate:
		return true
	case <-r.Context().Done():
	case <-stop:
	}
	return false
}

// chunks splits text into deltas of size runes, or 3, 4, 5, 3, … runes
// when size is 0, roughly the granularity of the real streams.
func chunks(text string, size int) []string {
	var out []string
	for i := 0; text != ""; i++ {
		n := size
		if n <= 0 {
			n = 3 + i%3
		}
		cut := 0
		for j := 0; j < n && cut < len(text); j++ {
			_, w := utf8.DecodeRuneInString(text[cut:])
			cut += w
		}
		out = append(out, text[:cut])
		text = text[cut:]
	}
	return out
}

// argFragments splits tool-call arguments the way both APIs do: uneven
// pieces of a few characters that ignore JSON token boundaries.
func argFragments(args string) []string {
	sizes := [...]int{2, 6, 3, 8, 4, 5}
	var out []string
	for i := 0; args != ""; i++ {
		n := min(sizes[i%len(sizes)], len(args))
		for n < len(args) && !utf8.RuneStart(args[n]) {
			n++
		}
		out = append(out, args[:n])
		args = args[n:]
	}
	return out
}

func toolInput(tc ToolCall) string {
	if tc.Input == "" {
		return "{}"
	}
	return tc.Input
}

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func randomID(prefix string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = idAlphabet[rand.IntN(len(idAlphabet))]
	}
	return prefix + string(b)
}

// usage fills in a Turn's token counts where the script left them zero:
// roughly four bytes per token, which is the right order of magnitude.
func usage(t Turn, requestSize int, withThinking bool) (in, out int64) {
	in, out = t.InputTokens, t.OutputTokens
	if in == 0 {
		in = int64(max(requestSize/4, 1))
	}
	if out == 0 {
		n := len(t.Text)
		if withThinking {
			n += len(t.Thinking)
		}
		for _, tc := range t.ToolCalls {
			n += len(tc.Name) + len(toolInput(tc)) + 20
		}
		out = int64(n/4 + 1)
	}
	return in, out
}
