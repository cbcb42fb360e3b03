package webtest

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/session"
)

func (p *page) tabOrder() []string {
	p.t.Helper()
	return eval[[]string](p, `[...document.querySelectorAll('#tabs .tab')].map(t => t.dataset.sessionId)`)
}

func (p *page) activeTab() string {
	p.t.Helper()
	return eval[string](p, `(document.querySelector('#tabs .tab.active') || {dataset: {}}).dataset.sessionId || 'new'`)
}

func (p *page) waitActive(id string) {
	p.t.Helper()
	if id == "new" {
		p.waitFor("the new-session form", `!document.querySelector('#new-view').hidden && !document.querySelector('#tabs .tab.active')`)
		return
	}
	p.waitFor("tab "+id+" to be shown", fmt.Sprintf(`(() => { const t = document.querySelector('#tabs .tab.active'); const v = document.querySelector('#panel-%s'); return t && t.dataset.sessionId === %s && v && !v.hidden })()`, id, jsStr(id)))
}

func (p *page) waitOrder(want ...string) {
	p.t.Helper()
	p.waitFor(fmt.Sprintf("tab order %v", want), fmt.Sprintf(`JSON.stringify([...document.querySelectorAll('#tabs .tab')].map(t => t.dataset.sessionId)) === %s`, jsStr(jsonList(want))))
}

func jsonList(ids []string) string {
	return `["` + strings.Join(ids, `","`) + `"]`
}

func (p *page) key(keys string, mods ...chromedp.Modifier) {
	p.t.Helper()
	p.do(chromedp.KeyEvent(keys, chromedp.KeyModifiers(mods...)))
}

// Tabs: rename (kept on the server), reorder by keyboard and by dragging,
// the keyboard shortcuts, a reload that brings back the same tabs and
// transcripts, closing a tab (the session goes on) and opening it again from
// the session list, and an ended session opening read-only.
func TestTabsReloadRenameReorderReopen(t *testing.T) {
	fakeA := llmtest.NewAnthropic(llmtest.Turn{Text: "answer from A"}).Attach(t)
	fakeB := llmtest.NewAnthropic(llmtest.Turn{Text: "answer from B"}).Attach(t)
	h := apitest.New(t, apitest.Options{})
	p := openPage(t, h, pageOptions{})
	a := p.createSession(fakeA, "first-tab")
	p.send(a, "question for A")
	p.waitText(panel(a)+" .msg-assistant", "answer from A")
	p.idle(a)
	p.click("#new-tab")
	b := p.createSession(fakeB, "second-tab")
	p.send(b, "question for B")
	p.waitText(panel(b)+" .msg-assistant", "answer from B")
	p.idle(b)
	p.waitOrder(a, b)

	// Rename A in place.
	p.do(chromedp.DoubleClick(chromedp.CSS(fmt.Sprintf(`.tab[data-session-id="%s"] .tab-main`, a))))
	p.waitFor("the rename box", `document.activeElement && document.activeElement.classList.contains('tab-rename')`)
	p.do(chromedp.SendKeys(chromedp.CSS(".tab-rename"), "Renamed A ✓"))
	p.enter()
	p.waitText(fmt.Sprintf(`.tab[data-session-id="%s"] .tab-name`, a), "Renamed A ✓")
	p.waitFor("the rename to be saved", `!document.querySelector('.tab-rename')`)
	// The panel's title changes once the server has answered the PATCH.
	p.waitText(panel(a)+" .s-title", "Renamed A ✓")
	var v session.View
	h.Must(http.StatusOK, "GET", "/api/sessions/"+a+"/status", nil).JSON(t, &v)
	if v.Name != "Renamed A ✓" {
		t.Fatalf("server name after rename: %q", v.Name)
	}

	// Keyboard: Shift+← moves the focused tab, Alt+1/2 go to tabs, Alt+T
	// opens the form, Ctrl+digit works too.
	p.do(chromedp.Focus(chromedp.CSS(fmt.Sprintf(`.tab[data-session-id="%s"] .tab-main`, b))))
	p.key(kb.ArrowLeft, chromedp.ModifierShift)
	p.waitOrder(b, a)
	p.key("1", chromedp.ModifierAlt)
	p.waitActive(b)
	p.key("2", chromedp.ModifierAlt)
	p.waitActive(a)
	p.key("t", chromedp.ModifierAlt)
	p.waitActive("new")
	p.key("1", chromedp.ModifierCtrl)
	p.waitActive(b)

	// Drag A back in front of B.
	p.do(chromedp.DragAndDrop(chromedp.CSS(fmt.Sprintf(`.tab[data-session-id="%s"]`, a)), chromedp.CSS(fmt.Sprintf(`.tab[data-session-id="%s"] .dot`, b))))
	p.waitOrder(a, b)
	p.click(fmt.Sprintf(`.tab[data-session-id="%s"] .tab-main`, a))
	p.waitActive(a)

	// A reload brings back the same tabs, order, names and transcripts.
	p.reload()
	p.waitOrder(a, b)
	p.waitActive(a)
	p.waitText(fmt.Sprintf(`.tab[data-session-id="%s"] .tab-name`, a), "Renamed A ✓")
	p.waitText(panel(a)+" .msg-user", "question for A")
	p.waitText(panel(a)+" .msg-assistant", "answer from A")
	p.click(fmt.Sprintf(`.tab[data-session-id="%s"] .tab-main`, b))
	p.waitActive(b)
	p.waitText(panel(b)+" .msg-assistant", "answer from B")
	if n := eval[int](p, fmt.Sprintf(`document.querySelectorAll('%s .msg-assistant').length`, panel(b))); n != 1 {
		t.Errorf("B shows %d answers after the reload, want 1", n)
	}

	// Closing a tab only hides the session.
	p.click(fmt.Sprintf(`.tab[data-session-id="%s"] .tab-close`, a))
	p.waitOrder(b)
	h.Must(http.StatusOK, "GET", "/api/sessions/"+a+"/status", nil).JSON(t, &v)
	if v.State != "active" {
		t.Fatalf("closing the tab changed the session: %s", v.State)
	}
	// The session list brings it back.
	p.click("#sessions-btn")
	p.waitFor("the session list", fmt.Sprintf(`!!document.querySelector('#sessions-list .s-item[data-session-id="%s"]')`, a))
	p.click(fmt.Sprintf(`#sessions-list .s-item[data-session-id="%s"]`, a))
	p.waitOrder(b, a)
	p.waitActive(a)
	p.waitText(panel(a)+" .msg-assistant", "answer from A")

	// Alt+W closes the current tab.
	p.key("w", chromedp.ModifierAlt)
	p.waitOrder(b)
	p.waitActive(b)

	// An ended session opens read-only, with its transcript.
	h.Must(http.StatusOK, "DELETE", "/api/sessions/"+b, nil)
	p.waitText(panel(b)+" .overlay h2", "Session ended")
	p.reload()
	p.waitActive(b)
	p.waitText(panel(b)+" .msg-assistant", "answer from B")
	p.waitFor("the read-only view", fmt.Sprintf(`(() => { const v = document.querySelector('%s'); return v.querySelector('.composer').hidden && !v.querySelector('.ended-banner').hidden && !v.querySelector('.overlay') })()`, panel(b)))
	if slices.Contains(p.tabOrder(), a) {
		t.Fatal("closed tab came back after the reload")
	}
}

// Two sessions stream at once: one finishes while the other is shown, and
// switching between them shows each complete, once.
func TestTwoSessionsStreamWhileSwitching(t *testing.T) {
	gateA, gateB := make(chan struct{}), make(chan struct{})
	fakeA := llmtest.NewAnthropic(llmtest.Turn{Text: "Alpha-answer-begins then alpha ends.", ChunkSize: 19, Gate: gateA}).Attach(t)
	fakeB := llmtest.NewAnthropic(llmtest.Turn{Text: "Bravo-answer-begins then bravo ends.", ChunkSize: 19, Gate: gateB}).Attach(t)
	h := apitest.New(t, apitest.Options{})
	p := openPage(t, h, pageOptions{})
	a := p.createSession(fakeA, "alpha")
	p.send(a, "go alpha")
	p.waitText(panel(a)+" .msg-assistant.streaming", "Alpha-answer-begins")
	p.click("#new-tab")
	b := p.createSession(fakeB, "bravo")
	p.send(b, "go bravo")
	p.waitText(panel(b)+" .msg-assistant.streaming", "Bravo-answer-begins")
	p.waitFor("A's tab to show it working", fmt.Sprintf(`!!document.querySelector('.tab[data-session-id="%s"] .dot.s-busy')`, a))

	// A finishes in the background.
	close(gateA)
	p.waitFor("A to finish while hidden", fmt.Sprintf(`(() => { const v = document.querySelector('%s'); return v.hidden && v.querySelector('.msg-assistant').textContent.includes('alpha ends.') && v.querySelector('.working').hidden })()`, panel(a)))
	p.click(fmt.Sprintf(`.tab[data-session-id="%s"] .tab-main`, a))
	p.waitActive(a)
	p.idle(a)
	if got := eval[int](p, fmt.Sprintf(`document.querySelector('%s').textContent.split('Alpha-answer-begins').length - 1`, panel(a))); got != 1 {
		t.Errorf("A's answer appears %d times", got)
	}
	if !eval[bool](p, fmt.Sprintf(`!!document.querySelector('%s .msg-assistant.streaming')`, panel(b))) {
		t.Error("B stopped streaming while hidden")
	}
	close(gateB)
	p.click(fmt.Sprintf(`.tab[data-session-id="%s"] .tab-main`, b))
	p.waitActive(b)
	p.waitText(panel(b)+" .msg-assistant", "bravo ends.")
	p.idle(b)
	for _, id := range []string{a, b} {
		if n := eval[int](p, fmt.Sprintf(`document.querySelectorAll('%s .msg-assistant').length`, panel(id))); n != 1 {
			t.Errorf("session %s shows %d answers, want 1", id, n)
		}
	}
}

// A dropped connection is resumed from the last event id: nothing is lost
// and nothing shows twice.
func TestReconnectResumesWithoutDuplicates(t *testing.T) {
	gate := make(chan struct{})
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "Resume-marker-here and the rest after the reconnect.", ChunkSize: 18, Gate: gate}).Attach(t)
	h := apitest.New(t, apitest.Options{})
	p := openPage(t, h, pageOptions{})
	id := p.createSession(fake, "flaky")
	pn := panel(id)
	p.send(id, "stream please")
	p.waitText(pn+" .msg-assistant.streaming", "Resume-marker-here")
	h.TS.CloseClientConnections()
	p.waitFor("the page to notice", fmt.Sprintf(`document.querySelector('%s .st-conn').textContent !== 'live'`, pn))
	close(gate)
	p.waitText(pn+" .msg-assistant", "the rest after the reconnect.")
	p.idle(id)
	p.waitFor("the stream to be live again", fmt.Sprintf(`document.querySelector('%s .st-conn').textContent === 'live'`, pn))
	text := eval[string](p, fmt.Sprintf(`document.querySelector('%s .transcript').textContent`, pn))
	if n := strings.Count(text, "Resume-marker-here"); n != 1 {
		t.Errorf("answer shown %d times: %q", n, text)
	}
	if n := strings.Count(text, "stream please"); n != 1 {
		t.Errorf("user message shown %d times", n)
	}
	if n := eval[int](p, fmt.Sprintf(`document.querySelectorAll('%s .msg-assistant').length`, pn)); n != 1 {
		t.Errorf("%d answers, want 1", n)
	}
}
