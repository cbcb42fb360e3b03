package webtest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	shlex "github.com/anmitsu/go-shlex"

	"github.com/execlaw/execlaw/internal/api"
	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/mail"
	"github.com/execlaw/execlaw/internal/mail/mailtest"
)

// With e-mail and exe.dev configured, the session's Email and "Send to
// exe.dev" dialogs work against the real server: a refused recipient shows
// the server's reason, an allowed one gets the transcript, and the exe.dev
// dialog creates a VM whose prompt carries the transcript and shows its links.
func TestEmailAndExeDevDialogs(t *testing.T) {
	smtpSrv := mailtest.Start(t, mailtest.Options{})
	sender, err := mail.NewSMTP(mail.SMTPConfig{Addr: smtpSrv.Addr, TLS: "none", From: "execlaw@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	allow, _ := mail.ParsePolicy("me@example.com")

	var mu sync.Mutex
	var exeBodies, exeAuth []string
	exe := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		exeBodies, exeAuth = append(exeBodies, string(b)), append(exeAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		io.WriteString(w, `{}`)
	}))
	defer exe.Close()

	h := apitest.New(t, apitest.Options{
		Email:  api.EmailOptions{Sender: sender, Allow: allow},
		ExeDev: api.ExeDevOptions{Enabled: true, APIURL: exe.URL},
	})
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "The handoff answer."}).Attach(t)
	p := openPage(t, h, pageOptions{})
	id := p.createSession(fake, "Hand Off")
	p.send(id, "Please answer")
	p.idle(id)
	pn := panel(id)

	// Email: refused, then sent.
	p.click(pn + ` .s-actions button[aria-label="Email the transcript"]`)
	p.waitFor("the email dialog", `document.querySelector('#email-dialog').open`)
	p.setValue("#email-to", "stranger@example.com")
	p.click(`#email-form button[type=submit]`)
	p.waitText("#email-problem", "not an allowed recipient")
	if _, ok := smtpSrv.Pending(); ok {
		t.Fatal("a refused recipient got mail")
	}
	p.setValue("#email-to", "me@example.com")
	p.click(`#email-form button[type=submit]`)
	p.waitFor("the dialog to close", `!document.querySelector('#email-dialog').open`)
	got := smtpSrv.Wait(t, wait)
	_, text, _ := mailtest.Parse(t, got.Data)
	if strings.Join(got.To, ",") != "me@example.com" || !strings.Contains(text, "Please answer") || !strings.Contains(text, "The handoff answer.") {
		t.Errorf("mail to %v:\n%s", got.To, text)
	}

	// exe.dev: the name is made from the session's, the token is sent once.
	p.click(pn + ` .s-actions button[aria-label="Send to a new exe.dev VM"]`)
	p.waitFor("the exe.dev dialog", `document.querySelector('#exedev-dialog').open`)
	if name := eval[string](p, `document.querySelector('#exedev-name').value`); name != "hand-off" {
		t.Errorf("VM name %q", name)
	}
	p.setValue("#exedev-token", "exe0.token-from-the-browser")
	p.click(`#exedev-form button[type=submit]`)
	p.waitText("#exedev-result", "https://hand-off.shelley.exe.xyz/")
	if v := eval[string](p, `document.querySelector('#exedev-token').value`); v != "" {
		t.Errorf("the token stays in the form: %q", v)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(exeBodies) != 1 || exeAuth[0] != "Bearer exe0.token-from-the-browser" {
		t.Fatalf("exe.dev got %d requests, auth %v", len(exeBodies), exeAuth)
	}
	words, err := shlex.Split(exeBodies[0], true)
	if err != nil || len(words) != 4 || words[2] != "--name=hand-off" {
		t.Fatalf("command %q: %v", exeBodies[0], err)
	}
	prompt := strings.TrimPrefix(words[3], "--prompt=")
	for _, want := range []string{`Continue the work of the ExeClaw session “Hand Off”`, "Please answer", "The handoff answer."} {
		if !strings.Contains(prompt, want) {
			t.Errorf("prompt lacks %q:\n%s", want, prompt)
		}
	}
	links := eval[[]string](p, `[...document.querySelectorAll('#exedev-result a')].map(a => a.href)`)
	if fmt.Sprint(links) != "[https://hand-off.exe.xyz/ https://hand-off.shelley.exe.xyz/]" {
		t.Errorf("links %v", links)
	}
}
