package webtest

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

// termText is what a session's active terminal shows.
func termText(id string) string {
	return fmt.Sprintf(`(() => { const v = document.querySelector('%s .term-view:not([hidden])'); return v ? v.querySelector('.xterm-rows').textContent : '' })()`, panel(id))
}

// typeTerm types into the session's active terminal: text as typed
// characters arrive (input events), "\r" as the Enter key.
func (p *page) typeTerm(id, text string) {
	p.t.Helper()
	p.do(chromedp.Focus(chromedp.CSS(panel(id) + " .term-view:not([hidden]) .xterm-helper-textarea")))
	for i, part := range strings.Split(text, "\r") {
		if i > 0 {
			p.enter()
		}
		if part != "" {
			p.do(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				_, err := cdp.Call(ctx, tg, input.InsertText, input.InsertTextParams{Text: part})
				return err
			}))
		}
	}
}

// TestTerminalInBrowser: the Terminal button opens a shell in the sandbox;
// what is typed runs, the terminal follows the window's size (stty size
// agrees), a second terminal is a second shell, and an exited shell says so.
// All under the page's CSP (checkConsole fails on any refusal).
func TestTerminalInBrowser(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{})
	p := openPage(t, h, pageOptions{})
	p.do(chromedp.EmulateViewport(1200, 900))
	id := p.createSession(fake, "terminal")
	p.click(panel(id) + " .open-terminal")
	p.waitFor("the terminal to connect", fmt.Sprintf(`!!document.querySelector('%s .term-view[data-state=open]')`, panel(id)))
	p.typeTerm(id, "echo hi-$((40+2))\r")
	p.waitFor("hi-42 in the terminal", termText(id)+`.includes('hi-42')`)
	if n := eval[int](p, `document.adoptedStyleSheets.length`); n == 0 {
		t.Error("xterm's styles were not applied (no constructed style sheets)")
	}

	sttySize := func() string {
		t.Helper()
		marker := fmt.Sprintf("size-%d", len(eval[string](p, termText(id))))
		p.typeTerm(id, "echo "+marker+" $(stty size)\r")
		re := regexp.MustCompile(marker + ` (\d+) (\d+)`)
		p.waitFor("stty size", fmt.Sprintf(`/%s \d+ \d+/.test(%s)`, marker, termText(id)))
		m := re.FindStringSubmatch(eval[string](p, termText(id)))
		return m[2] + "x" + m[1] // cols x rows
	}
	size := func() string {
		return eval[string](p, fmt.Sprintf(`document.querySelector('%s .term-view:not([hidden])').dataset.size`, panel(id)))
	}
	before := sttySize()
	if before != size() {
		t.Errorf("stty size %s, the terminal shows %s", before, size())
	}
	p.do(chromedp.EmulateViewport(800, 1000))
	p.waitFor("the terminal to resize", fmt.Sprintf(`document.querySelector('%s .term-view:not([hidden])').dataset.size !== %s`, panel(id), jsStr(before)))
	after := sttySize()
	if after == before || after != size() {
		t.Errorf("after resizing the window: stty size %s (was %s), the terminal shows %s", after, before, size())
	}

	// A second terminal is another shell.
	p.click(panel(id) + " .term-new")
	p.waitFor("a second terminal", fmt.Sprintf(`document.querySelectorAll('%s .term-view[data-state=open]').length === 2`, panel(id)))
	p.typeTerm(id, "echo second-$((1+1))\r")
	p.waitFor("second-2", termText(id)+`.includes('second-2')`)
	if strings.Contains(eval[string](p, termText(id)), "hi-42") {
		t.Error("the second terminal shows the first one's output")
	}
	// 24-bit colour, which xterm.js sets as a style attribute, shows.
	p.typeTerm(id, "printf '\\e[38;2;255;100;0mtrue-colour\\e[0m\\n'\r")
	p.waitFor("true colour", fmt.Sprintf(`[...document.querySelectorAll('%s .term-view:not([hidden]) .xterm-rows span')].some(s => s.textContent.includes('true-colour') && getComputedStyle(s).color === 'rgb(255, 100, 0)')`, panel(id)))
	p.typeTerm(id, "exit 5\r")
	p.waitFor("the terminal to say it closed", termText(id)+`.includes('exited with code 5')`)
}
