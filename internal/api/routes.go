package api

import (
	"net/http"
	"sort"
	"strings"
)

// routes lists every route the server answers.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	r := &router{mux: mux, methods: map[string][]string{}}
	user := s.requireUser

	// Public: liveness for probes, and the login page.
	r.handle("GET", "/api/health", s.handle(s.handleHealth))
	r.handle("GET", "/login", s.handle(s.handleLoginPage))
	r.handle("POST", "/login", s.handle(s.handleLogin))
	r.handle("POST", "/logout", s.handle(s.handleLogout))

	r.handle("GET", "/api/system", user(s.handle(s.handleSystem)))
	r.handle("GET", "/api/platform", user(s.handle(s.handlePlatform)))
	r.handle("GET", "/api/userinfo", user(s.handle(s.handleUserInfo)))
	r.handle("GET", "/api/models/{provider}", user(s.handle(s.handleModels)))

	r.handle("GET", "/api/sessions", user(s.handle(s.handleListSessions)))
	r.handle("POST", "/api/sessions", user(s.handle(s.handleCreateSession)))
	r.handle("GET", "/api/sessions/{id}/status", user(s.handle(s.handleSessionStatus)))
	r.handle("GET", "/api/sessions/{id}/stream", user(s.handle(s.handleStream)))
	r.handle("POST", "/api/sessions/{id}/input", user(s.handle(s.handleInput)))
	r.handle("POST", "/api/sessions/{id}/cancel", user(s.handle(s.handleCancel)))
	r.handle("POST", "/api/sessions/{id}/pause", user(s.handle(s.handlePause)))
	r.handle("POST", "/api/sessions/{id}/resume", user(s.handle(s.handleResume)))
	r.handle("POST", "/api/sessions/{id}/email", user(s.handle(s.handleEmail)))
	r.handle("GET", "/api/sessions/{id}/transcript", user(s.handle(s.handleTranscript)))
	r.handle("GET", "/api/sessions/{id}/terminal", user(s.handle(s.handleTerminal)))
	r.handle("GET", "/api/sessions/{id}/ports", user(s.handle(s.handlePorts)))
	// The workspace in the user's hands (files.go).
	r.handle("GET", "/api/sessions/{id}/files", user(s.handle(s.handleFiles)))
	r.handle("GET", "/api/sessions/{id}/files/content", user(s.handle(s.handleFileDownload)))
	r.handle("PUT", "/api/sessions/{id}/files/content", user(s.handle(s.handleFileUpload)))
	r.handle("GET", "/api/sessions/{id}/workspace.tar.gz", user(s.handle(s.handleWorkspaceTar)))
	r.handle("GET", "/api/sessions/{id}/changes", user(s.handle(s.handleChanges)))
	r.handle("PUT", "/api/sessions/{id}/archive", user(s.handle(s.handleArchiveUpload)))
	r.handle("DELETE", "/api/sessions/{id}", user(s.handle(s.handleDeleteSession)))
	r.handle("PATCH", "/api/sessions/{id}", user(s.handle(s.handleRenameSession)))
	r.handle("POST", "/api/exedev/new", user(s.handle(s.handleExeDevNew)))

	if s.metricsRoute {
		r.handle("GET", "/metrics", user(s.metrics.Handler()))
	}

	r.handle("GET", "/{$}", user(s.handle(s.handleIndex)))
	static := s.handle(s.handleStatic)
	r.handle("GET", "/static/", loginAssets(static, user(static)))

	r.fallbacks()
	mux.Handle("/", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		return errorf(http.StatusNotFound, "not found: %s", r.URL.Path)
	}))

	protect := http.NewCrossOriginProtection()
	protect.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusForbidden, map[string]string{
			"error": "cross-origin request refused: state-changing requests must come from this server's own pages (Sec-Fetch-Site / Origin)"})
	}))
	return s.withPreviewDomain(s.accessLog(securityHeaders(s.hostCheck(protect.Handler(mux)))))
}

// loginAssets serves what the login page loads to anyone, and everything else
// under /static/ only to signed-in users.
func loginAssets(public, private http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/static/css/login.css", "/static/img/icon.svg":
			public.ServeHTTP(w, r)
		default:
			private.ServeHTTP(w, r)
		}
	})
}

// router registers method patterns and answers other methods on the same
// paths with a JSON 405 instead of the mux's plain-text one.
type router struct {
	mux     *http.ServeMux
	methods map[string][]string
	order   []string
}

func (r *router) handle(method, path string, h http.Handler) {
	r.mux.Handle(method+" "+path, h)
	if _, ok := r.methods[path]; !ok {
		r.order = append(r.order, path)
	}
	r.methods[path] = append(r.methods[path], method)
}

func (r *router) fallbacks() {
	for _, path := range r.order {
		allowed := r.methods[path]
		sort.Strings(allowed)
		allow := strings.Join(allowed, ", ")
		r.mux.HandleFunc(path, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Allow", allow)
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed; use " + allow})
		})
	}
}
