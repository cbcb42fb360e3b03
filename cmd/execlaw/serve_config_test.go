package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/mail"
	"github.com/execlaw/execlaw/internal/testutil"
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

// The settings that keep the wrong people out are checked at start, each
// refusal saying what to set instead.
func TestServeFlagsHardening(t *testing.T) {
	none := func(string) string { return "" }
	c, err := parseServeFlags([]string{"--auth", "exedev", "--listen", "0.0.0.0:8000", "--trusted-proxy", "10.0.0.0/8, 192.0.2.1",
		"--allowed-hosts", "execlaw.example.com,*.corp.example", "--tls-cert", "c.pem", "--tls-key", "k.pem"}, none, io.Discard)
	if err != nil || c.TrustedProxy != "10.0.0.0/8, 192.0.2.1" || c.AllowedHosts != "execlaw.example.com,*.corp.example" ||
		c.TLSCert != "c.pem" || c.TLSKey != "k.pem" {
		t.Fatalf("flags: %+v %v", c, err)
	}
	env := map[string]string{"EXECLAW_AUTH": "exedev", "EXECLAW_LISTEN": "[::]:8000", "EXECLAW_TRUSTED_PROXY": "2001:db8::/32",
		"EXECLAW_ALLOWED_HOSTS": "a.example", "EXECLAW_TLS_CERT": "c", "EXECLAW_TLS_KEY": "k"}
	c, err = parseServeFlags(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil || c.TrustedProxy != "2001:db8::/32" || c.AllowedHosts != "a.example" || c.TLSCert != "c" || c.TLSKey != "k" {
		t.Fatalf("from env: %+v %v", c, err)
	}
	for _, ok := range [][]string{
		{"--token", strings.Repeat("x", 20)},
		{"--auth", "exedev"}, // loopback: the proxy on this machine
		{"--auth", "exedev", "--listen", "[::1]:8000"},
		{"--auth", "none", "--allowed-hosts", "localhost,dev.localhost,127.0.0.2,[::1]"},
		{"--listen", "0.0.0.0:8000"}, // token mode: allowed, with a warning at start
	} {
		if _, err := parseServeFlags(ok, none, io.Discard); err != nil {
			t.Errorf("%v refused: %v", ok, err)
		}
	}
	for _, bad := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--token", "short-token"}, nil, "at least 20"},
		{nil, map[string]string{"EXECLAW_TOKEN": strings.Repeat("x", 19)}, "at least 20"},
		{[]string{"--auth", "exedev", "--listen", "0.0.0.0:8000"}, nil, "--trusted-proxy"},
		{[]string{"--auth", "exedev", "--listen", ":8000"}, nil, "forge"},
		{nil, map[string]string{"EXECLAW_AUTH": "exedev", "EXECLAW_LISTEN": "192.0.2.5:80"}, "--trusted-proxy"},
		{[]string{"--auth", "exedev", "--listen", "0.0.0.0:8000", "--trusted-proxy", "0.0.0.0/0"}, nil, "every address"},
		{[]string{"--auth", "exedev", "--listen", "0.0.0.0:8000", "--trusted-proxy", "proxy.example"}, nil, "CIDR"},
		{[]string{"--trusted-proxy", "10.0.0.0/8"}, nil, "only applies to --auth exedev"},
		{[]string{"--auth", "none", "--allowed-hosts", "execlaw.example.com"}, nil, "loopback"},
		{nil, map[string]string{"EXECLAW_AUTH": "none", "EXECLAW_ALLOWED_HOSTS": "*"}, "loopback"},
		{[]string{"--allowed-hosts", "http://x.example/"}, nil, "--allowed-hosts"},
		{[]string{"--tls-cert", "c.pem"}, nil, "both or neither"},
		{nil, map[string]string{"EXECLAW_TLS_KEY": "k.pem"}, "both or neither"},
	} {
		_, err := parseServeFlags(bad.args, func(k string) string { return bad.env[k] }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v %v: %v, want an error saying %q", bad.args, bad.env, err, bad.want)
		}
	}
}

var listeningAny = regexp.MustCompile(`listening on (https?://\S+)`)

// runServe runs serve in this process until the test ends, and returns its
// URL once it listens.
func runServe(t *testing.T, args ...string) (string, *testutil.SyncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
	done := make(chan error, 1)
	args = append([]string{"--data-dir", t.TempDir(), "--sandbox", "process", "--guest-bin", testutil.GuestBinary(t)}, args...)
	go func() { done <- serve(ctx, args, func(string) string { return "" }, stdout, stderr) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	var url string
	testutil.Poll(t, "the server to listen", 30*time.Second, func() bool {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("serve ended: %v\n%s", err, stderr.String())
		default:
		}
		if m := listeningAny.FindStringSubmatch(stdout.String()); m != nil {
			url = m[1]
		}
		return url != ""
	})
	return url, stdout
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their files and a pool that trusts it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "execlaw test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pool
}

// With --tls-cert and --tls-key the server speaks HTTPS only, and still
// checks the Host.
func TestServeTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	base, stdout := runServe(t, "--token", "tls-test-token-0123456789", "--listen", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.HasPrefix(base, "https://") || strings.Contains(stdout.String(), "WARNING: listening") {
		t.Fatalf("banner: %s", stdout.String())
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	get := func(host string) int {
		req, _ := http.NewRequest("GET", base+"/api/sessions", nil)
		req.Host = host
		req.Header.Set("Authorization", "Bearer tls-test-token-0123456789")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := get(""); s != http.StatusOK {
		t.Fatalf("over HTTPS: %d", s)
	}
	if s := get("attacker.example"); s != http.StatusMisdirectedRequest {
		t.Fatalf("other Host over HTTPS: %d", s)
	}
	// A session's event stream works over it (HTTP/2).
	fake := llmtest.NewAnthropic(llmtest.Turn{Text: "over TLS"}).Attach(t)
	body, _ := json.Marshal(map[string]any{"provider": "anthropic", "apiKey": "k", "model": "claude-sonnet-4-20250514", "baseUrl": fake.BaseURL()})
	post := func(path string, body []byte) *http.Response {
		req, _ := http.NewRequest("POST", base+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer tls-test-token-0123456789")
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := post("/api/sessions", body)
	var sess struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&sess)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.ProtoMajor != 2 {
		t.Fatalf("create over HTTPS: %d %s", resp.StatusCode, resp.Proto)
	}
	st := testutil.OpenSSE(t, client, base+"/api/sessions/"+sess.ID+"/stream", http.Header{"Authorization": {"Bearer tls-test-token-0123456789"}})
	if resp := post("/api/sessions/"+sess.ID+"/input", []byte(`{"message":"hi"}`)); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("input: %d", resp.StatusCode)
	} else {
		resp.Body.Close()
	}
	st.WaitType(t, 30*time.Second, event.AgentIdle, 1)
	st.Close()
	if resp, err := http.Get(strings.Replace(base, "https://", "http://", 1) + "/api/health"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP served")
		}
	}
}

// A token server reachable from the network without TLS says loudly that
// its token crosses the network in clear text.
func TestServeWarnsWithoutTLS(t *testing.T) {
	base, stdout := runServe(t, "--token", "plain-test-token-0123456789", "--listen", "0.0.0.0:0")
	if !strings.Contains(stdout.String(), "WARNING: listening on 0.0.0.0:0 without TLS") {
		t.Fatalf("no warning:\n%s", stdout.String())
	}
	// It answers by loopback names and the machine's addresses, not others.
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	hosts := map[string]int{"127.0.0.1": 200, "localhost": 200, "attacker.example": 421}
	if name, err := os.Hostname(); err == nil && name != "" && !strings.ContainsAny(name, " /") {
		hosts[strings.ToUpper(name)] = 200 // a wildcard listen answers to the machine's name
	}
	for host, want := range hosts {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:"+u.Port()+"/api/health", nil)
		req.Host = host + ":" + u.Port()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("health for %s: %d, want %d", host, resp.StatusCode, want)
		}
	}
}

// Settings that only show their problem once the server starts are refused
// then, with the reason.
func TestServeRefuses(t *testing.T) {
	guest := testutil.GuestBinary(t)
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	os.MkdirAll(short, 0o700)
	os.WriteFile(filepath.Join(short, "token"), []byte("tooshort\n"), 0o600)
	missingCert := filepath.Join(dir, "missing.pem")
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"exedev with the process sandbox", []string{"--auth", "exedev", "--sandbox", "process"}, "not an isolation boundary"},
		{"short token in the data directory", []string{"--data-dir", short, "--sandbox", "process"}, "shorter than 20"},
		{"unreadable certificate", []string{"--sandbox", "process", "--tls-cert", missingCert, "--tls-key", missingCert}, "--tls-cert"},
	} {
		args := append([]string{"--data-dir", filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")), "--guest-bin", guest, "--listen", "127.0.0.1:0"}, c.args...)
		var stdout testutil.SyncBuffer
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a server that starts anyway ends
		err := serve(ctx, args, func(string) string { return "" }, &stdout, io.Discard)
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
		if strings.Contains(stdout.String(), "listening on") {
			t.Errorf("%s: the server listened", c.name)
		}
	}
}

func TestServeFlagsDisk(t *testing.T) {
	none := func(string) string { return "" }
	c, err := parseServeFlags(nil, none, io.Discard)
	if err != nil || c.DiskSize != 8<<30 || c.MinFreeDisk != 2<<30 {
		t.Fatalf("defaults: disk %d, floor %d, %v", c.DiskSize, c.MinFreeDisk, err)
	}
	c, err = parseServeFlags([]string{"--disk-size", "512MiB", "--min-free-disk", "0"}, none, io.Discard)
	if err != nil || c.DiskSize != 512<<20 || c.MinFreeDisk != 0 {
		t.Fatalf("512MiB, 0: %d %d %v", c.DiskSize, c.MinFreeDisk, err)
	}
	for _, args := range [][]string{
		{"--disk-size", "1M"}, {"--disk-size", "-8G"}, {"--disk-size", "lots"}, {"--disk-size", "99999999T"},
		{"--min-free-disk", "2X"}, {"--min-free-disk", ""},
	} {
		if _, err := parseServeFlags(args, none, io.Discard); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}
