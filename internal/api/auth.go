package api

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/store"
)

// Auth modes.
const (
	AuthNone   = "none"
	AuthToken  = "token"
	AuthExeDev = "exedev"
)

// Headers the exe.dev proxy sets; trusted only in exedev mode, and only from
// a loopback peer or one of Auth.TrustedProxies.
const (
	headerExeDevUserID = "X-ExeDev-UserID"
	headerExeDevEmail  = "X-ExeDev-Email"
)

const cookieName = "execlaw_session"

// Browser logins (token mode): a random cookie value, of which the database
// keeps only a SHA-256, valid for loginLifetime from the moment of signing
// in (fixed, not sliding), until POST /logout, or until the server runs with
// another token. At most maxLogins live at once; the oldest go first.
const (
	loginLifetime   = 30 * 24 * time.Hour
	maxLogins       = 1000
	loginTouchEvery = 5 * time.Minute
	loginValueBytes = 32
)

// MinTokenLen is the shortest access token the server accepts from its
// operator (generated tokens are 48 hex digits).
const MinTokenLen = 20

// Auth decides who a request comes from.
type Auth struct {
	Mode  string
	Token string // token mode: the shared secret
	// TrustedProxies (exedev mode) are the peers, besides loopback ones,
	// whose X-ExeDev-* headers are believed. From any other peer a request
	// has no user.
	TrustedProxies []netip.Prefix
}

type userKey struct{}

func userFrom(ctx context.Context) session.User {
	u, _ := ctx.Value(userKey{}).(session.User)
	return u
}

// ParseTrustedProxies reads a comma-separated list of CIDR prefixes or
// single addresses. A prefix that covers every address (0.0.0.0/0, ::/0) is
// refused: it would trust anyone.
func ParseTrustedProxies(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, raw := range strings.Split(list, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		var p netip.Prefix
		if strings.Contains(raw, "/") {
			var err error
			if p, err = netip.ParsePrefix(raw); err != nil {
				return nil, fmt.Errorf("trusted proxy %q: not an address or CIDR prefix", raw)
			}
		} else {
			a, err := netip.ParseAddr(raw)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("trusted proxy %q: not an address or CIDR prefix", raw)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(0, p.Bits()-96))
		}
		if p.Bits() == 0 {
			return nil, fmt.Errorf("trusted proxy %q covers every address: that would let anyone claim to be any exe.dev user", raw)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// trustsPeer reports whether a request from remoteAddr (host:port, as in
// http.Request.RemoteAddr) may speak for the exe.dev proxy.
func (a Auth) trustsPeer(remoteAddr string) bool {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	addr := ap.Addr().WithZone("").Unmap()
	if addr.IsLoopback() {
		return true
	}
	for _, p := range a.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// CheckExeDev refuses exedev mode on an address beyond loopback when no
// proxy is named: anyone who can connect could send the identity headers.
func CheckExeDev(listen string, proxies []netip.Prefix) error {
	if IsLoopbackListen(listen) || len(proxies) > 0 {
		return nil
	}
	return fmt.Errorf("--auth exedev believes the X-ExeDev-UserID and X-ExeDev-Email headers, which anyone who can connect to %s could forge to act as any user: "+
		"listen on a loopback address behind the exe.dev proxy, or name the proxy's addresses with --trusted-proxy (EXECLAW_TRUSTED_PROXY: comma-separated addresses or CIDR prefixes)", listen)
}

// tokenFingerprint identifies the access token a login was made with,
// without being the token.
func tokenFingerprint(token string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("execlaw login token fingerprint v1"))
	return hex.EncodeToString(m.Sum(nil))[:32]
}

func loginHash(value string) string {
	sum := sha256.Sum256([]byte(value))
	return hex.EncodeToString(sum[:])
}

// validLoginValue: what newLogin makes, 64 lower-case hex digits.
func validLoginValue(v string) bool {
	if len(v) != 2*loginValueBytes {
		return false
	}
	for _, c := range v {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func (s *Server) tokenMatches(got string) bool {
	return s.auth.Token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.auth.Token)) == 1
}

// tooManyFailures answers a client that used up its failed sign-ins (429).
func tooManyFailures(w http.ResponseWriter, retry time.Duration) error {
	secs := retryAfterSeconds(retry)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return errorf(http.StatusTooManyRequests, "too many failed sign-ins from your address: try again in %d s", secs)
}

func retryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// identify returns the request's user, false when it is not authenticated,
// or an error to answer instead (429).
func (s *Server) identify(w http.ResponseWriter, r *http.Request) (session.User, bool, error) {
	switch s.auth.Mode {
	case AuthNone:
		return session.User{ID: "local"}, true, nil
	case AuthToken:
		if h := r.Header.Get("Authorization"); h != "" {
			key := clientKey(r.RemoteAddr)
			if retry, blocked := s.limiter.blocked(key); blocked {
				return session.User{}, false, tooManyFailures(w, retry)
			}
			got, ok := strings.CutPrefix(h, "Bearer ")
			if ok && s.tokenMatches(strings.TrimSpace(got)) {
				return session.User{ID: "owner"}, true, nil
			}
			s.limiter.fail(key)
			return session.User{}, false, nil
		}
		if c, err := r.Cookie(cookieName); err == nil && s.checkLogin(r.Context(), c.Value) {
			return session.User{ID: "owner"}, true, nil
		}
		return session.User{}, false, nil
	case AuthExeDev:
		id := r.Header.Get(headerExeDevUserID)
		if id == "" {
			return session.User{}, false, nil
		}
		if !s.auth.trustsPeer(r.RemoteAddr) {
			if s.untrustedLog.allow(time.Now()) {
				s.log.Warn("ignored X-ExeDev-* headers from a peer that is not trusted (401); if it is exe.dev's proxy, add its address to --trusted-proxy",
					"peer", r.RemoteAddr)
			}
			return session.User{}, false, nil
		}
		if len(id) > 128 || strings.ContainsFunc(id, func(r rune) bool { return !unicode.IsPrint(r) }) {
			return session.User{}, false, nil
		}
		email := r.Header.Get(headerExeDevEmail)
		if len(email) > 254 || strings.ContainsFunc(email, func(r rune) bool { return !unicode.IsPrint(r) }) {
			email = ""
		}
		return session.User{ID: id, Email: email}, true, nil
	}
	return session.User{}, false, nil
}

// checkLogin reports whether a cookie value is a live login made under the
// current token. Logins of another token or past their expiry are deleted
// when seen.
func (s *Server) checkLogin(ctx context.Context, value string) bool {
	if s.store == nil || !validLoginValue(value) {
		return false
	}
	hash := loginHash(value)
	l, err := s.store.GetLogin(ctx, hash)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Error("look up login", "err", err)
		}
		return false
	}
	now := time.Now()
	if l.TokenFP != s.tokenFP || !now.Before(l.Expires) {
		if err := s.store.DeleteLogin(ctx, hash); err != nil {
			s.log.Warn("delete stale login", "err", err)
		}
		return false
	}
	if now.Sub(l.LastSeen) >= loginTouchEvery {
		if err := s.store.TouchLogin(ctx, hash, now); err != nil {
			s.log.Warn("record login use", "err", err)
		}
	}
	return true
}

// sweepLogins removes the logins of another token (the server was started
// with a new one) and expired ones.
func (s *Server) sweepLogins() {
	if s.auth.Mode != AuthToken || s.store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := s.store.DeleteStaleLogins(ctx, s.tokenFP, time.Now())
	if err != nil {
		s.log.Error("remove stale logins", "err", err)
	} else if n > 0 {
		s.log.Info("removed logins of another token or expired", "logins", n)
	}
}

// requireUser rejects unauthenticated requests: API calls get 401 JSON, page
// loads go to the login page.
func (s *Server) requireUser(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, ok, err := s.identify(w, r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if !ok {
			if strings.HasPrefix(r.URL.Path, "/api/") || r.URL.Path == "/metrics" || s.auth.Mode != AuthToken {
				msg := "authentication required: send Authorization: Bearer <token>"
				if s.auth.Mode == AuthExeDev {
					msg = "authentication required: requests must come through the exe.dev proxy"
				}
				writeJSON(w, http.StatusUnauthorized, map[string]string{"error": msg})
				return
			}
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, u)))
	})
}

func (s *Server) handleLoginPage(w http.ResponseWriter, r *http.Request) error {
	if s.auth.Mode != AuthToken {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return nil
	}
	return s.renderLogin(w, http.StatusOK, "")
}

func (s *Server) renderLogin(w http.ResponseWriter, status int, problem string) error {
	page, err := s.assets.ReadFile("login.html")
	if err != nil {
		return err
	}
	html := strings.Replace(string(page), "<!--problem-->", htmlEscape(problem), 1)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err = w.Write([]byte(html))
	return err
}

func secureCookie(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) error {
	if s.auth.Mode != AuthToken {
		return errorf(http.StatusNotFound, "login is only used with --auth token")
	}
	key := clientKey(r.RemoteAddr)
	if retry, blocked := s.limiter.blocked(key); blocked {
		secs := retryAfterSeconds(retry)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		return s.renderLogin(w, http.StatusTooManyRequests, fmt.Sprintf("Too many wrong tokens from your address. Try again in %d seconds.", secs))
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return errorf(http.StatusBadRequest, "invalid form")
	}
	token := strings.TrimSpace(r.PostForm.Get("token"))
	if !s.tokenMatches(token) {
		s.limiter.fail(key)
		return s.renderLogin(w, http.StatusUnauthorized, "That token is not right. It was printed when the server started, and is stored in the data directory.")
	}
	if s.store == nil {
		return errorf(http.StatusServiceUnavailable, "signing in needs the database")
	}
	var raw [loginValueBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return err
	}
	value := hex.EncodeToString(raw[:])
	now := time.Now()
	if err := s.store.CreateLogin(r.Context(), store.Login{
		Hash: loginHash(value), TokenFP: s.tokenFP, Created: now, LastSeen: now, Expires: now.Add(loginLifetime),
	}, maxLogins); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: value, Path: "/",
		MaxAge: int(loginLifetime.Seconds()), HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secureCookie(r),
	})
	http.Redirect(w, r, "/", http.StatusSeeOther)
	return nil
}

// handleLogout ends the login server-side (its cookie value is worthless
// from then on, wherever a copy of it is) and clears the cookie.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) error {
	if c, err := r.Cookie(cookieName); err == nil && validLoginValue(c.Value) && s.store != nil {
		if err := s.store.DeleteLogin(r.Context(), loginHash(c.Value)); err != nil {
			return err
		}
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: secureCookie(r)})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
	return nil
}

func htmlEscape(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&#39;")
	return r.Replace(s)
}

// CheckListen refuses auth none on an address other machines can reach.
func CheckListen(mode, addr string) error {
	if mode != AuthNone {
		return nil
	}
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	if isLoopback(host) {
		return nil
	}
	return fmt.Errorf("--auth none is only allowed on a loopback address (127.0.0.1, ::1, localhost), not %q: anyone who can reach it could run commands", addr)
}
