package api

import (
	"io/fs"
	"net/http"
	"strings"
)

func (s *Server) handleIndex(w http.ResponseWriter, r *http.Request) error {
	page, err := s.assets.ReadFile("index.html")
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, err = w.Write(page)
	return err
}

// handleStatic serves the UI's scripts, styles and vendored libraries.
func (s *Server) handleStatic(w http.ResponseWriter, r *http.Request) error {
	name := strings.TrimPrefix(r.URL.Path, "/")
	if !fs.ValidPath(name) || strings.HasSuffix(name, "/") {
		return errorf(http.StatusNotFound, "not found")
	}
	if _, err := fs.Stat(s.assets, name); err != nil {
		return errorf(http.StatusNotFound, "not found")
	}
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeFileFS(w, r, s.assets, name)
	return nil
}
