package webtest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

// markdownCorpus is agent output that tries to run script in the page. Every
// payload would set window.__xss.
var markdownCorpus = strings.Join([]string{
	"XSS corpus start.",
	`<script>window.__xss=1</script>`,
	`<img src=x onerror="window.__xss=2">`,
	`<svg onload="window.__xss=3"><circle r=1></svg>`,
	`<iframe srcdoc="<script>parent.__xss=4</script>"></iframe>`,
	`<a href="javascript:window.__xss=5">html js link</a>`,
	`[md js link](javascript:window.__xss=6)`,
	`[md data link](data:text/html;base64,PHNjcmlwdD5wYXJlbnQuX194c3M9Nzwvc2NyaXB0Pg==)`,
	`![broken image](x" onerror="window.__xss=8)`,
	`![js image](javascript:window.__xss=9)`,
	`<details open ontoggle="window.__xss=10">details</details>`,
	`<math><mtext><table><mglyph><style><img src=x onerror="window.__xss=11"></style></mglyph></table></mtext></math>`,
	`[ref link][r]`,
	``,
	`[r]: javascript:window.__xss=12`,
	``,
	`<object data="javascript:window.__xss=13"></object>`,
	`<embed src="javascript:window.__xss=14">`,
	`<form action="javascript:window.__xss=15"><button>go</button></form>`,
	`<body onload="window.__xss=16">`,
	`<style>@import 'javascript:window.__xss=17';</style>`,
	`<div style="background:url(javascript:window.__xss=18)">styled</div>`,
	"`<img src=x onerror=window.__xss=19>` in inline code",
	`<input autofocus onfocus="window.__xss=20">`,
	`<video><source onerror="window.__xss=21"></video>`,
	`<marquee onstart="window.__xss=22">m</marquee>`,
	`<base href="javascript:/">`,
	`<meta http-equiv="refresh" content="0;url=javascript:window.__xss=23">`,
	`<javascript:window.__xss=25>`,
	`[click](JaVaScRiPt:window.__xss=26)`,
	`<a href="&#106;avascript:window.__xss=27">entity link</a>`,
	`<p id="gauge" class="overlay">clobber and spoof</p>`,
	"```html\n<script>window.__xss=24</script>\n```",
	`[a real link](https://example.com/page)`,
	"XSS corpus end.",
}, "\n\n")

// Agent output, thinking, tool input and output, tool names, the user's
// own message and the session's name all carry HTML and script; none of it
// runs or becomes markup. The page runs with its CSP bypassed, so the test
// checks the sanitising itself and not only the CSP.
func TestXSSCorpus(t *testing.T) {
	fake := llmtest.NewAnthropic(
		llmtest.Turn{
			Thinking: `<img src=x onerror="window.__xss=30"><script>window.__xss=31</script> thinking`,
			Text:     markdownCorpus,
			ToolCalls: []llmtest.ToolCall{
				{Name: "bash", Input: `{"command":"printf '<img src=x onerror=window.__xss=40><script>window.__xss=41</script>\\n'; printf '\\033[31m<img src=x onerror=window.__xss=42>\\033[0m\\n'; printf 'diff --git a/x b/x\\n--- a/x\\n+++ b/x\\n@@ -1 +1 @@\\n-<script>window.__xss=45</script>\\n+<img src=x onerror=window.__xss=46>\\n' > d.txt; cat d.txt"}`},
				{Name: "<img src=x onerror=window.__xss=43>", Input: `{"path":"<script>window.__xss=44</script>"}`},
				{Name: "edit_file", Input: `{"path":"d.txt","old_string":"<script>window.__xss=47</script>","new_string":"<img src=x onerror=window.__xss=48>"}`},
			},
		},
		llmtest.Turn{Text: "Second answer <script>window.__xss=50</script> end-of-corpus."},
	).Attach(t)
	h := apitest.New(t, apitest.Options{})
	p := openPage(t, h, pageOptions{bypassCSP: true})
	// The CSP really is bypassed: an inline handler runs.
	p.eval0(`(() => { const i = document.createElement('img'); i.setAttribute('onerror', 'window.__probe = 1'); i.src = 'data:,x'; document.body.append(i); })()`)
	p.waitFor("the probe to run", `window.__probe === 1`)
	p.eval0(`document.querySelector('body > img[onerror]').remove(); delete window.__probe`)

	name := `<img src=x onerror=window.__xss=60>`
	id := p.createSession(fake, name)
	pn := panel(id)
	p.send(id, `<script>window.__xss=61</script><img src=x onerror=window.__xss=62>`)
	p.waitText(pn+" .msg-assistant", "end-of-corpus.")
	p.idle(id)
	p.waitText(pn+" .msg-assistant", "XSS corpus end.")
	p.waitFor("three tool results", fmt.Sprintf(`document.querySelectorAll('%s .tool:not(.running)').length === 3`, pn))
	p.eval0(`document.querySelectorAll('details').forEach(d => d.open = true)`)
	// The session list and the about dialog show the name too.
	p.click("#sessions-btn")
	p.waitFor("the session list", `!!document.querySelector('#sessions-list .s-item')`)
	p.eval0(`document.querySelector('#sessions-dialog').close()`)

	checks := map[string]string{
		"no script ran":             `window.__xss === undefined`,
		"only the app's own script": `[...document.scripts].every(s => s.src.endsWith('/static/js/app.js'))`,
		"no frames or plugins":      `!document.querySelector('iframe, frame, object, embed, base, video, audio, marquee')`,
		"no markup from content":    `!document.querySelector('.transcript svg:not(.icon), .transcript math, .transcript form, .transcript input, .transcript style, .transcript meta, .transcript link, .transcript button:not(.btn)')`,
		"no event handlers":         `![...document.querySelectorAll('*')].some(e => [...e.attributes].some(a => /^on/i.test(a.name)))`,
		"no script URLs":            `![...document.querySelectorAll('[href], [src], [action], [data], [formaction]')].some(e => ['href', 'src', 'action', 'data', 'formaction'].some(n => /^\s*(javascript|data:text|vbscript)/i.test(e.getAttribute(n) || '')))`,
		"links are safe":            `[...document.querySelectorAll('.markdown a[href]')].every(a => /^https?:|^mailto:|^#/.test(a.getAttribute('href')) && a.rel.includes('noopener') && a.rel.includes('noreferrer') && a.target === '_blank')`,
		"the real link is a link":   `!!document.querySelector('.markdown a[href="https://example.com/page"]')`,
		"no remote images":          `[...document.querySelectorAll('.transcript img')].every(i => !i.getAttribute('src') || i.getAttribute('src').startsWith('data:image/'))`,
		"no styles from content":    `![...document.querySelectorAll('.markdown [style], .thinking [style], .msg-user [style]')].length`,
		"no ids or spoofed classes": `!document.querySelector('.markdown [id], .markdown .overlay, .markdown p.gauge') && document.querySelectorAll('#gauge').length === 1`,
		"payloads shown as text":    `(() => { const t = document.querySelector('.transcript').textContent; return ['window.__xss=1', 'window.__xss=24', 'window.__xss=30', 'window.__xss=40', 'window.__xss=42', 'window.__xss=43', 'window.__xss=46', 'window.__xss=48', 'window.__xss=61'].every(s => t.includes(s)) })()`,
		"name shown as text":        fmt.Sprintf(`document.querySelector('.tab[data-session-id="%s"] .tab-name').textContent === %s && document.querySelector('%s .s-title').textContent === %s && document.querySelector('#sessions-list .s-item-name').textContent === %s`, id, jsStr(name), pn, jsStr(name), jsStr(name)),
		"ANSI colour kept":          fmt.Sprintf(`[...document.querySelectorAll('%s .tool-output .ansi-fg-1')].some(s => s.textContent.includes('window.__xss=42'))`, pn),
	}
	for what, js := range checks {
		if !eval[bool](p, js) {
			t.Errorf("%s: %s is false", what, js)
		}
	}
}
