package webtest

import (
	"fmt"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/agent/builtin"
	"github.com/execlaw/execlaw/internal/agent/claudecode"
	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
)

// The form against an OpenAI-compatible endpoint: the base URL is required,
// the model list is fetched live with the key (sent in a header), searched
// and picked by keyboard; the key is remembered only when asked, and the
// session runs with the picked model.
func TestFormOpenAICompatibleModelPicker(t *testing.T) {
	fake := llmtest.NewOpenAI(llmtest.Turn{Text: "compatible answer"}).Attach(t)
	fake.SetModels("local-llama-3", "local-qwen-coder", "tiny-model")
	fake.RequireKey("sk-local-key")
	h := apitest.New(t, apitest.Options{})
	p := openPage(t, h, pageOptions{})
	if !eval[bool](p, `document.querySelector('#ns-agent-field').hidden`) {
		t.Error("the agent picker shows with only the built-in agent to pick")
	}

	p.do(chromedp.SetValue(chromedp.CSS("#ns-provider"), "openai-compatible"))
	p.eval0(`document.querySelector('#ns-provider').dispatchEvent(new Event('change'))`)
	p.waitText("#ns-baseurl-opt", "(required)")
	// Nothing to list without a base URL; the form says what it needs.
	p.click("#ns-submit")
	p.waitText("#ns-problem", "base URL")

	p.setValue("#ns-baseurl", fake.BaseURL())
	// The endpoint wants a key: its refusal is shown, not a broken list.
	p.waitText("#ns-model-info", "401")
	p.typeInto("#ns-key", "sk-local-key")
	p.waitText("#ns-model-info", "3 models (live)")

	p.setValue("#ns-model", "")
	p.typeInto("#ns-model", "qwen")
	p.waitFor("the filtered list", `(() => { const l = document.querySelector('#ns-model-list'); return !l.hidden && l.querySelectorAll('li[data-model-id]').length === 1 })()`)
	p.key(kb.ArrowDown)
	p.enter()
	p.waitFor("the picked model", `document.querySelector('#ns-model').value === 'local-qwen-coder' && document.querySelector('#ns-model-list').hidden`)
	p.click("#ns-remember")
	p.setValue("#ns-name", "compatible")
	p.click("#ns-submit")
	p.waitFor("the new tab", `document.querySelectorAll('#tabs .tab').length === 1`)
	id := p.activeTab()
	p.waitFor("the session to be ready", fmt.Sprintf(`document.querySelector('%s .st-text').textContent === 'Ready'`, panel(id)))
	p.send(id, "hello local model")
	p.waitText(panel(id)+" .msg-assistant", "compatible answer")
	p.idle(id)

	var chat llmtest.Request
	for _, r := range fake.Requests() {
		if r.Method == "POST" {
			chat = r
		}
	}
	if chat.JSON == nil || chat.JSON["model"] != "local-qwen-coder" {
		t.Errorf("chat request model = %v", chat.JSON["model"])
	}
	for _, r := range fake.Requests() {
		if r.Method == "GET" && r.Header.Get("Authorization") == "Bearer sk-local-key" {
			goto listed
		}
	}
	t.Error("the model list was never fetched with the key")
listed:

	// Remembered on request, and offered again for this provider.
	if !eval[bool](p, `JSON.parse(localStorage.getItem('execlaw.keys'))['openai-compatible'] === 'sk-local-key'`) {
		t.Error("the key was not remembered although asked to")
	}
	p.reload()
	p.click("#new-tab")
	p.waitFor("the remembered choices", fmt.Sprintf(`document.querySelector('#ns-provider').value === 'openai-compatible' && document.querySelector('#ns-key').value === 'sk-local-key' && document.querySelector('#ns-remember').checked && document.querySelector('#ns-baseurl').value === %s && document.querySelector('#ns-model').value === 'local-qwen-coder'`, jsStr(fake.BaseURL())))
	// Show reveals the key; Clear forgets it.
	p.click("#ns-key-show")
	p.waitFor("the key in clear", `document.querySelector('#ns-key').type === 'text'`)
	p.click("#ns-key-clear")
	p.waitFor("the key gone", `document.querySelector('#ns-key').value === '' && !(localStorage.getItem('execlaw.keys') || '').includes('sk-local-key')`)
}

// With agents besides the built-in one the form offers them. Claude Code
// takes the Anthropic provider (the form says so if another is picked), and
// the session runs the agent chosen, shown in its header.
func TestFormAgentPicker(t *testing.T) {
	h := apitest.New(t, apitest.Options{Agents: []agent.Kind{builtin.Kind, claudecode.Kind}})
	p := openPage(t, h, pageOptions{})
	p.waitFor("the agent picker", `!document.querySelector('#ns-agent-field').hidden && document.querySelector('#ns-agent').options.length === 2`)
	choose := func(sel, value string) {
		p.do(chromedp.SetValue(chromedp.CSS(sel), value))
		p.eval0(`document.querySelector(` + jsStr(sel) + `).dispatchEvent(new Event('change'))`)
	}
	choose("#ns-provider", "openai")
	p.setValue("#ns-temp", "0.5") // which the server would refuse for Claude Code
	choose("#ns-agent", "claude-code")
	p.waitFor("the Anthropic provider", `document.querySelector('#ns-provider').value === 'anthropic'`)
	p.waitText("#ns-agent-hint", "per-session token")
	// What Claude Code chooses itself cannot be set, and is not sent.
	p.waitFor("sampling options disabled", `['#ns-temp', '#ns-maxtokens', '#ns-thinking'].every((s) => document.querySelector(s).disabled)`)

	choose("#ns-provider", "openai")
	p.typeInto("#ns-key", "sk-openai-key-0123456789")
	p.click("#ns-submit")
	p.waitText("#ns-problem", "choose Anthropic as the provider")

	choose("#ns-provider", "anthropic")
	p.setValue("#ns-key", "sk-ant-key-0123456789")
	p.setValue("#ns-name", "with claude code")
	p.waitFor("a model", `document.querySelector('#ns-model').value !== ''`)
	p.click("#ns-submit")
	p.waitFor("the new tab", `document.querySelectorAll('#tabs .tab').length === 1`)
	id := p.activeTab()
	p.waitText(panel(id)+" .badge.agent", "claude-code")
	var v struct{ Agent, Provider string }
	h.Must(200, "GET", "/api/sessions/"+id+"/status", nil).JSON(t, &v)
	if v.Agent != "claude-code" || v.Provider != "anthropic" {
		t.Errorf("session %+v", v)
	}
}
