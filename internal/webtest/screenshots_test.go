package webtest

import (
	"os"
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
	h := apitest.New(t, apitest.Options{})
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
