// Package mail sends session transcripts by e-mail, either over SMTP or
// through exe.dev's e-mail gateway, and decides which recipients are allowed:
// the server must never be an open relay.
package mail

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"time"
	"unicode"
)

// Message is one e-mail.
type Message struct {
	To      string
	Subject string
	// Text is the text/plain body (the transcript as Markdown).
	Text string
	// HTML is the text/html alternative; transports that send plain text
	// only leave it out.
	HTML string
	Date time.Time
	// Automatic marks a message nobody asked for at that moment (the
	// transcript of a session the idle reaper ended): Auto-Submitted.
	Automatic bool
}

// Sender delivers messages.
type Sender interface {
	Send(ctx context.Context, m Message) error
	// String says where mail goes, for logs; never a secret.
	String() string
}

// DeliveryError is a message the transport could not hand over: the mail
// server or gateway is down, refused it, or took too long.
type DeliveryError struct {
	Transport string
	Err       error
}

func (e *DeliveryError) Error() string { return e.Transport + ": " + e.Err.Error() }
func (e *DeliveryError) Unwrap() error { return e.Err }

// ErrInvalidAddress is a recipient that is not one plain e-mail address.
var ErrInvalidAddress = errors.New("not a valid e-mail address")

// MaxAddressLen is the longest address accepted (RFC 5321's path limit).
const MaxAddressLen = 254

var domainRE = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)

// CheckAddress accepts exactly one bare address ("a@example.com": no display
// name, no list, no comments, an ASCII host name as domain) and returns it
// trimmed.
func CheckAddress(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > MaxAddressLen || strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) {
		return "", ErrInvalidAddress
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return "", ErrInvalidAddress
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || !domainRE.MatchString(s[at+1:]) || strings.ContainsAny(s[:at], `"\<>(),;:[]`) {
		return "", ErrInvalidAddress
	}
	return s, nil
}

// Policy is who may receive mail from this server: the signed-in user's own
// address (as the exe.dev proxy reports it), plus what the operator lists.
type Policy struct {
	addrs   []string // lower-case full addresses, in the order given
	domains []string // lower-case domains from "@domain" entries
}

// ParsePolicy reads a comma-separated allow list of addresses and @domains,
// as EXECLAW_EMAIL_ALLOW gives it.
func ParsePolicy(list string) (Policy, error) {
	var p Policy
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		switch {
		case item == "":
		case strings.HasPrefix(item, "@"):
			d := strings.ToLower(item[1:])
			if !domainRE.MatchString(d) {
				return Policy{}, fmt.Errorf("e-mail allow list: %q is not a domain", item)
			}
			p.domains = append(p.domains, d)
		default:
			a, err := CheckAddress(item)
			if err != nil {
				return Policy{}, fmt.Errorf("e-mail allow list: %q is not an e-mail address or @domain", item)
			}
			p.addrs = append(p.addrs, strings.ToLower(a))
		}
	}
	return p, nil
}

// Empty reports whether the operator allowed nobody.
func (p Policy) Empty() bool { return len(p.addrs) == 0 && len(p.domains) == 0 }

// Allows reports whether to may receive a transcript from a user whose own
// address is own ("" when unknown). to must have passed CheckAddress.
func (p Policy) Allows(to, own string) bool {
	to = strings.ToLower(to)
	if own != "" && strings.EqualFold(to, strings.TrimSpace(own)) {
		return true
	}
	for _, a := range p.addrs {
		if a == to {
			return true
		}
	}
	domain := to[strings.LastIndexByte(to, '@')+1:]
	for _, d := range p.domains {
		if d == domain {
			return true
		}
	}
	return false
}

// Owner is where mail for a user without a known address goes: the first
// full address on the allow list (with one operator, that is the operator).
// Empty when the list has none.
func (p Policy) Owner() string {
	if len(p.addrs) == 0 {
		return ""
	}
	return p.addrs[0]
}

// String describes the list for logs and error messages.
func (p Policy) String() string {
	items := append([]string{}, p.addrs...)
	for _, d := range p.domains {
		items = append(items, "@"+d)
	}
	return strings.Join(items, ", ")
}

// oneLine flattens a header value: no line breaks, bounded length.
func oneLine(s string, limit int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > limit {
		cut := limit
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
