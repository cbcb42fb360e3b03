package webtest

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/session"
)

// requestLog holds the page's requests, in the order the browser sent them,
// and which of them have been answered.
type requestLog struct {
	mu   sync.Mutex
	sent []sentRequest
	done map[network.RequestID]int // request -> how many had been sent when it finished
}

type sentRequest struct {
	id          network.RequestID
	method, url string
}

// recordRequests records the page's requests from now on, as the browser
// sends them: EventSource's own reconnections included.
func (p *page) recordRequests() *requestLog {
	p.t.Helper()
	l := &requestLog{done: map[network.RequestID]int{}}
	err := chromedp.Listen(p.ctx, func(ev any) {
		l.mu.Lock()
		defer l.mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			if e.Request != nil {
				l.sent = append(l.sent, sentRequest{e.RequestID, e.Request.Method, e.Request.URL})
			}
		case *network.EventLoadingFinished:
			l.done[e.RequestID] = len(l.sent)
		}
	})
	if err != nil {
		p.t.Fatalf("listen for requests: %v", err)
	}
	return l
}

func (l *requestLog) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.sent {
		if strings.Contains(r.url, substr) {
			n++
		}
	}
	return n
}

func (l *requestLog) urls() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var urls []string
	for _, r := range l.sent {
		urls = append(urls, r.url)
	}
	return urls
}

// nextAfter returns which of the match functions (by index) the first
// request sent after the last answered POST to a URL ending in post
// satisfies, skipping requests that match none; -1 if none does (yet).
func (l *requestLog) nextAfter(post string, match ...func(url string) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	from := -1
	for _, r := range l.sent {
		if n, ok := l.done[r.id]; ok && r.method == "POST" && strings.HasSuffix(r.url, post) {
			from = n
		}
	}
	if from < 0 {
		return -1
	}
	for _, r := range l.sent[from:] {
		for i, m := range match {
			if m(r.url) {
				return i
			}
		}
	}
	return -1
}

// stays checks that cond holds for all of d. It is for what must not
// happen (a stream asked for again), which no poll can wait for; d spans
// more than one of EventSource's reconnection delays (the server asks for
// one second).
func stays(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if !cond() {
			t.Fatalf("%s: no longer so", what)
		}
	}
}

// restart stops the server, pausing its sessions, and starts it again on the
// same address, as a server restarted in place: the page keeps its origin,
// and with it its tabs and remembered keys (localStorage is per origin, port
// included).
func restart(t *testing.T, h *apitest.Harness) {
	t.Helper()
	addr := h.TS.Listener.Addr().String()
	h.Stop()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	h.Start()
	h.TS.Close() // started on a port of its own; serve on the old one instead
	ts := httptest.NewUnstartedServer(h.Srv)
	ts.Listener.Close()
	ts.Listener = ln
	h.Opts.Timeouts.Configure(ts.Config)
	ts.Start()
	h.TS = ts
}

// pausedJS is true when a session's panel shows it paused: state, dot,
// banner, no Pause button, and the composer still there (it is not ended).
func pausedJS(id, bannerText string) string {
	return fmt.Sprintf(`(() => { const v = document.querySelector('#panel-%s'); if (!v) return false;
		const b = v.querySelector('.paused-banner');
		return v.querySelector('.st-text').textContent === 'Paused' && !!v.querySelector('.statusbar .dot.s-paused') &&
			!!document.querySelector('.tab[data-session-id="%s"] .dot.s-paused') &&
			!b.hidden && b.querySelector('.badge').textContent === 'Paused' && b.textContent.includes(%s) &&
			v.querySelector('.pause-session').hidden && !v.querySelector('.composer').hidden && v.querySelector('.ended-banner').hidden })()`,
		id, id, jsStr(bannerText))
}

// Pause from the header, reload, and resume by typing: the conversation
// from before the pause is there once, the page does not keep asking for
// the paused session's stream (it ends after the log), the resume is noted
// with how long it took, the new answer streams in live, and the session
// is active again.
func TestPauseReloadResumeByTyping(t *testing.T) {
	gate := make(chan struct{})
	fake := llmtest.NewAnthropic(
		llmtest.Turn{Text: "Answer-one from before the pause."},
		llmtest.Turn{Text: "Answer-two-begins after the resume, and the-rest-of-it.", ChunkSize: 18, Gate: gate},
	).Attach(t)
	h := apitest.New(t, apitest.Options{})
	p := openPage(t, h, pageOptions{})
	reqs := p.recordRequests()
	id := p.createSession(fake, "pause-me")
	pn := panel(id)
	stream := "/api/sessions/" + id + "/stream"
	p.send(id, "Question one")
	p.waitText(pn+" .msg-assistant", "Answer-one")
	p.idle(id)

	p.waitFor("the Pause button", fmt.Sprintf(`(() => { const b = document.querySelector('%s .pause-session'); return !b.hidden && !b.disabled })()`, pn))
	p.click(pn + " .pause-session")
	// The process sandbox cannot save processes: it pauses cold, and says so.
	p.waitFor("the paused session", pausedJS(id, "resumes cold: its files are kept, processes will not survive"))
	p.waitText(pn+" .msg-notice.pause-note", "Paused by the user. Its files are kept, its processes are not: process sandboxes cannot save running processes.")
	var v session.View
	h.Must(http.StatusOK, "GET", "/api/sessions/"+id+"/status", nil).JSON(t, &v)
	if v.State != "paused" || v.ResumeKind != "cold" {
		t.Fatalf("server view after Pause: %+v", v)
	}

	before := reqs.count(stream)
	p.reload()
	p.waitActive(id)
	p.waitFor("the paused session after the reload", pausedJS(id, "resumes cold"))
	p.waitText(pn+" .msg-assistant", "Answer-one")
	p.waitText(pn+" .msg-notice.pause-note", "Paused by the user.")
	// One stream replayed the log (what is shown came from it) and ended;
	// the page does not ask again.
	if n := reqs.count(stream) - before; n != 1 {
		t.Fatalf("%d stream requests after the reload, want 1", n)
	}
	stays(t, "one stream request for the paused session", 2500*time.Millisecond, func() bool { return reqs.count(stream)-before == 1 })

	// Typing resumes it.
	p.send(id, "Question two")
	p.waitText(pn+" .msg-notice.resume-note", "Resumed cold in")
	// The stream was opened again because the message resumed the session,
	// not by the page's periodic look at the session list (which would
	// find it resumed, but seconds later).
	isStream := func(u string) bool { return strings.Contains(u, stream) }
	isList := func(u string) bool { return strings.HasSuffix(u, "/api/sessions") }
	if next := reqs.nextAfter("/api/sessions/"+id+"/input", isStream, isList); next != 0 {
		t.Errorf("after the message the page asked for %s first, not the stream", map[int]string{-1: "nothing", 1: "the session list"}[next])
	}
	p.waitFor("the answer streaming in after the resume", fmt.Sprintf(`(() => { const m = [...document.querySelectorAll('%s .msg-assistant')].pop(); return m.classList.contains('streaming') && m.textContent.includes('Answer-two-begins') })()`, pn))
	if txt := p.text(pn + " .msg-assistant.streaming"); strings.Contains(txt, "the-rest-of-it") {
		t.Fatalf("text after the gate is already shown: %q", txt)
	}
	if !eval[bool](p, fmt.Sprintf(`(() => { const b = document.querySelector('%s .pause-session'); return !b.hidden && b.disabled && document.querySelector('%s .paused-banner').hidden })()`, pn, pn)) {
		t.Error("while the turn runs, Pause should show disabled and the paused banner be gone")
	}
	close(gate)
	p.waitText(pn+" .msg-assistant", "the-rest-of-it")
	p.idle(id)
	p.waitFor("the stream to be live", fmt.Sprintf(`document.querySelector('%s .st-conn').textContent === 'live'`, pn))
	p.waitFor("Pause to be offered again", fmt.Sprintf(`(() => { const b = document.querySelector('%s .pause-session'); return !b.hidden && !b.disabled })()`, pn))
	h.Must(http.StatusOK, "GET", "/api/sessions/"+id+"/status", nil).JSON(t, &v)
	if v.State != "active" {
		t.Errorf("server state after the turn: %s", v.State)
	}

	// The transcript is whole, in order, and nothing in it is repeated.
	items := eval[[]string](p, fmt.Sprintf(`[...document.querySelector('%s .transcript').children].filter(e => e.matches('.msg-user, .msg-assistant, .msg-notice')).map(e => (e.matches('.msg-notice') ? 'note: ' + e.textContent : (e.matches('.msg-user') ? 'user: ' : 'agent: ') + e.querySelector('.msg-body').textContent.trim()))`, pn))
	want := []string{"user: Question one", "agent: Answer-one", "note: Paused by the user.", "user: Question two", "note: Resumed cold in", "agent: Answer-two-begins"}
	alt := []string{"user: Question one", "agent: Answer-one", "note: Paused by the user.", "note: Resumed cold in", "user: Question two", "agent: Answer-two-begins"}
	if !prefixesMatch(items, want) && !prefixesMatch(items, alt) {
		t.Errorf("transcript after pause, reload and resume:\n%s", strings.Join(items, "\n"))
	}
}

// prefixesMatch reports whether each item starts with its prefix.
func prefixesMatch(items, prefixes []string) bool {
	if len(items) != len(prefixes) {
		return false
	}
	for i := range items {
		if !strings.HasPrefix(items[i], prefixes[i]) {
			return false
		}
	}
	return true
}

// A paused session is marked in the Sessions list and opens from it as a
// live tab, not a read-only one; its Resume button brings it back, and the
// next message is answered. Ending a paused session shows it ended.
func TestPausedSessionFromListAndResumeButton(t *testing.T) {
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "Reply after the Resume button."}).Attach(t)
	h := apitest.New(t, apitest.Options{})
	p := openPage(t, h, pageOptions{})
	id := p.createSession(fake, "list-pause")
	pn := panel(id)
	p.click(pn + " .pause-session")
	p.waitFor("the paused session", pausedJS(id, "Sending a message resumes it."))

	// Closing the tab leaves it paused; the list says so and opens it.
	p.click(fmt.Sprintf(`.tab[data-session-id="%s"] .tab-close`, id))
	p.waitFor("no tabs", `document.querySelectorAll('#tabs .tab').length === 0`)
	p.click("#sessions-btn")
	item := fmt.Sprintf(`#sessions-list .s-item[data-session-id="%s"]`, id)
	p.waitFor("the paused session in the list", fmt.Sprintf(`(() => { const i = document.querySelector(%s); return i && !!i.querySelector('.dot.s-paused') && i.querySelector('.s-item-state').textContent === 'Paused · resumes on a message' })()`, jsStr(item)))
	p.click(item)
	p.waitActive(id)
	p.waitFor("the paused session, live", pausedJS(id, "resumes cold"))

	p.click(pn + " .resume-session")
	p.waitText(pn+" .msg-notice.resume-note", "Resumed cold in")
	p.waitFor("the session to be ready again", fmt.Sprintf(`(() => { const v = document.querySelector('%s'); return v.querySelector('.st-text').textContent === 'Ready' && v.querySelector('.paused-banner').hidden && !v.querySelector('.pause-session').hidden && !v.querySelector('.pause-session').disabled && v.querySelector('.st-conn').textContent === 'live' })()`, pn))
	p.send(id, "Anyone there?")
	p.waitText(pn+" .msg-assistant", "Reply after the Resume button.")
	p.idle(id)
	if n := eval[int](p, fmt.Sprintf(`document.querySelectorAll('%s .msg-notice.resume-note').length`, pn)); n != 1 {
		t.Errorf("%d resume notes, want 1", n)
	}

	// Ending it while paused: its stream sleeps, yet the page learns of the end.
	p.click(pn + " .pause-session")
	p.waitFor("the paused session", pausedJS(id, "resumes cold"))
	p.click(pn + " .end-session")
	p.waitFor("the confirmation", `document.querySelector('#confirm-dialog').open`)
	p.click("#confirm-ok")
	p.waitText(pn+" .overlay h2", "Session ended")
	p.waitFor("the read-only view", fmt.Sprintf(`(() => { const v = document.querySelector('%s'); return v.querySelector('.composer').hidden && v.querySelector('.paused-banner').hidden && !v.querySelector('.ended-banner').hidden && v.querySelector('.st-text').textContent === 'Ended' })()`, pn))
}

// After a restart the server no longer holds the sessions' keys. Typing into
// one asks for its key (the page learns from the server's 409 before a
// reload, from the session's view after one); cancelling keeps the message;
// the key given (and remembered, as ticked) resumes it and the turn runs. A
// session of the same provider then resumes with the remembered key, with
// no dialog. The key is never in a URL.
func TestResumeAfterRestartAsksForTheKey(t *testing.T) {
	const key = "sk-ant-test-key" // the one createSession uses
	fakeA := llmtest.NewAnthropic(llmtest.Turn{Text: "A before."}, llmtest.Turn{Text: "A-after-restart answer."}).Attach(t)
	fakeA.RequireKey(key)
	fakeB := llmtest.NewAnthropic(llmtest.Turn{Text: "B-after-restart answer."}).Attach(t)
	fakeB.RequireKey(key)
	h := apitest.New(t, apitest.Options{PauseOnStop: true})
	p := openPage(t, h, pageOptions{})
	reqs := p.recordRequests()
	a := p.createSession(fakeA, "needs-key")
	p.send(a, "before the restart")
	p.waitText(panel(a)+" .msg-assistant", "A before.")
	p.idle(a)
	p.click("#new-tab")
	b := p.createSession(fakeB, "remembered-key")

	restart(t, h)
	for _, id := range []string{a, b} {
		if v := h.WaitState(id, "paused"); !v.KeyNeeded {
			t.Fatalf("after the restart: %+v", v)
		}
	}

	// Before a reload the page does not know the key is gone: the server's
	// answer says so, and the dialog asks. Cancel keeps the message.
	p.click(fmt.Sprintf(`.tab[data-session-id="%s"] .tab-main`, a))
	p.waitActive(a)
	p.waitFor("A paused by the restart", pausedJS(a, "resumes cold"))
	input := panel(a) + " textarea"
	p.typeInto(input, "after the restart")
	p.do(chromedp.KeyEvent("\r", chromedp.KeyModifiers(chromedp.ModifierCtrl)))
	p.waitFor("the key dialog", `document.querySelector('#key-dialog').open && document.querySelector('#key-input').type === 'password' && document.activeElement === document.querySelector('#key-input')`)
	p.click("#key-cancel")
	p.waitFor("the dialog to close", `!document.querySelector('#key-dialog').open`)
	p.waitFor("the message kept, the session still paused", fmt.Sprintf(`document.querySelector(%s).value === 'after the restart' && %s`, jsStr(input), pausedJS(a, "it will be asked for")))

	// After a reload the session's view says it needs the key.
	p.reload()
	p.waitActive(a)
	p.waitFor("A paused, needing its key", pausedJS(a, "no longer holds its API key"))
	p.typeInto(input, "after the restart")
	p.do(chromedp.KeyEvent("\r", chromedp.KeyModifiers(chromedp.ModifierCtrl)))
	p.waitFor("the key dialog", `document.querySelector('#key-dialog').open && document.querySelector('#key-text').textContent.includes('needs-key')`)
	p.typeInto("#key-input", key)
	p.click("#key-remember")
	p.click("#key-submit")
	p.waitFor("the dialog to close", `!document.querySelector('#key-dialog').open && document.querySelector('#key-input').value === ''`)
	p.waitText(panel(a)+" .msg-notice.resume-note", "Resumed cold in")
	p.waitText(panel(a)+" .msg-assistant", "A-after-restart answer.")
	p.idle(a)
	p.waitFor("the message sent once", fmt.Sprintf(`document.querySelector(%s).value === '' && [...document.querySelectorAll('%s .msg-user')].filter(m => m.textContent.includes('after the restart')).length === 1`, jsStr(input), panel(a)))
	if !eval[bool](p, `(JSON.parse(localStorage.getItem('execlaw.keys') || '{}').anthropic === 'sk-ant-test-key')`) {
		t.Error("the key was not remembered although \"remember\" was ticked")
	}

	// B, same provider: the remembered key resumes it; no dialog opens.
	p.click(fmt.Sprintf(`.tab[data-session-id="%s"] .tab-main`, b))
	p.waitActive(b)
	p.waitFor("B paused, needing its key", pausedJS(b, "no longer holds its API key"))
	p.eval0(`(() => { const d = document.querySelector('#key-dialog'); new MutationObserver(() => { if (d.open) window.__keyAsked = true; }).observe(d, { attributes: true }); })()`)
	p.send(b, "B after the restart")
	p.waitText(panel(b)+" .msg-assistant", "B-after-restart answer.")
	p.idle(b)
	if eval[bool](p, `window.__keyAsked === true`) {
		t.Error("the key dialog opened although the key is remembered")
	}
	for _, id := range []string{a, b} {
		var v session.View
		h.Must(http.StatusOK, "GET", "/api/sessions/"+id+"/status", nil).JSON(t, &v)
		if v.State != "active" || v.KeyNeeded {
			t.Errorf("session %s after resuming: %+v", id, v)
		}
	}
	for _, u := range reqs.urls() {
		if strings.Contains(u, key) {
			t.Errorf("the key is in a URL: %s", u)
		}
	}
}
