package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/session"
)

// A terminal is a login shell in the session's sandbox on a pseudo-terminal
// (the guest's attached exec with a TTY), carried over a WebSocket:
//
//	client -> server: binary messages are keystrokes (bytes for the
//	                  terminal); text messages are JSON commands:
//	                  {"type":"resize","cols":N,"rows":N}
//	server -> client: binary messages are the terminal's output; text
//	                  messages are JSON: {"type":"exit","exitCode":N,
//	                  "signal":"..."} when the shell ended, {"type":
//	                  "closed","reason":"..."} when the server closed it
//	                  (the session ended or paused, idle, shutdown)
//
// after which the server closes the WebSocket. The WebSocket handshake is a
// GET that any page can start, with the cookie (SameSite=Strict keeps it
// from other sites, not from other origins of this site), and
// CrossOriginProtection only guards unsafe methods: so the Origin is
// checked here, and a terminal is opened only from this server's own pages
// (or by a client that sends no Origin, with its token).

// TerminalOptions bound terminals; zero fields take the defaults.
type TerminalOptions struct {
	// MaxPerSession bounds the terminals open on one session (default 8).
	MaxPerSession int
	// MaxPerUser bounds the terminals one user has open (default 16).
	MaxPerUser int
	// Idle closes a terminal nothing was typed into for this long
	// (default 1 hour).
	Idle time.Duration
	// Ping is how often the client is pinged; one that has not answered by
	// the next ping is dropped (default 30 s).
	Ping time.Duration
}

// Terminal limits that are not options.
const (
	// maxTerminalMessage bounds one message from the client: keystrokes
	// and pastes come in pieces far smaller.
	maxTerminalMessage = 64 << 10
	// terminalWriteWindow bounds one write to the client: a client that
	// does not read its output for that long is dropped.
	terminalWriteWindow = 30 * time.Second
	defaultTerminalCols = 80
	defaultTerminalRows = 24
	// touchEvery throttles recording a terminal's activity on its session.
	touchEvery = 30 * time.Second
)

func (o TerminalOptions) withDefaults() TerminalOptions {
	if o.MaxPerSession <= 0 {
		o.MaxPerSession = 8
	}
	if o.MaxPerUser <= 0 {
		o.MaxPerUser = 16
	}
	if o.Idle <= 0 {
		o.Idle = time.Hour
	}
	if o.Ping <= 0 {
		o.Ping = 30 * time.Second
	}
	return o
}

// terminalCount counts open terminals per session and per user.
type terminalCount struct {
	mu        sync.Mutex
	bySession map[string]int
	byUser    map[string]int
}

func (c *terminalCount) acquire(o TerminalOptions, user, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bySession == nil {
		c.bySession, c.byUser = map[string]int{}, map[string]int{}
	}
	switch {
	case c.bySession[id] >= o.MaxPerSession:
		return errorf(http.StatusTooManyRequests, "this session has %d terminals open, as many as it may: close one to open another", c.bySession[id])
	case c.byUser[user] >= o.MaxPerUser:
		return errorf(http.StatusTooManyRequests, "you have %d terminals open, as many as one user may: close one to open another", c.byUser[user])
	}
	c.bySession[id]++
	c.byUser[user]++
	return nil
}

func (c *terminalCount) release(user, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bySession[id]--; c.bySession[id] <= 0 {
		delete(c.bySession, id)
	}
	if c.byUser[user]--; c.byUser[user] <= 0 {
		delete(c.byUser, user)
	}
}

// checkWebSocketOrigin refuses a WebSocket handshake that a page of another
// origin started: its Origin must name this very host and port, and a
// browser's Sec-Fetch-Site must say same-origin. A request with neither
// header (not a browser) passes; it still needs credentials.
func checkWebSocketOrigin(r *http.Request) error {
	refuse := func(why string) error {
		return errorf(http.StatusForbidden, "cross-origin WebSocket refused: %s; terminals open only from this server's own pages", why)
	}
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		return refuse("Sec-Fetch-Site is " + strconv.Quote(truncateForMessage(site)))
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.User != nil {
		return refuse("Origin " + strconv.Quote(truncateForMessage(origin)) + " is not an http(s) origin")
	}
	if !strings.EqualFold(u.Host, r.Host) {
		return refuse("Origin " + strconv.Quote(truncateForMessage(origin)) + " is not this server (" + strconv.Quote(truncateForMessage(r.Host)) + ")")
	}
	return nil
}

// headerHasToken reports whether a comma-separated header lists token.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func truncateForMessage(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}

// terminalSize reads ?cols= and ?rows=, each optional.
func terminalSize(r *http.Request) (guest.WindowSize, error) {
	size := guest.WindowSize{Cols: defaultTerminalCols, Rows: defaultTerminalRows}
	for _, f := range []struct {
		name string
		p    *int
		max  int
	}{{"cols", &size.Cols, guest.MaxTTYCols}, {"rows", &size.Rows, guest.MaxTTYRows}} {
		v := r.URL.Query().Get(f.name)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > f.max {
			return size, errorf(http.StatusBadRequest, "%s must be a number from 1 to %d", f.name, f.max)
		}
		*f.p = n
	}
	return size, nil
}

// liveError maps what Manager.Live refuses to what the client sees.
func liveError(err error) error {
	switch {
	case errors.Is(err, session.ErrNotRunning):
		return errorf(http.StatusConflict, "%s", err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errorf(http.StatusServiceUnavailable, "the session's sandbox is still starting: try again")
	}
	return err
}

// terminalMessage is a JSON text message of the terminal protocol.
type terminalMessage struct {
	Type     string `json:"type"`
	Cols     int    `json:"cols,omitempty"`
	Rows     int    `json:"rows,omitempty"`
	ExitCode *int   `json:"exitCode,omitempty"`
	Signal   string `json:"signal,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// terminalShells are tried in turn: a login shell, bash where there is one.
var terminalShells = [][]string{{"bash", "-l"}, {"sh", "-l"}}

func (s *Server) handleTerminal(w http.ResponseWriter, r *http.Request) error {
	id, err := sessionID(r)
	if err != nil {
		return err
	}
	if err := checkWebSocketOrigin(r); err != nil {
		return err
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		w.Header().Set("Upgrade", "websocket")
		return errorf(http.StatusUpgradeRequired, "a terminal is a WebSocket: send Connection: Upgrade and Upgrade: websocket")
	}
	size, err := terminalSize(r)
	if err != nil {
		return err
	}
	user := userFrom(r.Context())
	// A session still booting is waited for, a little.
	wctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	live, err := s.sessions.Live(wctx, user, id)
	cancel()
	if err != nil {
		return liveError(err)
	}
	opts := s.terminalOpts
	if err := s.terminals.acquire(opts, user.ID, id); err != nil {
		return err
	}
	defer s.terminals.release(user.ID, id)

	// Start the shell before switching protocols, so that failing to is an
	// ordinary HTTP error.
	var att *guest.Attached
	for _, argv := range terminalShells {
		actx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		att, err = live.Guest.Attach(actx, guest.ExecRequest{
			Argv: argv,
			Env:  []string{"TERM=xterm-256color", "COLORTERM=truecolor"},
			TTY:  &size,
		})
		cancel()
		if !guest.IsNotFound(err) {
			break
		}
	}
	if err != nil {
		s.log.Warn("terminal: start the shell", "session", id, "err", err)
		return errorf(http.StatusBadGateway, "the shell could not be started in the sandbox: %v", err)
	}
	defer att.Close()

	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{})
	if err != nil {
		return nil // Accept has answered
	}
	defer conn.CloseNow()
	conn.SetReadLimit(maxTerminalMessage)
	s.log.Info("terminal opened", "session", id, "cols", size.Cols, "rows", size.Rows)
	reason := s.runTerminal(conn, att, live, opts)
	s.log.Info("terminal closed", "session", id, "why", reason)
	return nil
}

// runTerminal carries a terminal until it ends, and says why it did.
func (s *Server) runTerminal(conn *websocket.Conn, att *guest.Attached, live session.Live, opts TerminalOptions) string {
	// ctx ends the terminal; connCtx the connection, last: a read or write
	// whose context ends closes the connection at once (coder/websocket),
	// and the final message and close handshake still need it.
	ctx, cancel := context.WithCancelCause(s.streams)
	defer cancel(nil)
	stop := func(why string) { cancel(errors.New(why)) }
	connCtx, connCancel := context.WithCancel(context.Background())
	defer connCancel()
	go func() {
		select {
		case <-live.Done:
			stop("the session ended or paused")
		case <-ctx.Done():
		}
	}()

	var wmu sync.Mutex // one writer at a time: output, notices, the final message
	write := func(typ websocket.MessageType, b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		wctx, wcancel := context.WithTimeout(connCtx, terminalWriteWindow)
		defer wcancel()
		return conn.Write(wctx, typ, b)
	}

	// Output: until the shell ends (its exit frame) or the attach breaks.
	var exited, final terminalMessage // exited: by the output goroutine, read once it is done
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		for {
			f, err := att.Next()
			if err != nil {
				stop("the sandbox's terminal broke: " + err.Error())
				return
			}
			switch f.Type {
			case guest.FrameStdout, guest.FrameStderr:
				if err := write(websocket.MessageBinary, f.Data); err != nil {
					stop("the browser went away or stopped reading")
					return
				}
			case guest.FrameExit:
				code := f.ExitCode
				exited = terminalMessage{Type: "exit", ExitCode: &code, Signal: f.Signal}
				stop("the shell exited")
				return
			default:
				stop("the sandbox's terminal failed: " + f.Message)
				return
			}
		}
	}()

	// Input, resizes, and the pongs that keep the client counted alive.
	activity := make(chan struct{}, 1)
	go func() {
		var touched time.Time
		for {
			typ, b, err := conn.Read(connCtx)
			if err != nil {
				if errors.Is(err, websocket.ErrMessageTooBig) {
					stop(fmt.Sprintf("a message from the browser was larger than %d bytes", maxTerminalMessage))
				} else {
					stop("the browser closed the terminal")
				}
				return
			}
			select {
			case activity <- struct{}{}:
			default:
			}
			if now := time.Now(); now.Sub(touched) > touchEvery {
				live.Touch()
				touched = now
			}
			if typ == websocket.MessageBinary {
				if _, err := att.Write(b); err != nil {
					stop("the sandbox's terminal broke: " + err.Error())
					return
				}
				continue
			}
			var m terminalMessage
			if err := json.Unmarshal(b, &m); err != nil || m.Type != "resize" {
				_ = conn.Close(websocket.StatusPolicyViolation, "unknown message: binary data or {\"type\":\"resize\",\"cols\":N,\"rows\":N}")
				stop("the browser sent an unknown message")
				return
			}
			size := guest.WindowSize{Cols: m.Cols, Rows: m.Rows}
			if !size.Valid() {
				_ = conn.Close(websocket.StatusPolicyViolation, fmt.Sprintf("terminal size out of range (1-%d columns, 1-%d rows)", guest.MaxTTYCols, guest.MaxTTYRows))
				stop("the browser sent a bad size")
				return
			}
			if err := att.Resize(size); err != nil {
				stop("the sandbox's terminal broke: " + err.Error())
				return
			}
		}
	}()

	// Keepalive and the idle limit.
	ping := time.NewTicker(opts.Ping)
	defer ping.Stop()
	idle := time.NewTimer(opts.Idle)
	defer idle.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-activity:
			idle.Reset(opts.Idle)
		case <-idle.C:
			final = terminalMessage{Type: "closed", Reason: fmt.Sprintf("nothing was typed for %s", opts.Idle.Round(time.Second))}
			stop("idle")
		case <-ping.C:
			go func() {
				pctx, pcancel := context.WithTimeout(connCtx, opts.Ping)
				defer pcancel()
				if err := conn.Ping(pctx); err != nil && ctx.Err() == nil {
					stop("the browser stopped answering pings")
				}
			}()
		}
	}
	why := context.Cause(ctx).Error()
	att.Close() // kills the shell and everything it started, if it still runs
	<-outDone
	if exited.Type != "" {
		final = exited
	}
	if final.Type == "" {
		final = terminalMessage{Type: "closed", Reason: why}
		if s.streams.Err() != nil {
			final.Reason = "the server is shutting down"
		}
	}
	if b, err := json.Marshal(final); err == nil {
		_ = write(websocket.MessageText, b)
	}
	code := websocket.StatusNormalClosure
	if final.Type == "closed" {
		code = websocket.StatusGoingAway
	}
	_ = conn.Close(code, "")
	return why
}
