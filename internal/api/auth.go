package api

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/execlaw/execlaw/internal/session"
)

// Auth modes.
const (
	AuthNone   = "none"
	AuthToken  = "token"
	AuthExeDev = "exedev"
)

// Headers the exe.dev proxy sets; trusted only in exedev mode.
const (
	headerExeDevUserID = "X-ExeDev-UserID"
	headerExeDevEmail  = "X-ExeDev-Email"
)

const cookieName = "execlaw_session"

// Auth decides who a request comes from.
type Auth struct {
	Mode  string
	Token string // token mode: the shared secret
}

type userKey struct{}

func userFrom(ctx context.Context) session.User {
	u, _ := ctx.Value(userKey{}).(session.User)
	return u
}

// cookieValue is what the browser holds after logging in: derived from the
// token, so it can be checked without server state, but not the token itself.
func (a Auth) cookieValue() string {
	m := hmac.New(sha256.New, []byte(a.Token))
	m.Write([]byte("execlaw browser session v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// identify returns the request's user, or false when it is not authenticated.
func (a Auth) identify(r *http.Request) (session.User, bool) {
	switch a.Mode {
	case AuthNone:
		return session.User{ID: "local"}, true
	case AuthToken:
		if h := r.Header.Get("Authorization"); h != "" {
			got, ok := strings.CutPrefix(h, "Bearer ")
			if ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(a.Token)) == 1 {
				return session.User{ID: "owner"}, true
			}
			return session.User{}, false
		}
		if c, err := r.Cookie(cookieName); err == nil &&
			subtle.ConstantTimeCompare([]byte(c.Value), []byte(a.cookieValue())) == 1 {
			return session.User{ID: "owner"}, true
		}
		return session.User{}, false
	case AuthExeDev:
		id := r.Header.Get(headerExeDevUserID)
		if id == "" || len(id) > 128 || strings.ContainsFunc(id, func(r rune) bool { return !unicode.IsPrint(r) }) {
			return session.User{}, false
		}
		email := r.Header.Get(headerExeDevEmail)
		if len(email) > 254 || strings.ContainsFunc(email, func(r rune) bool { return !unicode.IsPrint(r) }) {
			email = ""
		}
		return session.User{ID: id, Email: email}, true
	}
	return session.User{}, false
}

// requireUser rejects unauthenticated requests: API calls get 401 JSON, page
// loads go to the login page.
func (s *Server) requireUser(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, ok := s.auth.identify(r)
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

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) error {
	if s.auth.Mode != AuthToken {
		return errorf(http.StatusNotFound, "login is only used with --auth token")
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return errorf(http.StatusBadRequest, "invalid form")
	}
	token := strings.TrimSpace(r.PostForm.Get("token"))
	if subtle.ConstantTimeCompare([]byte(token), []byte(s.auth.Token)) != 1 {
		return s.renderLogin(w, http.StatusUnauthorized, "That token is not right. It was printed when the server started, and is stored in the data directory.")
	}
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: s.auth.cookieValue(), Path: "/",
		MaxAge: int((30 * 24 * time.Hour).Seconds()), HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https",
	})
	http.Redirect(w, r, "/", http.StatusSeeOther)
	return nil
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) error {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
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
	if h, _, err := splitHostPort(addr); err == nil {
		host = h
	}
	if isLoopback(host) {
		return nil
	}
	return fmt.Errorf("--auth none is only allowed on a loopback address (127.0.0.1, ::1, localhost), not %q: anyone who can reach it could run commands", addr)
}
