package api

import (
	"net/http"
	"strings"

	"github.com/execlaw/execlaw/internal/hostinfo"
	"github.com/execlaw/execlaw/internal/llm"
	"github.com/execlaw/execlaw/internal/session"
)

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) error {
	status, code := "ok", http.StatusOK
	if err := s.store.Ping(r.Context()); err != nil {
		s.log.Error("health: database", "err", err)
		status, code = "database unavailable", http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{
		"status": status, "sandbox": s.platform.Sandbox, "isolated": s.platform.Isolated,
		"sandboxReason": s.platform.SandboxReason, "version": s.platform.Version,
	})
	return nil
}

// systemInfo is the answer of /api/system, what the memory gauge shows.
type systemInfo struct {
	TotalMiB     int64   `json:"totalMiB"`
	UsedMiB      int64   `json:"usedMiB"`
	AvailableMiB int64   `json:"availableMiB"`
	CacheMiB     int64   `json:"cacheMiB"`
	PercentUsed  float64 `json:"percentUsed"`
	Load1        float64 `json:"load1"`
	Load5        float64 `json:"load5"`
	Load15       float64 `json:"load15"`
	Sessions     int     `json:"sessions"`
	MaxSessions  int     `json:"maxSessions"`
	// Pool is the warm pool of booted, idle VMs new sessions take.
	Pool session.PoolStats `json:"pool"`
}

func (s *Server) handleSystem(w http.ResponseWriter, r *http.Request) error {
	mem, err := hostinfo.ReadMemory()
	if err != nil {
		return err
	}
	load, err := hostinfo.ReadLoad()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, systemInfo{
		TotalMiB: mem.TotalMiB, UsedMiB: mem.UsedMiB(), AvailableMiB: mem.AvailableMiB, CacheMiB: mem.CachedMiB,
		PercentUsed: float64(int(mem.PercentUsed()*10)) / 10,
		Load1:       load.Load1, Load5: load.Load5, Load15: load.Load15,
		Sessions: s.sessions.Running(), MaxSessions: s.sessions.MaxSessions(), Pool: s.sessions.Pool(),
	})
	return nil
}

func (s *Server) handlePlatform(w http.ResponseWriter, r *http.Request) error {
	agents := s.sessions.Agents()
	writeJSON(w, http.StatusOK, map[string]any{
		"isExeDev":      s.platform.IsExeDev,
		"sandbox":       s.platform.Sandbox,
		"isolated":      s.platform.Isolated,
		"sandboxReason": s.platform.SandboxReason,
		"sandboxChecks": s.platform.SandboxChecks,
		"version":       s.platform.Version,
		"auth":          s.auth.Mode,
		"agents":        agents.Names(),
		"agentKinds":    agents.Kinds(),
		"providers":     llm.Providers,
		"features":      map[string]bool{"email": s.email.Sender != nil, "exedevNew": s.exedev.Enabled},
		// The largest file or archive an upload may be (files.go).
		"maxUploadBytes": s.files.opts.MaxUploadBytes,
	})
	return nil
}

func (s *Server) handleUserInfo(w http.ResponseWriter, r *http.Request) error {
	u := userFrom(r.Context())
	writeJSON(w, http.StatusOK, map[string]any{"email": u.Email, "userId": u.ID, "isExeDev": s.platform.IsExeDev})
	return nil
}

// handleModels lists a provider's models. For live listings the endpoint may
// need a key: it is read from X-Api-Key, never from the query string, which
// ends up in logs and browser history.
func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) error {
	provider := r.PathValue("provider")
	if !llm.ValidProvider(provider) {
		return errorf(http.StatusNotFound, "unknown provider %q; known: %s", provider, strings.Join(llm.Providers, ", "))
	}
	baseURL := r.URL.Query().Get("baseUrl")
	if baseURL != "" {
		if err := llm.ValidateBaseURL(baseURL); err != nil {
			return errorf(http.StatusBadRequest, "%v", err)
		}
	}
	key := r.Header.Get("X-Api-Key")
	if len(key) > 4096 {
		return errorf(http.StatusBadRequest, "X-Api-Key is too long")
	}
	list, err := s.models.List(r.Context(), provider, baseURL, llm.NewSecret(key))
	if err != nil {
		return errorf(http.StatusBadRequest, "%v", err)
	}
	if list.Models == nil {
		list.Models = []llm.Model{}
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}
