package webtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

// TestScreenshots writes pictures of the main views for the README into
// $EXECLAW_SCREENSHOTS (`make screenshots` sets it to docs/screenshots). It
// is not a check, so without the variable it has nothing to do.
func TestScreenshots(t *testing.T) {
	dir := os.Getenv("EXECLAW_SCREENSHOTS")
	if dir == "" {
		t.Skip("set EXECLAW_SCREENSHOTS to a directory (make screenshots) to write the README's screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fake := llmtest.NewAnthropic(
		llmtest.Turn{
			Thinking:  "The user wants a quick look at the project. I'll list the files and check the Go version first.",
			Text:      "Let me look at the workspace first.",
			ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"printf 'go.mod\\nmain.go\\n\\033[32mPASS\\033[0m ok  example 0.01s\\n\\033[33mwarning:\\033[0m 1 TODO left\\n'"}`}},
		},
		llmtest.Turn{
			Text: "The project is a small Go module and its tests **pass**. Here is the entry point with the fix:\n\n" +
				"```go\npackage main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hello from the sandbox\")\n}\n```\n\n" +
				"Next steps:\n\n1. Resolve the remaining `TODO`.\n2. Add a test for the `--verbose` flag.\n",
		},
	).Attach(t)
	other := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{PreviewPorts: 1})
	shoot := func(p *page, name string) { p.screenshot(filepath.Join(dir, name)) }

	p := openPage(t, h, pageOptions{})
	p.do(chromedp.EmulateViewport(1280, 800))
	p.eval0(`localStorage.setItem('execlaw.theme', '"light"')`)
	p.reload()
	shoot(p, "new-session.png")
	p.createSession(other, "refactor-parser")
	p.click("#new-tab")
	id := p.createSession(fake, "tidy-otter")
	p.send(id, "Have a look at the project and run its tests.")
	p.waitFor("the answer", `!!document.querySelector('.codeblock .hljs-keyword')`)
	p.idle(id)
	p.eval0(`document.querySelectorAll('.thinking').forEach(d => d.open = true)`)
	p.do(chromedp.EmulateViewport(1280, 1000))
	shoot(p, "desktop-light.png")
	filesPanel(t, h, p, id, shoot)
	terminalAndPreview(t, h, p, id, shoot)
	p.click("#theme-btn")
	p.waitFor("the dark theme", `document.documentElement.dataset.theme === 'dark'`)
	shoot(p, "desktop-dark.png")
	p.click("#gauge")
	p.waitFor("the gauge details", `!document.querySelector('#gauge-pop').hidden`)
	shoot(p, "gauge-dark.png")

	m := openPage(t, h, pageOptions{mobile: true})
	m.eval0(`localStorage.setItem('execlaw.theme', '"light"')`)
	m.eval0(`localStorage.setItem('execlaw.tabs', JSON.stringify({ids: [` + jsStr(id) + `], active: ` + jsStr(id) + `}))`)
	m.reload()
	m.waitText(panel(id)+" .msg-assistant", "Next steps")
	m.eval0(`document.querySelector('#panel-` + id + ` .scroller').scrollTop = 1e9`)
	shoot(m, "mobile-light.png")
	m.click("#theme-btn")
	m.waitFor("the dark theme", `document.documentElement.dataset.theme === 'dark'`)
	shoot(m, "mobile-dark.png")
}

// filesPanel shoots the Files panel with a file open, and the Changes view,
// then closes the panel again.
func filesPanel(t *testing.T, h *apitest.Harness, p *page, id string, shoot func(*page, string)) {
	ws := h.Workspace(id)
	for name, content := range map[string]string{
		"go.mod":         "module example.com/hello\n\ngo 1.22\n",
		"main.go":        "package main\n\nimport (\n\t\"flag\"\n\t\"fmt\"\n)\n\nfunc main() {\n\tverbose := flag.Bool(\"verbose\", false, \"say more\")\n\tflag.Parse()\n\tfmt.Println(\"hello from the sandbox\")\n\tif *verbose {\n\t\tfmt.Println(\"(verbose)\")\n\t}\n}\n",
		"main_test.go":   "package main\n\nimport \"testing\"\n\nfunc TestMain(t *testing.T) {}\n",
		"README.md":      "# hello\n\nA small Go module.\n",
		"docs/notes.md":  "- TODO: a test for --verbose\n",
		"scripts/run.sh": "#!/bin/sh\ngo run . \"$@\"\n",
	} {
		os.MkdirAll(filepath.Dir(filepath.Join(ws, name)), 0o755)
		if err := os.WriteFile(filepath.Join(ws, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pn := panel(id)
	p.click(pn + " .open-files")
	p.waitFor("the listing", `!!document.querySelector('`+pn+` .ws-row[data-name="main.go"]')`)
	shoot(p, "files-panel.png")
	p.click(pn + ` .ws-row[data-name="main.go"] .ws-entry`)
	p.waitFor("the file", `!!document.querySelector('`+pn+` .ws-code .hljs-keyword')`)
	shoot(p, "files-open.png")
	p.click("#ws-tab-changes-" + id)
	p.waitFor("the diff", `!!document.querySelector('`+pn+` .ws-diff .diff-add')`)
	shoot(p, "changes-panel.png")
	p.click("#ws-tab-files-" + id)
	p.click(pn + " .open-files")
}

// previewApp is the small web app the preview shot shows: it says which
// origin it is served on (a screenshot has no address bar).
const previewApp = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hello</title><link rel="icon" href="data:,">
<style>
body { margin: 0; font: 16px/1.5 system-ui, sans-serif; background: #f4f6fa; color: #1c2430; }
header { background: #0f766e; color: #fff; padding: 28px 48px; }
header h1 { margin: 0; font-size: 28px; }
main { max-width: 720px; margin: 32px 48px; }
.card { background: #fff; border: 1px solid #d8dee8; border-radius: 10px; padding: 20px 24px; margin-bottom: 20px; }
code { background: #eef1f6; padding: 1px 6px; border-radius: 4px; }
button { font: inherit; padding: 6px 16px; border-radius: 6px; border: 1px solid #0f766e; background: #0f766e; color: #fff; }
</style></head>
<body>
<header><h1>hello from the sandbox</h1><div>a web app the agent wrote, running in its session</div></header>
<main>
<div class="card"><p>Served by <code>python3 -m http.server</code> inside the session's sandbox, through ExeClaw's preview proxy.</p>
<p>This page's origin: <code id="origin"></code><br>ExeClaw's origin: <code>%s</code></p>
<p>Another origin: this page's scripts cannot read ExeClaw's API or its cookies.</p></div>
<div class="card"><button id="count" type="button">Clicked 0 times</button></div>
</main>
<script>
document.getElementById('origin').textContent = location.origin;
let n = 0;
const b = document.getElementById('count');
b.onclick = () => { b.textContent = 'Clicked ' + (++n) + ' times'; };
document.body.dataset.ready = 'true';
</script>
</body></html>
`

// terminalAndPreview shoots a web server started in a terminal in the
// session's panel (after listing the workspace) and its live preview, then
// closes the terminal (which ends the server) again.
func terminalAndPreview(t *testing.T, h *apitest.Harness, p *page, id string, shoot func(*page, string)) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatal("the preview screenshot serves its app with python3, which is not installed")
	}
	if err := os.WriteFile(filepath.Join(h.Workspace(id), "index.html"), []byte(fmt.Sprintf(previewApp, h.TS.URL)), 0o644); err != nil {
		t.Fatal(err)
	}
	pn := panel(id)
	p.click(pn + " .open-terminal")
	p.waitFor("the terminal to connect", `!!document.querySelector('`+pn+` .term-view[data-state=open]')`)
	p.typeTerm(id, "ls -la\r")
	p.waitFor("the listing in the terminal", termText(id)+`.includes('main_test.go')`)
	port := freePort(t)
	p.typeTerm(id, fmt.Sprintf("python3 -m http.server %d --bind 127.0.0.1\r", port))
	p.waitFor("the server in the terminal", termText(id)+`.includes('Serving HTTP')`)
	link := fmt.Sprintf(`%s .st-ports .preview-link[data-port="%d"]`, pn, port)
	p.waitFor("the port's preview link", fmt.Sprintf(`!!document.querySelector(%s)`, jsStr(link)))

	v := openPage(t, h, pageOptions{})
	v.do(chromedp.EmulateViewport(1280, 800))
	v.do(chromedp.Navigate(eval[string](p, fmt.Sprintf(`document.querySelector(%s).href`, jsStr(link)))))
	v.waitFor("the app", `document.body && document.body.dataset.ready === 'true'`)
	shoot(v, "preview.png")
	p.waitFor("the server's log of the preview", termText(id)+`.includes('"GET / HTTP/1.1" 200')`)
	shoot(p, "terminal.png")

	p.click(pn + " .term-tab-close")
	p.waitFor("the terminals to close", `document.querySelector('`+pn+` .term-dock').hidden`)
	p.waitFor("the port to be gone", `!document.querySelector('`+pn+` .st-ports .port')`)
}

// freePort is a TCP port nothing listens on now (the process sandbox
// shares the host's network): 3000, a dev server's usual one, when free.
func freePort(t *testing.T) int {
	for _, addr := range []string{"127.0.0.1:3000", "127.0.0.1:0"} {
		if ln, err := net.Listen("tcp", addr); err == nil {
			port := ln.Addr().(*net.TCPAddr).Port
			ln.Close()
			return port
		}
	}
	t.Fatal("no free TCP port")
	return 0
}
