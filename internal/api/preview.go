package api

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/execlaw/execlaw/internal/guest"
	"github.com/execlaw/execlaw/internal/session"
)

// Live previews: a web server that a program in the session's sandbox runs
// is shown to the session's owner through the guest's port forwarding. The
// previewed app is untrusted code, so it never runs on this server's own
// origin (where it could call the API with the user's cookie): previews are
// served on origins of their own, one per session and port,
//
//   - with --preview-domain D, at PORT-SESSION.D (a wildcard DNS name and
//     certificate point *.D at this server; any listener answers them);
//   - with --preview-listen, on ports of their own (HOST:P1-P2): each port
//     is one origin, lent to one session and port at a time (a host's
//     cookies are shared by all its ports, so the preview proxy strips this
//     server's cookies from what it forwards, and names its own per port).
//
// A preview URL carries a grant: HMAC-signed with the server's preview key,
// for one user, session, port and origin, valid for PreviewOptions.GrantTTL.
// Its first request trades it for an HttpOnly cookie of the preview origin
// (so the app's own links and requests work), and is redirected to the
// same path without it. The login cookie is never sent to, nor accepted by,
// a preview origin; the API never answers there.

// PreviewOptions configure live previews; previews are off without Secret
// or without Ports and Domain.
type PreviewOptions struct {
	// Secret signs grants and preview cookies (at least 32 bytes).
	Secret []byte
	// Ports are the --preview-listen ports (serve each with
	// Server.PreviewHandler(port)): one origin each.
	Ports []int
	// Host is the host name preview URLs on Ports use; empty: the host the
	// request came to, with localhost and 127.0.0.1 swapped (a different
	// host name keeps the login cookie away from previews altogether).
	Host string
	// Domain serves previews at PORT-SESSION.Domain on any listener; it may
	// end with :PORT, the port its URLs use.
	Domain string
	// GrantTTL bounds how long a preview URL may be opened (default 10 min);
	// CookieTTL how long a preview origin's cookie lasts (default 12 h).
	GrantTTL, CookieTTL time.Duration
	// SlotIdle frees a port lent to a preview that went unused that long
	// (default 30 min).
	SlotIdle time.Duration
}

// Preview limits that are not options.
const (
	previewPath          = "/.execlaw-preview" // where a grant is traded for a cookie
	previewCookiePrefix  = "execlaw_"          // this server's cookies: never forwarded to, nor accepted from, a previewed app
	maxPreviewConns      = 64                  // requests in flight per session
	maxPreviewBody       = 64 << 20            // largest request body forwarded
	previewHeaderTimeout = 2 * time.Minute     // a dev server's first compile may be slow
	previewDialTimeout   = 30 * time.Second    // reaching the port through the guest
	previewSecretMin     = 32                  // bytes
	previewLabelPattern  = `^([0-9]{1,5})-([0-9a-f]{24})$`
)

var previewLabel = regexp.MustCompile(previewLabelPattern)

// agentPorts are ports the in-VM agents use for themselves (Claude Code's
// and nullclaw's credential proxies, nullclaw's gateway): not previews.
var agentPorts = []int{4001, 4002, 4100}

// previewTarget is what a preview origin shows: one session's port, for
// one user.
type previewTarget struct {
	user, session string
	port          int
}

// previewSlot is one --preview-listen port and what it is lent to.
type previewSlot struct {
	port     int
	target   previewTarget // zero: free
	epoch    uint64        // grows each time it is lent anew: older cookies stop working
	lastUsed time.Time
}

// previews is the server's preview state.
type previews struct {
	opts   PreviewOptions
	domain string // lower-case, without its port
	dport  string // ":PORT" of Domain, or ""

	mu    sync.Mutex
	slots []*previewSlot
	busy  map[string]int                 // requests in flight per session
	trans map[previewTarget]*previewConn // transports to the guests' ports
}

// previewConn is the transport to one session's port.
type previewConn struct {
	tr   *http.Transport
	done <-chan struct{}
}

func newPreviews(o PreviewOptions) *previews {
	if len(o.Secret) < previewSecretMin || (len(o.Ports) == 0 && o.Domain == "") {
		return nil
	}
	if o.GrantTTL <= 0 {
		o.GrantTTL = 10 * time.Minute
	}
	if o.CookieTTL <= 0 {
		o.CookieTTL = 12 * time.Hour
	}
	if o.SlotIdle <= 0 {
		o.SlotIdle = 30 * time.Minute
	}
	if h, ok := hostOnly(o.Host); ok {
		o.Host = h // canonical: lower-case, an IPv6 address without brackets
	}
	p := &previews{opts: o, busy: map[string]int{}, trans: map[previewTarget]*previewConn{}}
	if o.Domain != "" {
		host, port, err := net.SplitHostPort(o.Domain)
		if err != nil {
			host = o.Domain
		} else {
			p.dport = ":" + port
		}
		p.domain = strings.TrimSuffix(strings.ToLower(host), ".")
	}
	for _, port := range o.Ports {
		p.slots = append(p.slots, &previewSlot{port: port})
	}
	return p
}

// CheckPreviewDomain checks a --preview-domain value: a host name with
// at least two labels, optionally :PORT.
func CheckPreviewDomain(d string) error {
	host := d
	if h, port, err := net.SplitHostPort(d); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("--preview-domain %q: bad port", d)
		}
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if !validHostName(host) || !strings.Contains(host, ".") || net.ParseIP(host) != nil {
		return fmt.Errorf("--preview-domain %q: want a DNS name such as preview.example.com, whose every subdomain (*.preview.example.com) points at this server", d)
	}
	return nil
}

// --- grants and cookies

// previewToken is what a grant or a preview cookie says, signed.
type previewToken struct {
	Kind    string `json:"k"` // "grant" or "cookie"
	User    string `json:"u"`
	Session string `json:"s"`
	Port    int    `json:"p"`
	Origin  string `json:"o"`           // "port:N" or "host:NAME"
	Epoch   uint64 `json:"e,omitempty"` // the slot's, for port origins
	Expires int64  `json:"x"`           // Unix seconds
}

func (p *previews) sign(t previewToken) string {
	b, _ := json.Marshal(t)
	payload := base64.RawURLEncoding.EncodeToString(b)
	m := hmac.New(sha256.New, p.opts.Secret)
	m.Write([]byte("execlaw preview v1\x00" + payload))
	return payload + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// verify returns the token a string carries, if it is signed with this
// server's key, of kind, and not expired.
func (p *previews) verify(s, kind string, now time.Time) (previewToken, bool) {
	var t previewToken
	if len(s) > 4096 {
		return t, false
	}
	payload, sig, ok := strings.Cut(s, ".")
	if !ok {
		return t, false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return t, false
	}
	m := hmac.New(sha256.New, p.opts.Secret)
	m.Write([]byte("execlaw preview v1\x00" + payload))
	if !hmac.Equal(got, m.Sum(nil)) {
		return t, false
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil || json.Unmarshal(b, &t) != nil {
		return t, false
	}
	if t.Kind != kind || now.Unix() >= t.Expires {
		return t, false
	}
	return t, true
}

// --- where previews are

// domainTarget reads PORT-SESSION.Domain from a Host; ok is false when the
// host is no such name (then it is not a preview's).
func (p *previews) domainTarget(host string) (session string, port int, ok bool) {
	if p == nil || p.domain == "" {
		return "", 0, false
	}
	h, valid := hostOnly(host)
	if !valid {
		return "", 0, false
	}
	label, found := strings.CutSuffix(h, "."+p.domain)
	if !found {
		return "", 0, false
	}
	m := previewLabel.FindStringSubmatch(label)
	if m == nil {
		return "", 0, false
	}
	port, _ = strconv.Atoi(m[1])
	if port < 1 || port > 65535 {
		return "", 0, false
	}
	return "s_" + m[2], port, true
}

// previewURL is the URL of target's preview, with a fresh grant, as seen
// from request r to the API; "" with a reason when none can be made now.
func (p *previews) previewURL(r *http.Request, t previewTarget, now time.Time) (string, string) {
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	g := previewToken{Kind: "grant", User: t.user, Session: t.session, Port: t.port, Expires: now.Add(p.opts.GrantTTL).Unix()}
	var host string
	if p.domain != "" {
		host = strconv.Itoa(t.port) + "-" + strings.TrimPrefix(t.session, "s_") + "." + p.domain
		g.Origin = "host:" + host
		host += p.dport
	} else {
		slot, epoch := p.lend(t, now)
		if slot == 0 {
			return "", fmt.Sprintf("all %d preview ports are in use by other previews; one is freed when its server stops, its session ends, or after %s unused", len(p.slots), p.opts.SlotIdle.Round(time.Minute))
		}
		g.Origin, g.Epoch = "port:"+strconv.Itoa(slot), epoch
		host = net.JoinHostPort(p.slotHost(r), strconv.Itoa(slot))
	}
	return scheme + "://" + host + previewPath + "?grant=" + url.QueryEscape(p.sign(g)), ""
}

// slotHost is the host name of --preview-listen URLs.
func (p *previews) slotHost(r *http.Request) string {
	if p.opts.Host != "" {
		return p.opts.Host
	}
	h, _ := hostOnly(r.Host)
	switch h {
	case "localhost":
		return "127.0.0.1"
	case "127.0.0.1", "::1", "":
		return "localhost"
	}
	return h
}

// lend gives target a preview port: the one it has, else a free one.
// 0 when none is free.
func (p *previews) lend(t previewTarget, now time.Time) (int, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var free *previewSlot
	for _, s := range p.slots {
		if s.target == t {
			return s.port, s.epoch
		}
		if free == nil && (s.target == previewTarget{} || now.Sub(s.lastUsed) > p.opts.SlotIdle) {
			free = s
		}
	}
	if free == nil {
		return 0, 0
	}
	free.target, free.lastUsed = t, now
	free.epoch++
	return free.port, free.epoch
}

// release frees the preview ports of session id's ports that are not in
// listening (nil: all of them).
func (p *previews) release(id string, listening map[int]bool) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.slots {
		if s.target.session == id && !listening[s.target.port] {
			s.target = previewTarget{}
		}
	}
}

// slotFor says what preview port port is lent to now.
func (p *previews) slotFor(port int) (previewSlot, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.slots {
		if s.port == port {
			return *s, true
		}
	}
	return previewSlot{}, false
}

func (p *previews) touchSlot(port int, t previewTarget, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.slots {
		if s.port == port && s.target == t {
			s.lastUsed = now
		}
	}
}

// --- the ports route

// portView is one entry of GET /api/sessions/{id}/ports.
type portView struct {
	Port       int    `json:"port"`
	Address    string `json:"address"`
	PreviewURL string `json:"previewUrl,omitempty"`
	// PreviewNote says why there is no previewUrl, when previews are on.
	PreviewNote string `json:"previewNote,omitempty"`
}

func (s *Server) handlePorts(w http.ResponseWriter, r *http.Request) error {
	// Each listing asks the sandbox: it spends the user's listings as the
	// workspace's do.
	if err := s.queryTurn(r); err != nil {
		return err
	}
	id := r.PathValue("id")
	user := userFrom(r.Context())
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	live, err := s.sessions.Live(ctx, user, id)
	if err != nil {
		return liveError(err)
	}
	list, err := live.Guest.Ports(ctx)
	if err != nil {
		s.log.Warn("list the sandbox's ports", "session", id, "err", err)
		return errorf(http.StatusBadGateway, "the sandbox did not list its ports: %v", err)
	}
	now := time.Now()
	out := []portView{}
	listening := map[int]bool{}
	for _, p := range list.Ports {
		if !p.Loopback || slices.Contains(agentPorts, p.Port) {
			continue // a forward cannot reach it, or it is the agent's own
		}
		listening[p.Port] = true
		v := portView{Port: p.Port, Address: p.Address}
		if s.preview != nil {
			v.PreviewURL, v.PreviewNote = s.preview.previewURL(r, previewTarget{user: user.ID, session: id, port: p.Port}, now)
		}
		out = append(out, v)
	}
	s.preview.release(id, listening)
	writeJSON(w, http.StatusOK, map[string]any{"ports": out, "previews": s.preview != nil})
	return nil
}

// --- the preview origins

// PreviewHandler serves the --preview-listen port port: the preview lent to
// it, and previews of --preview-domain names. Nil when previews are off.
func (s *Server) PreviewHandler(port int) http.Handler {
	if s.preview == nil {
		return nil
	}
	return s.accessLog(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := s.preview.domainTarget(r.Host); ok {
			s.servePreview(w, r, 0)
			return
		}
		if h, _ := hostOnly(r.Host); !s.hosts.Allows(r.Host) && (s.preview.opts.Host == "" || h != s.preview.opts.Host) {
			previewError(w, http.StatusMisdirectedRequest, "This host name is not one this server answers to.")
			return
		}
		s.servePreview(w, r, port)
	}))
}

// previewError answers a preview origin's own page: plain text, nothing
// the app could use.
func previewError(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	fmt.Fprintf(w, "ExeClaw preview: %s\n", msg)
}

// servePreview answers a request to a preview origin: slot is the
// --preview-listen port it came to, 0 for a --preview-domain name.
func (s *Server) servePreview(w http.ResponseWriter, r *http.Request, slot int) {
	p := s.preview
	now := time.Now()
	var origin, cookieName string
	var target previewTarget
	var epoch uint64
	if slot == 0 {
		id, port, ok := p.domainTarget(r.Host)
		if !ok {
			previewError(w, http.StatusNotFound, "no such preview: preview names are PORT-SESSION."+p.domain+".")
			return
		}
		h, _ := hostOnly(r.Host)
		origin, cookieName = "host:"+h, previewCookiePrefix+"preview"
		target = previewTarget{session: id, port: port}
	} else {
		sl, ok := p.slotFor(slot)
		if !ok || sl.target == (previewTarget{}) {
			previewError(w, http.StatusNotFound, "this preview port shows nothing now: open a preview from ExeClaw.")
			return
		}
		origin, cookieName = "port:"+strconv.Itoa(slot), previewCookiePrefix+"preview_"+strconv.Itoa(slot)
		target, epoch = sl.target, sl.epoch
	}
	matches := func(t previewToken) bool {
		return t.Origin == origin && t.Session == target.session && t.Port == target.port && t.Epoch == epoch &&
			(slot == 0 || t.User == target.user)
	}

	// A grant is traded for the origin's cookie, and the browser sent on
	// to the app without it in the address.
	if r.URL.Path == previewPath {
		g, ok := p.verify(r.URL.Query().Get("grant"), "grant", now)
		if !ok || !matches(g) {
			previewError(w, http.StatusForbidden, "this preview link is not valid here, or has expired: open the preview again from ExeClaw.")
			return
		}
		c := previewToken{Kind: "cookie", User: g.User, Session: g.Session, Port: g.Port, Origin: origin, Epoch: epoch,
			Expires: now.Add(p.opts.CookieTTL).Unix()}
		http.SetCookie(w, &http.Cookie{Name: cookieName, Value: p.sign(c), Path: "/", MaxAge: int(p.opts.CookieTTL.Seconds()),
			HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: secureCookie(r)})
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Referrer-Policy", "no-referrer")
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}

	ck, err := r.Cookie(cookieName)
	if err != nil {
		previewError(w, http.StatusUnauthorized, "open this preview from ExeClaw (its Preview link): previews need a link that carries a grant.")
		return
	}
	t, ok := p.verify(ck.Value, "cookie", now)
	if !ok || !matches(t) {
		previewError(w, http.StatusUnauthorized, "this preview's access has expired or now belongs to another preview: open it again from ExeClaw.")
		return
	}
	live, err := s.sessions.Live(r.Context(), session.User{ID: t.User}, t.Session)
	if err != nil {
		previewError(w, http.StatusBadGateway, "the session is not running (it ended or paused).")
		return
	}
	if slot != 0 {
		p.touchSlot(slot, target, now)
	}
	live.Touch()
	if !p.enter(t.Session) {
		previewError(w, http.StatusServiceUnavailable, "too many requests in flight to this session's previews.")
		return
	}
	defer p.leave(t.Session)
	s.proxyPreview(w, r, live, previewTarget{user: t.User, session: t.Session, port: t.Port}, cookieName)
}

func (p *previews) enter(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.busy[id] >= maxPreviewConns {
		return false
	}
	p.busy[id]++
	return true
}

func (p *previews) leave(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.busy[id]--; p.busy[id] <= 0 {
		delete(p.busy, id)
	}
}

// transport is the HTTP transport to target's port through its guest,
// kept while the session runs.
func (p *previews) transport(t previewTarget, live session.Live) *http.Transport {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.trans[t]; ok && c.done == live.Done {
		return c.tr
	}
	g := live.Guest
	port := t.port
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, previewDialTimeout)
			defer cancel()
			conn, err := g.Forward(ctx, port)
			if ge, ok := errors.AsType[*guest.Error](err); ok {
				return nil, fmt.Errorf("%s", ge.Message)
			}
			return conn, err
		},
		Proxy:                  nil,
		MaxIdleConnsPerHost:    8,
		IdleConnTimeout:        30 * time.Second,
		ResponseHeaderTimeout:  previewHeaderTimeout,
		MaxResponseHeaderBytes: 64 << 10,
		DisableCompression:     true, // bodies pass as the app sent them
	}
	p.trans[t] = &previewConn{tr: tr, done: live.Done}
	go func() {
		<-live.Done
		tr.CloseIdleConnections()
		p.mu.Lock()
		if c, ok := p.trans[t]; ok && c.tr == tr {
			delete(p.trans, t)
		}
		p.mu.Unlock()
		p.release(t.session, nil)
	}()
	return tr
}

// proxyPreview forwards a request to the app, WebSocket upgrades included,
// streaming both ways. The app sees Host localhost:PORT (what dev servers
// allow by default), none of this server's cookies and none of exe.dev's
// identity headers; its answers may not set this server's cookies.
func (s *Server) proxyPreview(w http.ResponseWriter, r *http.Request, live session.Live, t previewTarget, cookieName string) {
	local := "localhost:" + strconv.Itoa(t.port)
	publicHost := r.Host
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			out := pr.Out
			out.URL.Scheme, out.URL.Host, out.Host = "http", local, local
			stripOwnCookies(out.Header)
			for k := range out.Header {
				if strings.HasPrefix(strings.ToLower(k), "x-exedev-") {
					out.Header.Del(k)
				}
			}
			out.Header.Set("X-Forwarded-Host", publicHost)
			out.Header.Set("X-Forwarded-Proto", scheme)
		},
		Transport:     s.preview.transport(t, live),
		FlushInterval: -1, // server-sent events and streamed pages as they come
		ModifyResponse: func(resp *http.Response) error {
			kept := resp.Header.Values("Set-Cookie")[:0:0]
			for _, v := range resp.Header.Values("Set-Cookie") {
				name, _, _ := strings.Cut(v, "=")
				if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(name)), previewCookiePrefix) {
					kept = append(kept, v)
				}
			}
			resp.Header.Del("Set-Cookie")
			for _, v := range kept {
				resp.Header.Add("Set-Cookie", v)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the browser went away
			}
			previewError(w, http.StatusBadGateway, fmt.Sprintf("nothing answers on port %d in the sandbox (%v).", t.port, err))
		},
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, maxPreviewBody)
	}
	rp.ServeHTTP(w, r)
}

// stripOwnCookies removes this server's cookies (the login cookie, preview
// cookies) from a Cookie header, keeping the app's own as they were.
func stripOwnCookies(h http.Header) {
	var kept []string
	for _, line := range h.Values("Cookie") {
		for part := range strings.SplitSeq(line, ";") {
			name, _, _ := strings.Cut(part, "=")
			if name = strings.TrimSpace(name); name == "" || strings.HasPrefix(strings.ToLower(name), previewCookiePrefix) {
				continue
			}
			kept = append(kept, strings.TrimSpace(part))
		}
	}
	h.Del("Cookie")
	if len(kept) > 0 {
		h.Set("Cookie", strings.Join(kept, "; "))
	}
}

// withPreviewDomain answers requests for --preview-domain names with their
// preview, before anything of the API or the UI looks at them.
func (s *Server) withPreviewDomain(main http.Handler) http.Handler {
	if s.preview == nil || s.preview.domain == "" {
		return main
	}
	preview := s.accessLog(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.servePreview(w, r, 0) }))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := s.preview.domainTarget(r.Host); ok {
			preview.ServeHTTP(w, r)
			return
		}
		main.ServeHTTP(w, r)
	})
}
