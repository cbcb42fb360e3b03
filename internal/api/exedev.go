package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/execlaw/execlaw/internal/egress"
	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/transcript"
)

// DefaultExeDevAPI is exe.dev's HTTPS API; commands are POSTed to /exec.
const DefaultExeDevAPI = "https://exe.dev"

// MaxExeDevCommand is the largest command exe.dev's /exec takes: its
// documented 64 KiB body limit. The prompt is cut (with a note saying so)
// until the whole quoted command fits.
const MaxExeDevCommand = 64 << 10

// maxExeDevToken bounds the token; exe.dev's own limit is 8 KB.
const maxExeDevToken = 8 << 10

var validVMName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,29}$`)

// exeDevRequest is the body of POST /api/exedev/new. SessionID is an
// extension: the session's transcript is appended to the prompt.
type exeDevRequest struct {
	VMName    string `json:"vmName"`
	Prompt    string `json:"prompt"`
	Token     string `json:"token"`
	SessionID string `json:"sessionId,omitempty"`
}

// handleExeDevNew creates a VM on exe.dev whose agent, Shelley, starts with
// the prompt (and the session's transcript). The user's exe.dev token is
// used for this one request and never stored or logged.
func (s *Server) handleExeDevNew(w http.ResponseWriter, r *http.Request) error {
	if !s.exedev.Enabled {
		return errorf(http.StatusNotImplemented, "sending a transcript to a new exe.dev VM is not available on this server (it is offered on exe.dev, or with EXECLAW_EXEDEV_API set)")
	}
	var req exeDevRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if !validVMName.MatchString(req.VMName) {
		return errorf(http.StatusBadRequest, "vmName must be 1 to 30 characters: lower-case letters, digits and dashes, starting with a letter or digit")
	}
	token := strings.TrimSpace(req.Token)
	switch {
	case token == "":
		return errorf(http.StatusBadRequest, "an exe.dev token is required: run `ssh exe.dev token` to get one (see https://exe.dev/docs/https-api)")
	case len(token) > maxExeDevToken || strings.ContainsFunc(token, func(r rune) bool { return r <= ' ' || r > '~' }):
		return errorf(http.StatusBadRequest, "that is not an exe.dev token: it must be printable ASCII without spaces, at most %d bytes", maxExeDevToken)
	}
	if !utf8.ValidString(req.Prompt) {
		return errorf(http.StatusBadRequest, "prompt must be valid UTF-8")
	}
	prompt := strings.TrimSpace(req.Prompt)
	if req.SessionID != "" {
		if !validID.MatchString(req.SessionID) {
			return session.ErrNotFound
		}
		view, err := s.sessions.View(r.Context(), userFrom(r.Context()), req.SessionID)
		if err != nil {
			return err
		}
		// More than exe.dev takes (exeDevNewCommand cuts it, and says so),
		// but never the whole of a long log.
		md, _, err := transcript.Bounded(transcriptHeader(view), s.eventsOf(r.Context(), userFrom(r.Context()), view.ID), 4*MaxExeDevCommand)
		if err != nil {
			return err
		}
		prompt = handoffPrompt(prompt, view.Name, md)
	}
	command, cut := exeDevNewCommand(req.VMName, prompt)

	ctx, cancel := context.WithTimeout(r.Context(), s.exedev.Timeout)
	defer cancel()
	vmName, err := s.exeDevExec(ctx, token, command, req.VMName)
	s.metrics.TranscriptSent("exedev", err)
	if err != nil {
		return err
	}
	s.log.Info("exe.dev VM created", "vm", vmName, "commandBytes", len(command), "promptCutBytes", cut)
	writeJSON(w, http.StatusOK, map[string]any{
		"ok": true, "vmName": vmName,
		"url":        "https://" + vmName + ".exe.xyz/",
		"shelleyUrl": "https://" + vmName + ".shelley.exe.xyz/",
		"truncated":  cut > 0,
	})
	return nil
}

// handoffPrompt is what the new VM's agent reads: the user's words, then the
// session's transcript.
func handoffPrompt(prompt, name, md string) string {
	if prompt == "" {
		prompt = "Continue the work of the ExeClaw session below."
	}
	return fmt.Sprintf("%s\n\nThe transcript of the ExeClaw session %q follows (Markdown).\n\n%s", prompt, name, md)
}

// shellQuote quotes s as one word for a POSIX shell-like lexer: inside
// single quotes nothing is special, and a single quote inside is written as
// quote, backslash, quote, quote: end the quoted part, add an escaped quote,
// start a new quoted part.
// exe.dev splits /exec commands with github.com/anmitsu/go-shlex in POSIX
// mode, which follows these rules; $(), backticks, newlines and backslashes
// in s stay literal.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// quotedLen is len(shellQuote(s)) without building it.
func quotedLen(s string) int { return len(s) + 2 + 3*strings.Count(s, "'") }

// exeDevNewCommand is the exe.dev command that creates the VM. A prompt
// that would make the command longer than exe.dev accepts is cut at a
// character boundary, and a note saying how much was left out is appended;
// cut is the number of bytes left out.
func exeDevNewCommand(vm, prompt string) (command string, cut int) {
	// NUL bytes are refused by exe.dev; invalid UTF-8 would be mangled.
	prompt = strings.ToValidUTF8(strings.ReplaceAll(prompt, "\x00", ""), "\uFFFD")
	base := "new --json --name=" + vm
	if prompt == "" {
		return base, 0
	}
	base += " --prompt="
	budget := MaxExeDevCommand - len(base)
	if quotedLen(prompt) <= budget {
		return base + shellQuote(prompt), 0
	}
	note := func(n int) string {
		return fmt.Sprintf("\n\n[… truncated by ExeClaw: the prompt was longer than exe.dev accepts; the last %d bytes were left out. The whole transcript can be downloaded from ExeClaw.]", n)
	}
	// The note for the largest possible cut is at least as long as the real one.
	room := budget - (quotedLen(note(len(prompt))) - 2) - 2
	kept, used := 0, 0
	for i, r := range prompt {
		cost := utf8.RuneLen(r)
		if r == '\'' {
			cost = 4
		}
		if used+cost > room {
			break
		}
		used += cost
		kept = i + utf8.RuneLen(r)
	}
	cut = len(prompt) - kept
	return base + shellQuote(prompt[:kept]+note(cut)), cut
}

// exeDevExec runs command on exe.dev with the user's token and returns the
// new VM's name. Every failure is an httpError that says what to do.
func (s *Server) exeDevExec(ctx context.Context, token, command, vm string) (string, error) {
	endpoint := strings.TrimRight(s.exedev.APIURL, "/") + "/exec"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(command))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	req.Header.Set("Accept", "application/json")
	transport := s.exedev.Transport
	if transport == nil {
		t, err := exeDevTransport(s.exedev.APIURL)
		if err != nil {
			return "", err
		}
		defer t.CloseIdleConnections()
		transport = t
	}
	client := &http.Client{
		Transport: transport,
		// A redirect would carry the token somewhere else.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return "", errorf(http.StatusGatewayTimeout, "exe.dev did not answer within %s; the VM may or may not have been created: check with `ssh exe.dev ls`", s.exedev.Timeout)
		}
		if ctx.Err() != nil {
			return "", errorf(http.StatusBadGateway, "the request to exe.dev was cancelled")
		}
		s.log.Warn("exe.dev request failed", "endpoint", endpoint, "err", scrub(err.Error(), token))
		return "", errorf(http.StatusBadGateway, "exe.dev cannot be reached: %s", scrub(rootCause(err), token))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		if ctx.Err() != nil {
			return "", errorf(http.StatusGatewayTimeout, "exe.dev did not answer within %s; the VM may or may not have been created: check with `ssh exe.dev ls`", s.exedev.Timeout)
		}
		return "", errorf(http.StatusBadGateway, "reading exe.dev's answer failed: %s", scrub(err.Error(), token))
	}
	said := scrub(exeDevMessage(raw), token)
	switch code := resp.StatusCode; {
	case code == http.StatusOK:
		var out struct {
			VMName string `json:"vm_name"`
		}
		if json.Unmarshal(raw, &out) == nil && validVMName.MatchString(out.VMName) {
			vm = out.VMName
		}
		return vm, nil
	case code == http.StatusUnauthorized:
		return "", errorf(http.StatusBadRequest, "exe.dev did not accept the token (HTTP 401: %s). Run `ssh exe.dev token` for a new one and try again", said)
	case code == http.StatusForbidden:
		return "", errorf(http.StatusBadRequest, "the exe.dev token may not create VMs (HTTP 403: %s); it needs the \"new\" command. Run `ssh exe.dev token` for a new one", said)
	case code == http.StatusTooManyRequests:
		return "", errorf(http.StatusTooManyRequests, "exe.dev is rate limiting this token (HTTP 429: %s); try again in a while", said)
	case code == http.StatusGatewayTimeout:
		return "", errorf(http.StatusBadGateway, "exe.dev timed out creating the VM (HTTP 504: %s); check with `ssh exe.dev ls` before trying again", said)
	case code >= 400 && code < 500:
		// 400 syntax, 404 unknown command, 413 too large, 422 the command failed (name taken...).
		return "", errorf(http.StatusBadRequest, "exe.dev refused to create the VM (HTTP %d): %s", code, said)
	default:
		s.log.Warn("exe.dev failed", "status", code, "said", said)
		return "", errorf(http.StatusBadGateway, "exe.dev failed (HTTP %d): %s", code, said)
	}
}

// exeDevTransport is the transport to exe.dev's API: public addresses, and
// the configured API's host and port whatever they are (--exedev-api is the
// operator's), through no proxy from the environment.
func exeDevTransport(apiURL string) (*egress.Transport, error) {
	u, err := url.Parse(apiURL)
	if err != nil || u.Hostname() == "" {
		return nil, fmt.Errorf("exe.dev API address %q is not a URL", apiURL)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	p, err := egress.PublicOnly().With(net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return nil, fmt.Errorf("exe.dev API address %q: %w", apiURL, err)
	}
	return egress.NewTransport(p), nil
}

// exeDevMessage is the human part of an exe.dev answer: its JSON "error",
// else the text, on one line and bounded.
func exeDevMessage(raw []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	msg := string(raw)
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	msg = strings.Join(strings.Fields(strings.ToValidUTF8(msg, "?")), " ")
	if msg == "" {
		return "no reason given"
	}
	if len(msg) > 300 {
		cut := 300
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}

// scrub removes the token from text that may be shown or logged.
func scrub(text, token string) string {
	if token == "" {
		return text
	}
	return strings.ReplaceAll(text, token, "[token]")
}

// rootCause is the innermost error's text (without the URL, which the
// message names already).
func rootCause(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}
