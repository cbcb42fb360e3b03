package webtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

// browserCtx is the one Chromium every test shares; each test gets its own
// tab in a fresh browser context (its own cookies and localStorage).
var browserCtx context.Context

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "execlaw-webtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel, err := Start(filepath.Join(dir, "profile"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "webtest:", err)
		return 1
	}
	defer cancel()
	browserCtx = ctx
	return m.Run()
}

// wait bounds every wait for the page; the polls return as soon as the
// condition holds.
const wait = 30 * time.Second

// page is one browser tab on a test server, signed in.
type page struct {
	t   *testing.T
	h   *apitest.Harness
	ctx context.Context

	mu      sync.Mutex
	console []chromedp.ConsoleMessage
}

type pageOptions struct {
	bypassCSP bool // let the page run whatever the CSP would block, so sanitising is what is tested
	mobile    bool
}

func openPage(t *testing.T, h *apitest.Harness, o pageOptions) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	p := &page{t: t, h: h, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil { // opens the tab
		t.Fatalf("open a tab: %v", err)
	}
	go func() {
		for msg, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			p.mu.Lock()
			p.console = append(p.console, msg)
			p.mu.Unlock()
		}
	}()
	t.Cleanup(p.checkConsole)
	if o.bypassCSP {
		p.do(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Call(ctx, cdppage.SetBypassCSP, cdppage.SetBypassCSPParams{Enabled: true})
			return err
		}))
	}
	if o.mobile {
		p.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
	}
	p.login()
	return p
}

// checkConsole fails the test on uncaught exceptions and on anything the
// CSP refused: the UI must work within it.
func (p *page) checkConsole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.console {
		bad := m.Type == chromedp.ConsoleException ||
			strings.Contains(m.Text, "Content Security Policy") || strings.Contains(m.Text, "Refused to")
		if bad {
			p.t.Errorf("browser console: %s: %s %s", m.Type, m.Text, m.URL)
		}
	}
}

func (p *page) do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait+5*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("browser: %v\n%s", err, p.consoleText())
	}
}

func (p *page) consoleText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, m := range p.console {
		fmt.Fprintf(&b, "console %s: %s\n", m.Type, m.Text)
	}
	return b.String()
}

// eval runs a JavaScript expression and decodes its value.
func eval[T any](p *page, js string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("eval %s: %v", js, err)
	}
	return v
}

// waitFor polls a JavaScript condition until it is truthy.
func (p *page) waitFor(what, js string) {
	p.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, time.Until(deadline)+5*time.Second)
		_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(time.Until(deadline)), chromedp.WithPollingInterval(25*time.Millisecond)))
		cancel()
		if err == nil {
			return
		}
		// A poll does not survive a navigation (a reload, a form post): poll
		// again in the new document.
		if navigated(err) && time.Now().Before(deadline) {
			continue
		}
		p.t.Fatalf("waiting for %s (%s): %v\n%s\npage text:\n%s", what, js, err, p.consoleText(), p.bodyText())
	}
}

func navigated(err error) bool {
	s := err.Error()
	return strings.Contains(s, "navigated or closed") || strings.Contains(s, "context was destroyed") ||
		strings.Contains(s, "Cannot find context") || strings.Contains(s, "Cannot find default execution context")
}

func (p *page) bodyText() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 4000) : ''`))
	return s
}

func (p *page) click(css string) {
	p.t.Helper()
	p.do(chromedp.Click(chromedp.CSS(css), chromedp.NodeVisible))
}

func (p *page) typeInto(css, text string) {
	p.t.Helper()
	p.do(chromedp.Focus(chromedp.CSS(css)), chromedp.SendKeys(chromedp.CSS(css), text))
}

// setValue sets a field as if typed (fast, for long values) and fires input.
func (p *page) setValue(css, value string) {
	p.t.Helper()
	js := fmt.Sprintf(`(() => { const el = document.querySelector(%s); el.value = %s; el.dispatchEvent(new Event('input', {bubbles: true})); el.dispatchEvent(new Event('change', {bubbles: true})); return true })()`, jsStr(css), jsStr(value))
	if !eval[bool](p, js) {
		p.t.Fatalf("set %s", css)
	}
}

func jsStr(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func (p *page) navigate(path string) {
	p.t.Helper()
	p.do(chromedp.Navigate(p.h.URL(path)))
}

func (p *page) login() {
	p.t.Helper()
	p.navigate("/")
	p.waitFor("the login page", `location.pathname === '/login' && !!document.querySelector('#token')`)
	p.typeInto("#token", p.h.Opts.Auth.Token)
	p.click("form button[type=submit]")
	p.waitReady()
}

// waitReady waits for the app to have started after a load.
func (p *page) waitReady() {
	p.t.Helper()
	p.waitFor("the app", `location.pathname === '/' && document.documentElement.dataset.ready === 'true'`)
}

func (p *page) reload() {
	p.t.Helper()
	p.do(chromedp.Reload())
	p.waitReady()
}

// createSession fills in the new-session form for a fake Anthropic server
// and starts the session; it returns the new session's id.
func (p *page) createSession(fake *llmtest.Server, name string) string {
	p.t.Helper()
	before := eval[[]string](p, `[...document.querySelectorAll('.tab')].map(t => t.dataset.sessionId)`)
	p.waitFor("the form", `!document.querySelector('#new-view').hidden`)
	p.setValue("#ns-name", name)
	p.do(chromedp.SetValue(chromedp.CSS("#ns-provider"), "anthropic"))
	p.eval0(`document.querySelector('#ns-provider').dispatchEvent(new Event('change'))`)
	p.typeInto("#ns-key", "sk-ant-test-key")
	p.setValue("#ns-baseurl", fake.BaseURL())
	p.setValue("#ns-model", "claude-sonnet-4-20250514")
	p.click("#ns-submit")
	p.waitFor("a new tab", fmt.Sprintf(`document.querySelectorAll('.tab').length === %d`, len(before)+1))
	id := eval[string](p, `document.querySelector('.tab.active').dataset.sessionId`)
	p.waitFor("the session to be ready", fmt.Sprintf(`(() => { const v = document.querySelector('#panel-%s'); return v && !v.hidden && v.querySelector('.st-text').textContent === 'Ready' })()`, id))
	return id
}

func (p *page) eval0(js string) {
	p.t.Helper()
	eval[chromedp.Void](p, js)
}

// panel is a CSS selector for a session's panel.
func panel(id string) string { return "#panel-" + id }

// send types a message into a session and sends it with Ctrl+Enter.
func (p *page) send(id, text string) {
	p.t.Helper()
	sel := panel(id) + " textarea"
	p.typeInto(sel, text)
	p.do(chromedp.KeyEvent("\r", chromedp.KeyModifiers(chromedp.ModifierCtrl)))
	p.waitFor("the message to be sent", fmt.Sprintf(`document.querySelector(%s).value === ''`, jsStr(sel)))
}

// enter presses Enter the way a keyboard does: chromedp's KeyEvent also
// sends a separate char event, which a page cannot cancel from keydown and
// which would submit the form around a field that handled the key.
func (p *page) enter() {
	p.t.Helper()
	p.do(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeRawKeyDown, input.DispatchKeyEventTypeKeyUp} {
			if _, err := cdp.Call(ctx, tg, input.DispatchKeyEvent, input.DispatchKeyEventParams{
				Type: typ, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13,
			}); err != nil {
				return err
			}
		}
		return nil
	}))
}

// text is the visible text of the first element matching css ("" if none).
func (p *page) text(css string) string {
	p.t.Helper()
	return eval[string](p, fmt.Sprintf(`(document.querySelector(%s) || {}).innerText || ''`, jsStr(css)))
}

// waitText waits until the element matching css contains want.
func (p *page) waitText(css, want string) {
	p.t.Helper()
	p.waitFor(fmt.Sprintf("%q in %s", want, css), fmt.Sprintf(`[...document.querySelectorAll(%s)].some(e => e.textContent.includes(%s))`, jsStr(css), jsStr(want)))
}

// idle waits for a session's turn to be over, as the UI shows it.
func (p *page) idle(id string) {
	p.t.Helper()
	p.waitFor("the agent to be idle", fmt.Sprintf(`(() => { const v = document.querySelector('#panel-%s'); return v.querySelector('.working').hidden && v.querySelector('.st-text').textContent === 'Ready' })()`, id))
}

// downloads makes the browser save downloads in a temporary directory and
// returns it.
func (p *page) downloads() string {
	p.t.Helper()
	dir := p.t.TempDir()
	bc := chromedp.FromContext(p.ctx).BrowserContextID
	if _, err := chromedp.CallBrowser(p.ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, BrowserContextID: bc, DownloadPath: dir, EventsEnabled: new(true),
	}); err != nil {
		p.t.Fatalf("set download behaviour: %v", err)
	}
	return dir
}

// waitFile waits for a finished file in dir whose name matches pattern.
func waitFile(t *testing.T, dir, pattern string) string {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		matches, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, m := range matches {
			if !strings.HasSuffix(m, ".crdownload") {
				if b, err := os.ReadFile(m); err == nil && len(b) > 0 {
					return string(b)
				}
			}
		}
		if time.Now().After(deadline) {
			entries, _ := os.ReadDir(dir)
			t.Fatalf("no download matching %s in %s: %v", pattern, dir, entries)
		}
		time.Sleep(20 * time.Millisecond) // polling the file system, not a readiness guess
	}
}

// screenshot saves a PNG of the viewport.
func (p *page) screenshot(path string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		p.t.Fatal(err)
	}
}
