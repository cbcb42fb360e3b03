// Package mailtest runs a real SMTP server (emersion/go-smtp) on 127.0.0.1
// for tests: plain, STARTTLS or implicit TLS with a self-signed certificate,
// optionally requiring AUTH PLAIN, and hands every message it accepts to the
// test.
package mailtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"mime"
	"mime/multipart"
	"net"
	netmail "net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Options shape the server.
type Options struct {
	// TLS is "none" (default), "starttls" or "tls".
	TLS string
	// User and Password, when set, are required (AUTH PLAIN).
	User, Password string
}

// Received is one accepted message.
type Received struct {
	From     string
	To       []string
	Data     []byte
	TLS      bool   // the connection was encrypted when DATA was sent
	AuthUser string // who authenticated, if anyone
}

// Server is a running SMTP server.
type Server struct {
	Addr string
	// RootCAs trusts the server's certificate.
	RootCAs *x509.CertPool

	opts Options
	srv  *smtp.Server
	msgs chan Received

	mu       sync.Mutex
	authFail int
}

// Start runs a server until the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if o.TLS == "" {
		o.TLS = "none"
	}
	s := &Server{opts: o, msgs: make(chan Received, 16)}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{srv: s, conn: c}, nil
	}))
	srv.Domain = "mailtest.local"
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.MaxMessageBytes = 8 << 20
	srv.MaxRecipients = 10
	srv.ErrorLog = log.New(io.Discard, "", 0) // t.Log could outlive the test

	var ln net.Listener
	var err error
	if o.TLS != "none" {
		cfg, pool := selfSigned(t)
		srv.TLSConfig, s.RootCAs = cfg, pool
	}
	switch o.TLS {
	case "none", "starttls":
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	case "tls":
		ln, err = tls.Listen("tcp", "127.0.0.1:0", srv.TLSConfig)
	default:
		t.Fatalf("mailtest: TLS %q", o.TLS)
	}
	if err != nil {
		t.Fatal(err)
	}
	s.Addr, s.srv = ln.Addr().String(), srv
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return s
}

// Wait returns the next accepted message, failing the test after timeout.
func (s *Server) Wait(t testing.TB, timeout time.Duration) Received {
	t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case <-time.After(timeout):
		t.Fatalf("mailtest: no message within %s", timeout)
		return Received{}
	}
}

// Pending returns a message that has arrived, if any, without waiting.
func (s *Server) Pending() (Received, bool) {
	select {
	case m := <-s.msgs:
		return m, true
	default:
		return Received{}, false
	}
}

// AuthFailures counts refused logins.
func (s *Server) AuthFailures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authFail
}

// DeadAddr is a loopback address nothing listens on.
func DeadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

type session struct {
	srv  *Server
	conn *smtp.Conn
	from string
	to   []string
	user string
}

var errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}

func (s *session) AuthMechanisms() []string {
	if s.srv.opts.User == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if user != s.srv.opts.User || pass != s.srv.opts.Password {
			s.srv.mu.Lock()
			s.srv.authFail++
			s.srv.mu.Unlock()
			return errors.New("invalid credentials")
		}
		s.user = user
		return nil
	}), nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if s.srv.opts.User != "" && s.user == "" {
		return errAuthRequired
	}
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	var b bytes.Buffer
	if _, err := io.Copy(&b, r); err != nil {
		return err
	}
	_, isTLS := s.conn.TLSConnectionState()
	s.srv.msgs <- Received{From: s.from, To: append([]string(nil), s.to...), Data: b.Bytes(), TLS: isTLS, AuthUser: s.user}
	return nil
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }

// selfSigned makes a certificate for 127.0.0.1 and localhost.
func selfSigned(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mailtest"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:    []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}}, pool
}

// Parse reads a received message and its text and HTML parts (a
// multipart/alternative message, as ExeClaw sends), with LF line ends.
func Parse(t *testing.T, raw []byte) (*netmail.Message, string, string) {
	t.Helper()
	msg, err := netmail.ReadMessage(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatalf("not a mail message: %v\n%s", err, raw)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/alternative" {
		t.Fatalf("Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	var text, html string
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		ct, cp, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if cp["charset"] != "UTF-8" && cp["charset"] != "utf-8" {
			t.Errorf("part %s has charset %q", ct, cp["charset"])
		}
		// Mail has CRLF line ends; the content had LF.
		content := strings.ReplaceAll(string(b), "\r\n", "\n")
		switch ct {
		case "text/plain":
			text = content
		case "text/html":
			html = content
		default:
			t.Errorf("unexpected part %s", ct)
		}
	}
	return msg, text, html
}
