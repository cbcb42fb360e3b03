package api_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/api"
	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/mail"
	"github.com/execlaw/execlaw/internal/mail/mailtest"
	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/testutil"
)

const (
	testAPIKey   = "sk-ant-test-key" // what apitest's AnthropicSession sends
	smtpPassword = "smtp-pa55word-xyz"
)

func smtpSender(t *testing.T, addr, tlsMode string, roots *tls.Config) mail.Sender {
	t.Helper()
	cfg := mail.SMTPConfig{Addr: addr, TLS: tlsMode, From: "execlaw@example.com", TLSConfig: roots, Timeout: 10 * time.Second}
	if tlsMode != "none" {
		cfg.User, cfg.Password = "mailer", smtpPassword
	}
	s, err := mail.NewSMTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func allow(t *testing.T, list string) mail.Policy {
	t.Helper()
	p, err := mail.ParsePolicy(list)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// conversation runs one turn with a tool call, text that tries to be HTML,
// and an image, and returns the session once it is idle again.
func conversation(t *testing.T, h *apitest.Harness, more ...llmtest.Turn) session.View {
	t.Helper()
	fake := llmtest.NewAnthropic(append([]llmtest.Turn{
		{
			Text:        "Let me look <script>alert('x')</script>.",
			ToolCalls:   []llmtest.ToolCall{{Name: "bash", Input: `{"command":"echo tool-output-$((6*7))"}`}},
			InputTokens: 120, OutputTokens: 30,
		},
		{Text: "The answer is **42**. ![pixel](https://tracker.example/p.png)", InputTokens: 200, OutputTokens: 12},
	}, more...)...).Attach(t)
	s := h.AnthropicSession(fake, map[string]any{"name": "Mail <me> test"})
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "What is six times seven? Use the shell.")
	idle := st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	// The turn's last event is the status that follows agent_idle: the log
	// is still once it is in.
	st.WaitFor(t, apitest.Wait, "the status after the turn", func(e testutil.SSEEvent) bool { return e.Type == event.Status && e.ID > idle.ID })
	return h.WaitState(s.ID, "active")
}

func TestEmailTranscriptOverSMTP(t *testing.T) {
	srv := mailtest.Start(t, mailtest.Options{TLS: "starttls", User: "mailer", Password: smtpPassword})
	var logs testutil.SyncBuffer
	h := apitest.New(t, apitest.Options{
		Email: api.EmailOptions{Sender: smtpSender(t, srv.Addr, "starttls", &tls.Config{RootCAs: srv.RootCAs}), Allow: allow(t, "team@example.com, @example.org")},
		Log:   &logs,
	})
	var platform struct {
		Features map[string]bool `json:"features"`
	}
	h.Must(200, "GET", "/api/platform", nil).JSON(t, &platform)
	if !platform.Features["email"] || platform.Features["exedevNew"] {
		t.Errorf("features = %v", platform.Features)
	}

	s := conversation(t, h)
	h.Must(200, "POST", "/api/sessions/"+s.ID+"/email", map[string]string{"to": "team@example.com"})
	got := srv.Wait(t, apitest.Wait)
	if !got.TLS || got.AuthUser != "mailer" || got.From != "execlaw@example.com" || strings.Join(got.To, ",") != "team@example.com" {
		t.Errorf("envelope: TLS %v, user %q, from %q, to %v", got.TLS, got.AuthUser, got.From, got.To)
	}
	msg, text, html := mailtest.Parse(t, got.Data)
	subject, _ := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if subject != "ExeClaw transcript: Mail <me> test" {
		t.Errorf("Subject %q", subject)
	}
	if msg.Header.Get("From") != "<execlaw@example.com>" || msg.Header.Get("To") != "<team@example.com>" || msg.Header.Get("MIME-Version") != "1.0" {
		t.Errorf("headers %v", msg.Header)
	}
	if d, err := msg.Header.Date(); err != nil || time.Since(d) > time.Minute || time.Since(d) < -time.Minute {
		t.Errorf("Date %v, %v", d, err)
	}
	for _, want := range []string{
		"# Mail <me> test", "## User", "What is six times seven? Use the shell.",
		"## Assistant", "Let me look <script>alert('x')</script>.",
		"### Tool call: bash", `"command": "echo tool-output-$((6*7))"`, "tool-output-42", "exit code 0",
		"The answer is **42**.", "- Usage: 320 input tokens, 42 output tokens",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text part lacks %q", want)
		}
	}
	for _, want := range []string{"<h2>User</h2>", "<h2>Assistant</h2>", "Let me look &lt;script&gt;alert(", "<strong>42</strong>",
		"Tool call: bash", "tool-output-42", "320 input tokens", "[image: pixel] (https://tracker.example/p.png)"} {
		if !strings.Contains(html, want) {
			t.Errorf("HTML part lacks %q", want)
		}
	}
	for _, bad := range []string{"<script", "<img"} {
		if strings.Contains(html, bad) {
			t.Errorf("HTML part contains %s", bad)
		}
	}
	if t.Failed() {
		t.Logf("text:\n%s\nhtml:\n%s", text, html)
	}
	raw := string(got.Data)
	for _, secret := range []string{testAPIKey, smtpPassword} {
		if strings.Contains(raw, secret) || strings.Contains(text, secret) || strings.Contains(html, secret) {
			t.Errorf("%q is in the message", secret)
		}
		if strings.Contains(logs.String(), secret) {
			t.Errorf("%q is in the log", secret)
		}
	}

	// A whole domain on the list.
	h.Must(200, "POST", "/api/sessions/"+s.ID+"/email", map[string]string{"to": "someone@example.org"})
	if m := srv.Wait(t, apitest.Wait); strings.Join(m.To, ",") != "someone@example.org" {
		t.Errorf("to %v", m.To)
	}
}

func TestEmailRefusals(t *testing.T) {
	srv := mailtest.Start(t, mailtest.Options{})
	h := apitest.New(t, apitest.Options{Email: api.EmailOptions{Sender: smtpSender(t, srv.Addr, "none", nil), Allow: allow(t, "ops@example.com")}})
	s := conversation(t, h)
	path := "/api/sessions/" + s.ID + "/email"
	for _, c := range []struct {
		body any
		want int
		says string
	}{
		{map[string]string{"to": "stranger@example.com"}, 400, "not an allowed recipient"},
		{map[string]string{"to": "ops@example.com.evil.io"}, 400, "not an allowed recipient"},
		{map[string]string{"to": "not-an-address"}, 400, "one e-mail address"},
		{map[string]string{"to": "ops@example.com, stranger@example.com"}, 400, "one e-mail address"},
		{map[string]string{"to": "Ops <ops@example.com>"}, 400, "one e-mail address"},
		{map[string]string{"to": "ops@example.com\r\nBcc: stranger@example.com"}, 400, "one e-mail address"},
		{map[string]string{"to": ""}, 400, "one e-mail address"},
		{map[string]any{"to": "ops@example.com", "bcc": "x@example.com"}, 400, "unknown field"},
		{"to=ops@example.com", 400, "invalid JSON"},
	} {
		r := h.Do("POST", path, c.body, nil)
		if r.Status != c.want || !strings.Contains(string(r.Body), c.says) {
			t.Errorf("%v: %d %s; want %d saying %q", c.body, r.Status, r.Body, c.want, c.says)
		}
	}
	// Someone else's session, or none, is not found before anything else.
	if r := h.Do("POST", "/api/sessions/s_000000000000000000000000/email", map[string]string{"to": "ops@example.com"}, nil); r.Status != 404 {
		t.Errorf("unknown session: %d", r.Status)
	}
	if _, ok := srv.Pending(); ok {
		t.Error("a refused request sent mail")
	}
}

// The mail server being down answers 502 and changes nothing.
func TestEmailServerDown(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sender func(t *testing.T) mail.Sender
	}{
		{"smtp", func(t *testing.T) mail.Sender { return smtpSender(t, mailtest.DeadAddr(t), "none", nil) }},
		{"gateway", func(t *testing.T) mail.Sender {
			g, err := mail.NewGateway("http://"+mailtest.DeadAddr(t), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			return g
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := apitest.New(t, apitest.Options{Email: api.EmailOptions{Sender: tc.sender(t), Allow: allow(t, "ops@example.com")}})
			s := conversation(t, h, llmtest.Turn{Text: "Still here."})
			before := h.Must(200, "GET", "/api/sessions/"+s.ID+"/transcript?format=md", nil).Body
			var v1 session.View
			h.Must(200, "GET", "/api/sessions/"+s.ID+"/status", nil).JSON(t, &v1)

			r := h.Do("POST", "/api/sessions/"+s.ID+"/email", map[string]string{"to": "ops@example.com"}, nil)
			if r.Status != http.StatusBadGateway || !strings.Contains(string(r.Body), "could not send the transcript") || !strings.Contains(string(r.Body), "Nothing was changed") {
				t.Errorf("server down: %d %s", r.Status, r.Body)
			}

			after := h.Must(200, "GET", "/api/sessions/"+s.ID+"/transcript?format=md", nil).Body
			var v2 session.View
			h.Must(200, "GET", "/api/sessions/"+s.ID+"/status", nil).JSON(t, &v2)
			if !bytes.Equal(before, after) || v2.State != "active" || v2.LastEventID != v1.LastEventID || v2.Usage != v1.Usage {
				t.Errorf("the session changed: %+v -> %+v", v1, v2)
			}
			// Still usable.
			st := h.Stream(s.ID, "")
			h.Input(s.ID, "still there?")
			st.WaitType(t, apitest.Wait, event.AgentIdle, 2)
		})
	}
}

// Without a transport, e-mail is off and says so.
func TestEmailNotConfigured(t *testing.T) {
	h := apitest.New(t, apitest.Options{})
	var platform struct {
		Features map[string]bool `json:"features"`
	}
	h.Must(200, "GET", "/api/platform", nil).JSON(t, &platform)
	if platform.Features["email"] {
		t.Error("features.email without a transport")
	}
	fake := llmtest.NewAnthropic().Attach(t)
	s := h.AnthropicSession(fake, nil)
	if r := h.Do("POST", "/api/sessions/"+s.ID+"/email", map[string]string{"to": "a@example.com"}, nil); r.Status != 501 {
		t.Errorf("no transport: %d %s", r.Status, r.Body)
	}
	if r := h.Do("POST", "/api/sessions", map[string]any{"provider": "anthropic", "apiKey": "k", "baseUrl": fake.BaseURL(), "emailOnIdle": true}, nil); r.Status != 400 || !strings.Contains(string(r.Body), "emailOnIdle") {
		t.Errorf("emailOnIdle without mail: %d %s", r.Status, r.Body)
	}
}

// On exe.dev the gateway carries the mail, and the user's own address (from
// the proxy) is allowed without any list.
func TestEmailThroughExeDevGateway(t *testing.T) {
	type req struct {
		Method, Path, ContentType string
		Body                      map[string]string
	}
	got := make(chan req, 2)
	var fail atomic.Bool
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		raw, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Errorf("gateway got %q", raw)
		}
		got <- req{r.Method, r.URL.Path, r.Header.Get("Content-Type"), body}
		if fail.Load() {
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"error": "sending is rate-limited"}`)
			return
		}
		io.WriteString(w, `{"success": true}`)
	}))
	defer gw.Close()
	g, err := mail.NewGateway(gw.URL, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h := apitest.New(t, apitest.Options{Auth: api.Auth{Mode: api.AuthExeDev}, Email: api.EmailOptions{Sender: g}})
	s := conversation(t, h)

	h.Must(200, "POST", "/api/sessions/"+s.ID+"/email", map[string]string{"to": "alice@example.com"})
	r := <-got
	if r.Method != "POST" || r.Path != "/gateway/email/send" || r.ContentType != "application/json" || len(r.Body) != 3 {
		t.Errorf("gateway request %+v", r)
	}
	if r.Body["to"] != "alice@example.com" || r.Body["subject"] != "ExeClaw transcript: Mail <me> test" ||
		!strings.Contains(r.Body["body"], "## User") || !strings.Contains(r.Body["body"], "tool-output-42") || strings.Contains(r.Body["body"], testAPIKey) {
		t.Errorf("gateway body %v", r.Body)
	}

	if resp := h.Do("POST", "/api/sessions/"+s.ID+"/email", map[string]string{"to": "bob@example.com"}, nil); resp.Status != 400 ||
		!strings.Contains(string(resp.Body), "your own address (alice@example.com)") {
		t.Errorf("someone else: %d %s", resp.Status, resp.Body)
	}
	fail.Store(true)
	if resp := h.Do("POST", "/api/sessions/"+s.ID+"/email", map[string]string{"to": "alice@example.com"}, nil); resp.Status != 502 ||
		!strings.Contains(string(resp.Body), "gateway did not take it") {
		t.Errorf("gateway refusing: %d %s", resp.Status, resp.Body)
	}
	<-got
}

// A session created with emailOnIdle mails its transcript to its owner when
// the idle reaper ends it.
func TestEmailOnIdle(t *testing.T) {
	srv := mailtest.Start(t, mailtest.Options{})
	h := apitest.New(t, apitest.Options{Email: api.EmailOptions{Sender: smtpSender(t, srv.Addr, "none", nil), Allow: allow(t, "@example.org, owner@example.com")}})
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "Hello from the idle test."}).Attach(t)
	s := h.AnthropicSession(fake, map[string]any{"emailOnIdle": true, "idleTimeoutMin": 5, "name": "sleepy"})
	if !s.EmailOnIdle {
		t.Errorf("view: %+v", s)
	}
	other := h.AnthropicSession(fake, map[string]any{"idleTimeoutMin": 5})
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "say hello")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	h.WaitState(s.ID, "active")
	h.WaitState(other.ID, "active")

	// The settings are kept with the session: the recipient is not in the
	// view, but in the stored configuration.
	rec, err := h.Store.GetSession(t.Context(), s.ID)
	if err != nil || !strings.Contains(string(rec.Config), `"emailOnIdle":true`) || !strings.Contains(string(rec.Config), `"emailTo":"owner@example.com"`) {
		t.Errorf("stored config %s, %v", rec.Config, err)
	}

	h.Mgr.ReapIdle(time.Now().Add(6 * time.Minute))
	got := srv.Wait(t, apitest.Wait)
	msg, text, _ := mailtest.Parse(t, got.Data)
	subject, _ := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if strings.Join(got.To, ",") != "owner@example.com" || msg.Header.Get("Auto-Submitted") != "auto-generated" ||
		!strings.Contains(subject, "sleepy") || !strings.Contains(subject, "idle") ||
		!strings.Contains(text, "Hello from the idle test.") || !strings.Contains(text, "idle timeout") {
		t.Errorf("idle mail to %v, subject %q, headers %v:\n%s", got.To, subject, msg.Header, text)
	}
	h.WaitState(s.ID, "stopped")
	h.WaitState(other.ID, "stopped")
	// Only the session that asked for it sends mail; Close waits for the
	// reaper's work, so after Stop nothing more can arrive.
	h.Stop()
	if m, ok := srv.Pending(); ok {
		t.Errorf("a second mail went to %v", m.To)
	}
}

// The idle hook failing (mail server down) is logged, and the session still
// ends normally.
func TestEmailOnIdleServerDown(t *testing.T) {
	var logs testutil.SyncBuffer
	h := apitest.New(t, apitest.Options{
		Email: api.EmailOptions{Sender: smtpSender(t, mailtest.DeadAddr(t), "none", nil), Allow: allow(t, "owner@example.com")},
		Log:   &logs, HookTimeout: 10 * time.Second,
	})
	fake := llmtest.NewAnthropic().Attach(t)
	s := h.AnthropicSession(fake, map[string]any{"emailOnIdle": true, "idleTimeoutMin": 5})
	h.WaitState(s.ID, "active")
	h.Mgr.ReapIdle(time.Now().Add(6 * time.Minute))
	h.WaitState(s.ID, "stopped")
	h.Stop() // waits for the hook
	if !strings.Contains(logs.String(), "e-mail transcript of idle session") {
		t.Errorf("the failure is not logged:\n%s", logs.String())
	}
}

// In exedev mode the owner's own address is where idle mail goes.
func TestEmailOnIdleExeDevOwner(t *testing.T) {
	srv := mailtest.Start(t, mailtest.Options{})
	h := apitest.New(t, apitest.Options{Auth: api.Auth{Mode: api.AuthExeDev}, Email: api.EmailOptions{Sender: smtpSender(t, srv.Addr, "none", nil)}})
	fake := llmtest.NewAnthropic().Attach(t)
	s := h.AnthropicSession(fake, map[string]any{"emailOnIdle": true, "idleTimeoutMin": 5})
	h.WaitState(s.ID, "active")
	h.Mgr.ReapIdle(time.Now().Add(6 * time.Minute))
	if got := srv.Wait(t, apitest.Wait); strings.Join(got.To, ",") != "alice@example.com" {
		t.Errorf("idle mail went to %v", got.To)
	}
}
