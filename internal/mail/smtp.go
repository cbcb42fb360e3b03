package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// TLS modes of an SMTP connection.
const (
	TLSNone     = "none"     // plain text (only sensible on loopback or a trusted network)
	TLSStartTLS = "starttls" // plain connection upgraded with STARTTLS, which must succeed
	TLSImplicit = "tls"      // TLS from the first byte (SMTPS, usually port 465)
)

// SMTPConfig is where and how to hand mail to an SMTP server.
type SMTPConfig struct {
	Addr     string // host:port
	TLS      string // TLSNone, TLSStartTLS or TLSImplicit; "" means starttls
	User     string // empty: no authentication
	Password string
	From     string
	// TLSConfig replaces the default (system roots, ServerName from Addr);
	// tests use it to trust their own certificate.
	TLSConfig *tls.Config
	// Timeout bounds connecting and each command (default 30s).
	Timeout time.Duration
}

// SMTP sends mail through an SMTP server with go-mail, one connection per
// message.
type SMTP struct {
	cfg  SMTPConfig
	host string
	port int
}

// NewSMTP checks the configuration.
func NewSMTP(cfg SMTPConfig) (*SMTP, error) {
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil || host == "" {
		return nil, fmt.Errorf("SMTP address %q must be host:port", cfg.Addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("SMTP address %q: bad port", cfg.Addr)
	}
	if cfg.TLS == "" {
		cfg.TLS = TLSStartTLS
	}
	switch cfg.TLS {
	case TLSNone, TLSStartTLS, TLSImplicit:
	default:
		return nil, fmt.Errorf("SMTP TLS mode must be none, starttls or tls, not %q", cfg.TLS)
	}
	if _, err := CheckAddress(cfg.From); err != nil {
		return nil, fmt.Errorf("SMTP sender address %q: %w", cfg.From, err)
	}
	if cfg.Password != "" && cfg.User == "" {
		return nil, errors.New("an SMTP password needs an SMTP user")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	return &SMTP{cfg: cfg, host: host, port: port}, nil
}

// String says where mail goes; the password is never part of it.
func (s *SMTP) String() string {
	auth := "no auth"
	if s.cfg.User != "" {
		auth = "user " + s.cfg.User
	}
	return fmt.Sprintf("smtp://%s (%s, %s, from %s)", s.cfg.Addr, s.cfg.TLS, auth, s.cfg.From)
}

// Send delivers one message.
func (s *SMTP) Send(ctx context.Context, m Message) error {
	msg, err := s.compose(m)
	if err != nil {
		return err
	}
	opts := []gomail.Option{gomail.WithPort(s.port), gomail.WithTimeout(s.cfg.Timeout)}
	tlsCfg := s.cfg.TLSConfig
	if tlsCfg == nil {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	tlsCfg = tlsCfg.Clone()
	if tlsCfg.ServerName == "" {
		tlsCfg.ServerName = s.host
	}
	opts = append(opts, gomail.WithTLSConfig(tlsCfg))
	switch s.cfg.TLS {
	case TLSNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	case TLSStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case TLSImplicit:
		opts = append(opts, gomail.WithSSL(), gomail.WithTLSPolicy(gomail.NoTLS))
	}
	if s.cfg.User != "" {
		// Auto-discovery picks the strongest mechanism the server offers and
		// will not send a password in the clear over an unencrypted connection.
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(s.cfg.User), gomail.WithPassword(s.cfg.Password))
	}
	c, err := gomail.NewClient(s.host, opts...)
	if err != nil {
		return fmt.Errorf("SMTP client: %w", err)
	}
	if err := c.DialAndSendWithContext(ctx, msg); err != nil {
		return &DeliveryError{Transport: "SMTP server " + s.cfg.Addr, Err: err}
	}
	return nil
}

func (s *SMTP) compose(m Message) (*gomail.Msg, error) {
	msg := gomail.NewMsg()
	if err := msg.From(s.cfg.From); err != nil {
		return nil, fmt.Errorf("sender address: %w", err)
	}
	if err := msg.To(m.To); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidAddress, err)
	}
	msg.Subject(oneLine(m.Subject, 200))
	date := m.Date
	if date.IsZero() {
		date = time.Now()
	}
	msg.SetDateWithValue(date)
	msg.SetMessageID()
	msg.SetUserAgent("ExeClaw")
	if m.Automatic {
		msg.SetGenHeader("Auto-Submitted", "auto-generated")
	}
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	if m.HTML != "" {
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	}
	return msg, nil
}
