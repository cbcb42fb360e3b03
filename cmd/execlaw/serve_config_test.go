package main

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/mail"
)

func TestServeFlagsMailExeDevMetrics(t *testing.T) {
	env := map[string]string{
		"EXECLAW_SMTP_ADDR": "mail.example.com:587", "EXECLAW_SMTP_TLS": "tls", "EXECLAW_SMTP_USER": "u",
		"EXECLAW_SMTP_PASSWORD": "pw-from-env", "EXECLAW_SMTP_FROM": "execlaw@example.com",
		"EXECLAW_EMAIL_ALLOW": "a@example.com,@example.org", "EXECLAW_EXEDEV": "false",
		"EXECLAW_EXEDEV_GATEWAY": "http://127.0.0.1:9", "EXECLAW_EXEDEV_API": "http://127.0.0.1:8",
		"EXECLAW_METRICS_LISTEN": "127.0.0.1:9100",
	}
	getenv := func(k string) string { return env[k] }
	c, err := parseServeFlags(nil, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.SMTPAddr != "mail.example.com:587" || c.SMTPTLS != "tls" || c.SMTPUser != "u" || c.SMTPPassword != "pw-from-env" ||
		c.SMTPFrom != "execlaw@example.com" || c.EmailAllow != "a@example.com,@example.org" || c.ExeDev != "false" ||
		c.ExeDevGateway != "http://127.0.0.1:9" || c.ExeDevAPI != "http://127.0.0.1:8" || c.MetricsListen != "127.0.0.1:9100" {
		t.Fatalf("from env: %+v", c)
	}
	c, err = parseServeFlags([]string{"--smtp-addr", "smtp.example.net:25", "--smtp-tls", "none", "--smtp-from", "x@example.net",
		"--email-allow", "b@example.com", "--exedev", "--exedev-api", "https://exe.example", "--metrics-listen", "127.0.0.1:0"}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.SMTPAddr != "smtp.example.net:25" || c.SMTPTLS != "none" || c.SMTPFrom != "x@example.net" || c.EmailAllow != "b@example.com" ||
		c.ExeDev != "true" || c.ExeDevAPI != "https://exe.example" || c.MetricsListen != "127.0.0.1:0" {
		t.Fatalf("flags over env: %+v", c)
	}
	for _, args := range [][]string{{"--exedev=auto"}, {"--exedev=false"}, {"--exedev=true"}} {
		c, err := parseServeFlags(args, func(string) string { return "" }, io.Discard)
		if err != nil || c.ExeDev != strings.TrimPrefix(args[0], "--exedev=") {
			t.Errorf("%v: %q %v", args, c.ExeDev, err)
		}
	}
	c, _ = parseServeFlags(nil, func(string) string { return "" }, io.Discard)
	if c.ExeDev != "auto" || c.SMTPTLS != "starttls" || c.SMTPAddr != "" || c.MetricsListen != "" {
		t.Errorf("defaults: %+v", c)
	}

	for _, bad := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"--smtp-addr", "mail.example.com:25"}, nil}, // no sender
		{[]string{"--exedev=maybe"}, nil},
		{nil, map[string]string{"EXECLAW_EXEDEV": "sometimes"}},
		{[]string{"--exedev-api", "ftp://exe.dev"}, nil},
		{[]string{"--email-allow", "not an address"}, nil},
		{[]string{"--metrics-listen", "nowhere"}, nil},
		{[]string{"--auth", "none", "--metrics-listen", "0.0.0.0:9100"}, nil},
	} {
		if _, err := parseServeFlags(bad.args, func(k string) string { return bad.env[k] }, io.Discard); err == nil {
			t.Errorf("%v %v accepted", bad.args, bad.env)
		}
	}
}

func TestDetectExeDev(t *testing.T) {
	host := func(name string, err error) func() (string, error) {
		return func() (string, error) { return name, err }
	}
	for _, c := range []struct {
		setting, hostname string
		err               error
		want              bool
	}{
		{"auto", "myvm.exe.xyz", nil, true},
		{"auto", "MyVM.EXE.XYZ.", nil, true},
		{"auto", "laptop", nil, false},
		{"auto", "exe.xyz.example.com", nil, false},
		{"auto", "notexe.xyz", nil, false},
		{"auto", "", errors.New("no name"), false},
		{"true", "laptop", nil, true},
		{"false", "myvm.exe.xyz", nil, false},
	} {
		if got, why := detectExeDev(c.setting, host(c.hostname, c.err)); got != c.want || why == "" {
			t.Errorf("%s on %q: %v (%s)", c.setting, c.hostname, got, why)
		}
	}
}

func TestMailSenderChoice(t *testing.T) {
	none := serveConfig{}
	if s, err := mailSender(none, false); s != nil || err != nil {
		t.Errorf("nothing configured: %v %v", s, err)
	}
	s, err := mailSender(none, true)
	if _, ok := s.(*mail.Gateway); !ok || err != nil || !strings.Contains(s.String(), "169.254.169.254") {
		t.Errorf("on exe.dev: %v %v", s, err)
	}
	s, _ = mailSender(serveConfig{ExeDevGateway: "http://127.0.0.1:1"}, false)
	if _, ok := s.(*mail.Gateway); !ok || !strings.Contains(s.String(), "127.0.0.1:1") {
		t.Errorf("gateway given: %v", s)
	}
	smtpCfg := serveConfig{SMTPAddr: "mail.example.com:465", SMTPTLS: "tls", SMTPUser: "u", SMTPPassword: "hunter2", SMTPFrom: "x@example.com"}
	s, err = mailSender(smtpCfg, true) // SMTP wins over the gateway
	if _, ok := s.(*mail.SMTP); !ok || err != nil || strings.Contains(s.String(), "hunter2") {
		t.Errorf("smtp: %v %v", s, err)
	}
	if _, err := mailSender(serveConfig{SMTPAddr: "mail.example.com:25", SMTPTLS: "bogus", SMTPFrom: "x@example.com"}, false); err == nil {
		t.Error("bad TLS mode accepted")
	}
}
