package mail_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/mail"
	"github.com/execlaw/execlaw/internal/mail/mailtest"
)

const wait = 20 * time.Second

func TestCheckAddress(t *testing.T) {
	for _, ok := range []string{"a@example.com", " bob.smith+tag@mail.example.org ", "x@localhost", "O'Neil@example.ie"} {
		if got, err := mail.CheckAddress(ok); err != nil || got != strings.TrimSpace(ok) {
			t.Errorf("CheckAddress(%q) = %q, %v", ok, got, err)
		}
	}
	for _, bad := range []string{
		"", "plain", "@example.com", "a@", "a@b@c.com", "Bob <bob@example.com>", "a@example.com, b@example.com",
		"a@example.com\r\nBcc: c@example.com", "a b@example.com", "a@exa mple.com", "a@-example.com", "a@example..com",
		`"quoted"@example.com`, "a@[127.0.0.1]", "a@example.com (comment)", strings.Repeat("a", 250) + "@x.com",
	} {
		if got, err := mail.CheckAddress(bad); !errors.Is(err, mail.ErrInvalidAddress) {
			t.Errorf("CheckAddress(%q) = %q, %v; want ErrInvalidAddress", bad, got, err)
		}
	}
}

func TestPolicy(t *testing.T) {
	p, err := mail.ParsePolicy(" ops@example.com, @Team.Example.org ,, dev@example.net")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		to, own string
		want    bool
	}{
		{"ops@example.com", "", true},
		{"OPS@Example.com", "", true},
		{"anyone@team.example.org", "", true},
		{"x@sub.team.example.org", "", false}, // a domain entry is that domain only
		{"x@example.com", "", false},
		{"me@elsewhere.io", "me@elsewhere.io", true},
		{"ME@elsewhere.io", "me@ELSEWHERE.io", true},
		{"you@elsewhere.io", "me@elsewhere.io", false},
		{"ops@example.com.evil.io", "", false},
	} {
		if got := p.Allows(c.to, c.own); got != c.want {
			t.Errorf("Allows(%q, own %q) = %v, want %v", c.to, c.own, got, c.want)
		}
	}
	if p.Owner() != "ops@example.com" || p.Empty() {
		t.Errorf("Owner %q, Empty %v", p.Owner(), p.Empty())
	}
	empty, err := mail.ParsePolicy("")
	if err != nil || !empty.Empty() || empty.Allows("a@example.com", "") || !empty.Allows("a@example.com", "a@example.com") || empty.Owner() != "" {
		t.Errorf("empty policy: %v %v", empty, err)
	}
	domainsOnly, _ := mail.ParsePolicy("@example.com")
	if domainsOnly.Owner() != "" {
		t.Error("a domain is nobody's own address")
	}
	for _, bad := range []string{"not an address", "@", "@exa mple.com", "a@b.com; c@d.com"} {
		if _, err := mail.ParsePolicy(bad); err == nil {
			t.Errorf("ParsePolicy(%q) accepted", bad)
		}
	}
}

func message() mail.Message {
	return mail.Message{
		To: "rcpt@example.com", Subject: "ExeClaw transcript: déjà vu\r\nBcc: evil@example.com",
		Text: "# Transcript\n\n## User\n\nhéllo\n", HTML: "<p>héllo</p>",
		Date: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
	}
}

func TestSMTPModes(t *testing.T) {
	for _, c := range []struct {
		name, tls, user, pass string
	}{
		{"plain", "none", "", ""},
		{"starttls+auth", "starttls", "mailer", "s3cret-pass"},
		{"tls+auth", "tls", "mailer", "s3cret-pass"},
		{"starttls", "starttls", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := mailtest.Start(t, mailtest.Options{TLS: c.tls, User: c.user, Password: c.pass})
			s, err := mail.NewSMTP(mail.SMTPConfig{
				Addr: srv.Addr, TLS: c.tls, User: c.user, Password: c.pass, From: "execlaw@example.com",
				TLSConfig: &tls.Config{RootCAs: srv.RootCAs},
			})
			if err != nil {
				t.Fatal(err)
			}
			if c.pass != "" && strings.Contains(s.String(), c.pass) {
				t.Errorf("String() shows the password: %s", s)
			}
			if err := s.Send(context.Background(), message()); err != nil {
				t.Fatal(err)
			}
			got := srv.Wait(t, wait)
			if got.TLS != (c.tls != "none") || got.AuthUser != c.user {
				t.Errorf("TLS %v, user %q", got.TLS, got.AuthUser)
			}
			if got.From != "execlaw@example.com" || len(got.To) != 1 || got.To[0] != "rcpt@example.com" {
				t.Errorf("envelope from %q to %v", got.From, got.To)
			}
			msg, text, html := mailtest.Parse(t, got.Data)
			dec := new(mime.WordDecoder)
			subj, err := dec.DecodeHeader(msg.Header.Get("Subject"))
			if err != nil || subj != "ExeClaw transcript: déjà vu Bcc: evil@example.com" {
				t.Errorf("Subject %q (%v): must be one line", subj, err)
			}
			if msg.Header.Get("Bcc") != "" {
				t.Error("a Bcc header was injected through the subject")
			}
			if d, err := msg.Header.Date(); err != nil || !d.Equal(message().Date) {
				t.Errorf("Date %v %v", d, err)
			}
			if msg.Header.Get("MIME-Version") != "1.0" || msg.Header.Get("From") != "<execlaw@example.com>" || msg.Header.Get("To") != "<rcpt@example.com>" || msg.Header.Get("Message-Id") == "" {
				t.Errorf("headers: %v", msg.Header)
			}
			if text != message().Text || html != message().HTML {
				t.Errorf("text %q, html %q", text, html)
			}
			if c.pass != "" && strings.Contains(string(got.Data), c.pass) {
				t.Error("the password is in the message")
			}
		})
	}
}

func TestSMTPFailures(t *testing.T) {
	// Nothing listens.
	s, err := mail.NewSMTP(mail.SMTPConfig{Addr: mailtest.DeadAddr(t), TLS: "none", From: "x@example.com", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var de *mail.DeliveryError
	if err := s.Send(context.Background(), message()); !errors.As(err, &de) {
		t.Errorf("server down: %v, want a DeliveryError", err)
	}

	// Wrong password: refused, and the error does not repeat it.
	srv := mailtest.Start(t, mailtest.Options{TLS: "starttls", User: "mailer", Password: "right-one"})
	s, _ = mail.NewSMTP(mail.SMTPConfig{Addr: srv.Addr, TLS: "starttls", User: "mailer", Password: "wrong-pass-123", From: "x@example.com",
		TLSConfig: &tls.Config{RootCAs: srv.RootCAs}})
	err = s.Send(context.Background(), message())
	if !errors.As(err, &de) || strings.Contains(err.Error(), "wrong-pass-123") || srv.AuthFailures() != 1 {
		t.Errorf("wrong password: %v (auth failures %d)", err, srv.AuthFailures())
	}

	// A server that does not offer STARTTLS when it is required.
	plain := mailtest.Start(t, mailtest.Options{TLS: "none"})
	s, _ = mail.NewSMTP(mail.SMTPConfig{Addr: plain.Addr, TLS: "starttls", From: "x@example.com"})
	if err := s.Send(context.Background(), message()); err == nil {
		t.Error("starttls against a server without it succeeded")
	}
	if _, ok := plain.Pending(); ok {
		t.Error("a message went out unencrypted")
	}

	// An untrusted certificate.
	tlsSrv := mailtest.Start(t, mailtest.Options{TLS: "tls"})
	s, _ = mail.NewSMTP(mail.SMTPConfig{Addr: tlsSrv.Addr, TLS: "tls", From: "x@example.com"})
	if err := s.Send(context.Background(), message()); err == nil {
		t.Error("a self-signed certificate was trusted")
	}

	// A password is never sent over an unencrypted connection.
	authPlain := mailtest.Start(t, mailtest.Options{TLS: "none", User: "mailer", Password: "pw"})
	s, _ = mail.NewSMTP(mail.SMTPConfig{Addr: authPlain.Addr, TLS: "none", User: "mailer", Password: "pw", From: "x@example.com"})
	if err := s.Send(context.Background(), message()); err == nil {
		t.Error("AUTH PLAIN over an unencrypted connection succeeded")
	}
}

func TestSMTPConfig(t *testing.T) {
	for _, c := range []mail.SMTPConfig{
		{Addr: "mail.example.com", From: "a@example.com"},
		{Addr: "mail.example.com:0", From: "a@example.com"},
		{Addr: "mail.example.com:25", From: "not an address"},
		{Addr: "mail.example.com:25", From: "a@example.com", TLS: "ssl"},
		{Addr: "mail.example.com:25", From: "a@example.com", Password: "pw"},
	} {
		if _, err := mail.NewSMTP(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestGateway(t *testing.T) {
	type request struct {
		method, path, contentType string
		body                      map[string]any
	}
	got := make(chan request, 4)
	status, answer := http.StatusOK, `{"success": true}`
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		got <- request{r.Method, r.URL.Path, r.Header.Get("Content-Type"), body}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, answer)
	}))
	defer fake.Close()

	g, err := mail.NewGateway(fake.URL+"/", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Send(context.Background(), message()); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.method != "POST" || r.path != "/gateway/email/send" || r.contentType != "application/json" {
		t.Errorf("request %s %s (%s)", r.method, r.path, r.contentType)
	}
	want := map[string]any{"to": "rcpt@example.com", "subject": "ExeClaw transcript: déjà vu Bcc: evil@example.com", "body": message().Text}
	if len(r.body) != len(want) {
		t.Errorf("body has fields %v, want exactly to, subject, body", r.body)
	}
	for k, v := range want {
		if r.body[k] != v {
			t.Errorf("%s = %q, want %q", k, r.body[k], v)
		}
	}

	var de *mail.DeliveryError
	status, answer = http.StatusForbidden, `{"error": "recipient not allowed"}`
	if err := g.Send(context.Background(), message()); !errors.As(err, &de) || !strings.Contains(err.Error(), "recipient not allowed") || !strings.Contains(err.Error(), "403") {
		t.Errorf("403: %v", err)
	}
	<-got
	status, answer = http.StatusInternalServerError, "upstream exploded"
	if err := g.Send(context.Background(), message()); !errors.As(err, &de) || !strings.Contains(err.Error(), "upstream exploded") {
		t.Errorf("500: %v", err)
	}
	<-got
	status, answer = http.StatusOK, `{"error": "rate limited"}`
	if err := g.Send(context.Background(), message()); !errors.As(err, &de) || !strings.Contains(err.Error(), "rate limited") {
		t.Errorf("200 with an error: %v", err)
	}
	<-got

	// Down, and too slow.
	dead, _ := mail.NewGateway("http://"+mailtest.DeadAddr(t), 5*time.Second)
	if err := dead.Send(context.Background(), message()); !errors.As(err, &de) {
		t.Errorf("down: %v", err)
	}
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	sg, _ := mail.NewGateway(slow.URL, 200*time.Millisecond)
	if err := sg.Send(context.Background(), message()); !errors.As(err, &de) {
		t.Errorf("slow: %v", err)
	}

	for _, bad := range []string{"ftp://x", "not a url", "http://", "http://x/?q=1"} {
		if _, err := mail.NewGateway(bad, 0); err == nil {
			t.Errorf("gateway %q accepted", bad)
		}
	}
	if g, _ := mail.NewGateway("", 0); !strings.Contains(g.String(), "http://169.254.169.254/gateway/email/send") {
		t.Errorf("default gateway: %s", g)
	}
}
