package webtest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

// The theme toggle switches light and dark and is remembered across a
// reload; the top bar's gauge, about and settings work; a lapsed login sends
// the page to the login form.
func TestThemeTopBarAndLogin(t *testing.T) {
	h := apitest.New(t, apitest.Options{})
	p := openPage(t, h, pageOptions{})
	start := eval[string](p, `document.documentElement.dataset.theme`)
	want := map[string]string{"light": "dark", "dark": "light"}[start]
	if want == "" {
		t.Fatalf("theme at start: %q", start)
	}
	p.click("#theme-btn")
	p.waitFor("the theme to switch", fmt.Sprintf(`document.documentElement.dataset.theme === %s`, jsStr(want)))
	bg := eval[string](p, `getComputedStyle(document.body).backgroundColor`)
	p.reload()
	p.waitFor("the theme after a reload", fmt.Sprintf(`document.documentElement.dataset.theme === %s`, jsStr(want)))
	if got := eval[string](p, `getComputedStyle(document.body).backgroundColor`); got != bg {
		t.Errorf("background after reload %s, before %s", got, bg)
	}
	p.click("#theme-btn")
	p.waitFor("the theme to switch back", fmt.Sprintf(`document.documentElement.dataset.theme === %s`, jsStr(start)))

	// The memory gauge fills from /api/system; a click shows the details.
	p.waitFor("the gauge", `/^\d+%$/.test(document.querySelector('#gauge-text').textContent) && /^[\d.]+ 100$/.test(document.querySelector('#gauge .gauge-bar').getAttribute('stroke-dasharray'))`)
	p.click("#gauge")
	p.waitFor("the gauge details", `!document.querySelector('#gauge-pop').hidden && /of 10$/.test(document.querySelector('#g-sessions').textContent) && document.querySelector('#g-load').textContent.split('/').length === 3`)
	p.key("\x1b")
	p.waitFor("the details to close", `document.querySelector('#gauge-pop').hidden`)

	// About shows the version from /api/platform.
	p.click("#about-btn")
	p.waitFor("the about dialog", `document.querySelector('#about-dialog').open && document.querySelector('#about-facts').textContent.includes('Version') && document.querySelector('#about-versions').textContent.includes('marked 18.2.1')`)
	p.click("#about-dialog .dialog-head button")
	// Settings picks the theme too.
	p.click("#settings-btn")
	p.waitFor("settings", `document.querySelector('#settings-dialog').open`)
	p.click(`#settings-dialog input[name=theme][value=dark]`)
	p.waitFor("dark from settings", `document.documentElement.dataset.theme === 'dark'`)
	p.click("#settings-dialog .dialog-head button")

	// Email and exe.dev hand-offs are not offered by this server.
	fake := llmtest.NewAnthropic().Attach(t)
	id := p.createSession(fake, "features")
	if !eval[bool](p, fmt.Sprintf(`[...document.querySelectorAll('%s .s-actions .btn')].filter(b => /Email|exe\.dev/.test(b.textContent)).every(b => b.hidden)`, panel(id))) {
		t.Error("email/exe.dev buttons shown although /api/platform says they are off")
	}

	// Without the login cookie the next API call goes to the login page.
	p.do(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Call(ctx, network.ClearBrowserCookies, struct{}{})
		return err
	}))
	p.click("#sessions-btn")
	p.waitFor("the login page", `location.pathname === '/login' && !!document.querySelector('#token')`)
}

// The conversation downloads as Markdown from the server, and one answer
// from the page itself.
func TestDownloadConversation(t *testing.T) {
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "Here is the **plan**:\n\n1. one\n2. two"}).Attach(t)
	h := apitest.New(t, apitest.Options{})
	p := openPage(t, h, pageOptions{})
	id := p.createSession(fake, "download me")
	pn := panel(id)
	p.send(id, "Make a plan")
	p.waitText(pn+" .msg-assistant", "two")
	p.idle(id)
	dir := p.downloads()
	p.click(pn + " .download-transcript")
	md := waitFile(t, dir, "download-me-"+id+".md")
	for _, want := range []string{"download me", "Make a plan", "Here is the **plan**:", "2. two"} {
		if !strings.Contains(md, want) {
			t.Errorf("transcript lacks %q:\n%s", want, md)
		}
	}
	// One answer, as its Markdown source.
	p.eval0(fmt.Sprintf(`document.querySelector('%s .msg-assistant .msg-actions button[aria-label="Download answer"]').click()`, pn))
	got := waitFile(t, dir, "download-me-answer-*.md")
	if got != "Here is the **plan**:\n\n1. one\n2. two" {
		t.Errorf("downloaded answer = %q", got)
	}
}

// At phone width the page still works: no sideways scrolling, and the form,
// tabs, conversation and input box are all there.
func TestMobileLayout(t *testing.T) {
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "A reply with a long line: " + strings.Repeat("word ", 60) + "\n\n```\n" + strings.Repeat("x", 300) + "\n```"}).Attach(t)
	h := apitest.New(t, apitest.Options{})
	p := openPage(t, h, pageOptions{mobile: true})
	noOverflow := `document.documentElement.scrollWidth <= window.innerWidth && document.body.scrollWidth <= window.innerWidth`
	p.waitFor("a phone-sized window", `window.innerWidth <= 600`)
	if !eval[bool](p, noOverflow) {
		t.Errorf("the form scrolls sideways: %d > %d", eval[int](p, `document.documentElement.scrollWidth`), eval[int](p, `window.innerWidth`))
	}
	id := p.createSession(fake, "phone")
	pn := panel(id)
	p.send(id, "hello from a phone")
	p.waitText(pn+" .msg-assistant", "A reply with a long line")
	p.idle(id)
	if !eval[bool](p, noOverflow) {
		t.Errorf("the session scrolls sideways: %d > %d", eval[int](p, `document.documentElement.scrollWidth`), eval[int](p, `window.innerWidth`))
	}
	inView := `(sel) => { const r = document.querySelector(sel).getBoundingClientRect(); return r.width > 0 && r.left >= 0 && r.right <= window.innerWidth + 1 && r.bottom <= window.innerHeight + 1 }`
	for _, sel := range []string{"#tabs .tab", pn + " textarea", pn + " .send", "#gauge", "#theme-btn", pn + " .statusbar"} {
		if !eval[bool](p, fmt.Sprintf(`(%s)(%s)`, inView, jsStr(sel))) {
			t.Errorf("%s is not within the phone's screen", sel)
		}
	}
}

// unnamedControls lists rendered controls that have no accessible name.
const unnamedControls = `(() => {
  const bad = [];
  const sel = 'button, a[href], input, select, textarea, summary, [role=tab], [role=combobox], [role=option], [tabindex]:not([tabindex="-1"])';
  for (const el of document.querySelectorAll(sel)) {
    if (el.getClientRects().length === 0 || el.type === 'hidden') continue;
    const byId = (ids) => (ids || '').split(/\s+/).map((id) => (document.getElementById(id) || {}).textContent || '').join(' ').trim();
    const field = ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName);
    const name = (el.getAttribute('aria-label') || '').trim() || byId(el.getAttribute('aria-labelledby')) ||
      (el.id && [...document.querySelectorAll('label')].filter((l) => l.htmlFor === el.id).map((l) => l.textContent).join(' ').trim()) ||
      (field && el.closest('label') ? el.closest('label').textContent.trim() : '') ||
      (!field ? el.innerText.trim() : '') || (el.getAttribute('title') || '').trim();
    if (!name) bad.push(el.outerHTML.slice(0, 160));
  }
  return bad;
})()`

// Every control on the main views has an accessible name, and the working
// state is announced.
func TestAccessibleNames(t *testing.T) {
	gate := make(chan struct{})
	fake := llmtest.NewAnthropic(
		llmtest.Turn{Text: "Checking.", ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"echo hi"}`}}},
		llmtest.Turn{Text: "Done with `code`:\n\n```sh\necho ok\n```", Gate: gate},
	).Attach(t)
	h := apitest.New(t, apitest.Options{})
	p := openPage(t, h, pageOptions{})
	check := func(view string) {
		t.Helper()
		if bad := eval[[]string](p, unnamedControls); len(bad) > 0 {
			t.Errorf("%s: controls without a name:\n%s", view, strings.Join(bad, "\n"))
		}
	}
	p.eval0(`document.querySelector('#new-form details.advanced').open = true`)
	check("new-session form")
	id := p.createSession(fake, "a11y")
	pn := panel(id)
	p.send(id, "go")
	p.waitFor("the working status", fmt.Sprintf(`(() => { const w = document.querySelector('%s .working'); return !w.hidden && w.getAttribute('role') === 'status' && w.textContent.includes('The agent is working') })()`, pn))
	p.waitFor("the streaming answer to be marked busy", fmt.Sprintf(`!!document.querySelector('%s .msg-assistant[aria-busy=true]')`, pn))
	close(gate)
	p.idle(id)
	p.eval0(`document.querySelectorAll('details').forEach((d) => { d.open = true })`)
	check("session")
	for _, d := range []string{"#sessions-btn", "#settings-btn", "#about-btn"} {
		p.click(d)
		p.waitFor("the dialog", `!!document.querySelector('dialog[open]')`)
		check(d)
		p.eval0(`document.querySelector('dialog[open]').close()`)
	}
	p.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	check("phone width")
}
