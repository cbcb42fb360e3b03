package webtest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

// A whole turn in the browser: the session is made in the form, the message
// sent with Ctrl+Enter, the agent's bash command really runs in the process
// sandbox and its output (with ANSI colour) shows in a tool card, the answer
// streams in (its first part is on screen while the model is held mid-way),
// and its Markdown is rendered and highlighted, without rebuilding what was
// already shown.
func TestChatStreamsToolsAndMarkdown(t *testing.T) {
	gate := make(chan struct{})
	fake := llmtest.NewAnthropic(
		llmtest.Turn{
			Thinking: "I should run a command first.",
			Text:     "Let me check the sandbox.",
			ToolCalls: []llmtest.ToolCall{{Name: "bash",
				Input: `{"command":"printf 'sandbox says %s\\n' $((6*7)); printf '\\033[31mred alert\\033[0m\\n'"}`}},
		},
		llmtest.Turn{
			Text:      "Streaming-marker-1 and then **bold words** and code:\n\n```go\nfunc main() { return }\n```\n\nDone.",
			ChunkSize: 18,
			Gate:      gate,
		},
	).Attach(t)
	h := apitest.New(t, apitest.Options{})
	p := openPage(t, h, pageOptions{})
	id := p.createSession(fake, "chat-test")
	pn := panel(id)

	// The key was not to be remembered, so the browser does not keep it.
	if !eval[bool](p, `!(localStorage.getItem('execlaw.keys') || '').includes('sk-ant-test-key') && document.querySelector('#ns-key').value === ''`) {
		t.Error("the API key was kept in the browser without \"remember\"")
	}
	// The process sandbox is no isolation boundary, and the page says so.
	p.waitText(pn+" .not-isolated", "Not isolated")

	p.send(id, "Run something, please")
	p.waitText(pn+" .msg-user", "Run something, please")

	// The tool card carries the command's real output, coloured.
	p.waitText(pn+" .tool.ok .tool-output", "sandbox says 42")
	p.waitFor("the ANSI red span", fmt.Sprintf(`[...document.querySelectorAll('%s .tool-output .ansi-fg-1')].some(s => s.textContent === 'red alert')`, pn))
	if out := p.text(pn + " .tool-output"); strings.Contains(out, "\x1b") || strings.Contains(out, "[31m") {
		t.Errorf("escape codes shown raw: %q", out)
	}
	if got := p.text(pn + " .tool .tool-brief"); !strings.Contains(got, "printf 'sandbox says") {
		t.Errorf("tool summary = %q", got)
	}
	p.waitFor("the JSON input", fmt.Sprintf(`!!document.querySelector('%s .tool-input .json-key')`, pn))
	p.waitFor("the thinking block, collapsed", fmt.Sprintf(`(() => { const d = document.querySelector('%s details.thinking'); return d && !d.open && d.textContent.includes('run a command first') })()`, pn))

	// Mark what is on screen, to check later that it was not rebuilt.
	p.eval0(fmt.Sprintf(`document.querySelector('%s .msg-user').__mark = 1; document.querySelector('%s .msg-assistant').__mark = 2`, pn, pn))

	// The second answer is held after its first piece: that piece is
	// already on screen, the rest is not, and the agent shows as working.
	p.waitFor("the partial answer", fmt.Sprintf(`(() => { const m = [...document.querySelectorAll('%s .msg-assistant')].pop(); return m.classList.contains('streaming') && m.textContent.includes('Streaming-marker-1') })()`, pn))
	if txt := p.text(pn + " .msg-assistant.streaming"); strings.Contains(txt, "bold") {
		t.Fatalf("text after the gate is already shown: %q", txt)
	}
	p.waitFor("the working indicator", fmt.Sprintf(`(() => { const w = document.querySelector('%s .working'); return !w.hidden && w.querySelector('.working-word').textContent === 'Working…' && !!w.querySelector('.stop') })()`, pn))
	if st := p.text(pn + " .st-text"); st != "Working" {
		t.Errorf("status bar state while busy = %q", st)
	}
	close(gate)

	p.waitFor("rendered Markdown", fmt.Sprintf(`(() => { const m = [...document.querySelectorAll('%s .msg-assistant')].pop(); const s = m.querySelector('strong'); return s && s.textContent === 'bold words' && !m.classList.contains('streaming') })()`, pn))
	p.waitFor("the highlighted code block", fmt.Sprintf(`(() => { const b = document.querySelector('%s .codeblock'); return b && b.querySelector('.codeblock-lang').textContent === 'go' && !!b.querySelector('code .hljs-keyword') && b.querySelector('code').textContent.includes('func main()') && !!b.querySelector('.codeblock-head button') })()`, pn))
	p.idle(id)
	if !eval[bool](p, fmt.Sprintf(`document.querySelector('%s .msg-user').__mark === 1 && document.querySelector('%s .msg-assistant').__mark === 2`, pn, pn)) {
		t.Error("earlier messages were rebuilt while the answer streamed")
	}
	if n := eval[int](p, fmt.Sprintf(`document.querySelectorAll('%s .msg-assistant').length`, pn)); n != 2 {
		t.Errorf("%d assistant messages, want 2", n)
	}
	// Usage and cost from the usage events' totals.
	p.waitFor("usage", fmt.Sprintf(`/^[\d.]+[kM]? in · [\d.]+[kM]? out · \$\d/.test(document.querySelector('%s .st-usage').textContent)`, pn))
}

// Stop ends a turn at once: the agent goes idle, what streamed stays, and
// the session takes the next message.
func TestStopTurn(t *testing.T) {
	never := make(chan struct{})
	fake := llmtest.NewAnthropic(
		llmtest.Turn{Text: "Partial-answer-here and more that never comes", ChunkSize: 19, Gate: never},
		llmtest.Turn{Text: "Second turn works."},
	).Attach(t)
	h := apitest.New(t, apitest.Options{})
	p := openPage(t, h, pageOptions{})
	id := p.createSession(fake, "stop-test")
	pn := panel(id)
	p.send(id, "Start a long answer")
	p.waitText(pn+" .msg-assistant", "Partial-answer-here")
	p.click(pn + " .working .stop")
	p.idle(id)
	p.waitFor("the stopped answer to be closed", fmt.Sprintf(`!document.querySelector('%s .msg-assistant.streaming')`, pn))
	if txt := p.text(pn + " .msg-assistant"); !strings.Contains(txt, "Partial-answer-here") || strings.Contains(txt, "never comes") {
		t.Errorf("after stop the answer reads %q", txt)
	}
	p.send(id, "Again")
	p.waitText(pn+" .msg-assistant", "Second turn works.")
	p.idle(id)
}

// Ending a session is a confirmed action; the page then shows it ended and
// read-only, and stops listening. A session the idle reaper ends says so.
func TestSessionEndAndIdleTimeout(t *testing.T) {
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "Hello."}).Attach(t)
	h := apitest.New(t, apitest.Options{})
	p := openPage(t, h, pageOptions{})
	id := p.createSession(fake, "end-me")
	pn := panel(id)
	p.send(id, "hi")
	p.waitText(pn+" .msg-assistant", "Hello.")
	p.idle(id)

	// Cancel first: nothing happens.
	p.click(pn + " .end-session")
	p.waitFor("the confirmation", `document.querySelector('#confirm-dialog').open`)
	p.click("#confirm-dialog button[value=cancel]")
	p.waitFor("the dialog to close", `!document.querySelector('#confirm-dialog').open`)
	if st := p.text(pn + " .st-text"); st != "Ready" {
		t.Fatalf("state after cancelling the end: %q", st)
	}
	p.click(pn + " .end-session")
	p.waitFor("the confirmation", `document.querySelector('#confirm-dialog').open`)
	p.click("#confirm-ok")
	p.waitText(pn+" .overlay h2", "Session ended")
	p.waitText(pn+" .overlay", "Ended by the user.")
	p.waitFor("the read-only view", fmt.Sprintf(`(() => { const v = document.querySelector('%s'); return v.querySelector('.composer').hidden && !v.querySelector('.ended-banner').hidden && v.querySelector('.st-text').textContent === 'Ended' && v.querySelector('.st-conn').textContent === '' })()`, pn))
	p.click(pn + " .overlay .btn.primary")
	p.waitFor("the overlay to go", fmt.Sprintf(`!document.querySelector('%s .overlay')`, pn))
	p.waitText(pn+" .msg-assistant", "Hello.")
	p.waitFor("the tab's state dot", fmt.Sprintf(`!!document.querySelector('.tab[data-session-id=%s] .dot.s-stopped')`, id))

	// The idle reaper ends the next one.
	p.click("#new-tab")
	id2 := p.createSession(fake, "idle-one")
	h.Mgr.ReapIdle(time.Now().Add(30 * 24 * time.Hour))
	p.waitText(panel(id2)+" .overlay h2", "Idle timeout")
	p.waitFor("no input box", fmt.Sprintf(`document.querySelector('%s .composer').hidden`, panel(id2)))
}
