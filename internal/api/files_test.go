package api_test

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/api"
	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/egress"
	"github.com/execlaw/execlaw/internal/event"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/testutil"
)

type listing struct {
	Path      string
	Truncated bool
	Entries   []struct {
		Name    string
		Type    string
		Size    int64
		MTime   time.Time
		Escaped bool
	}
}

func filesURL(id, route, p string) string {
	u := "/api/sessions/" + id + route
	if p != "" || route == "/files/content" {
		u += "?path=" + url.QueryEscape(p)
	}
	return u
}

func octets(h *apitest.Harness) http.Header {
	hd := h.AuthHeader()
	hd.Set("Content-Type", "application/octet-stream")
	return hd
}

// Files go in and come out byte for byte; the listing shows them; a download
// is an attachment that no browser renders; the tarball holds the tree.
func TestWorkspaceFiles(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{})
	s := h.AnthropicSession(fake, nil)
	h.WaitState(s.ID, "active")

	all := make([]byte, 256*1024)
	for i := range all {
		all[i] = byte(i * 7)
	}
	var put struct {
		Path string
		Size int64
	}
	h.Must(200, "PUT", filesURL(s.ID, "/files/content", "data/all.bin"), all).JSON(t, &put)
	if put.Path != "data/all.bin" || put.Size != int64(len(all)) {
		t.Fatalf("upload answered %+v", put)
	}
	if b, _ := os.ReadFile(filepath.Join(h.Workspace(s.ID), "data/all.bin")); !bytes.Equal(b, all) {
		t.Fatal("the uploaded file differs in the workspace")
	}
	page := []byte("<html><script>alert(1)</script></html>")
	h.Must(200, "PUT", filesURL(s.ID, "/files/content", "sub/../index.html"), page)
	// An absolute path inside the workspace is the same file.
	h.Must(200, "PUT", filesURL(s.ID, "/files/content", filepath.Join(h.Workspace(s.ID), "index.html")), page)

	r := h.Must(200, "GET", filesURL(s.ID, "/files/content", "data/all.bin"), nil)
	if !bytes.Equal(r.Body, all) {
		t.Fatal("the download differs from the upload")
	}
	r = h.Must(200, "GET", filesURL(s.ID, "/files/content", "index.html"), nil)
	for k, want := range map[string]string{
		"Content-Type": "application/octet-stream", "X-Content-Type-Options": "nosniff",
		"Content-Disposition": `attachment; filename="index.html"`, "Cache-Control": "no-store",
	} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "sandbox") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP of a download: %q", csp)
	}

	var l listing
	h.Must(200, "GET", filesURL(s.ID, "/files", ""), nil).JSON(t, &l)
	names := map[string]string{}
	for _, e := range l.Entries {
		names[e.Name] = e.Type
	}
	if l.Path != "" || names["data"] != "dir" || names["index.html"] != "file" || len(names) != 2 {
		t.Fatalf("listing: %+v", l)
	}
	h.Must(200, "GET", filesURL(s.ID, "/files", "data"), nil).JSON(t, &l)
	if l.Path != "data" || len(l.Entries) != 1 || l.Entries[0].Size != int64(len(all)) || l.Entries[0].MTime.IsZero() {
		t.Fatalf("listing data: %+v", l)
	}

	r = h.Must(200, "GET", "/api/sessions/"+s.ID+"/workspace.tar.gz", nil)
	if r.Header.Get("Content-Type") != "application/gzip" || !strings.Contains(r.Header.Get("Content-Disposition"), "-workspace.tar.gz") {
		t.Errorf("tarball headers: %v", r.Header)
	}
	got := untar(t, r.Body)
	if !bytes.Equal([]byte(got["workspace/data/all.bin"]), all) || got["workspace/index.html"] != string(page) || got["workspace/data/"] != "/" {
		t.Errorf("tarball holds %d entries: %v", len(got), keys(got))
	}
}

func untar(t *testing.T, b []byte) map[string]string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	got := map[string]string{}
	for {
		hd, err := tr.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		switch hd.Typeflag {
		case tar.TypeDir:
			got[hd.Name] = "/"
		case tar.TypeSymlink:
			got[hd.Name] = "->" + hd.Linkname
		default:
			c, _ := io.ReadAll(tr)
			got[hd.Name] = string(c)
		}
	}
}

func keys[V any](m map[string]V) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

// Hostile paths, symlinks out of the workspace, control characters, huge
// uploads: 4xx, and nothing outside the workspace is read or changed, and
// nothing inside is lost.
func TestWorkspaceFilesHostile(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{Files: api.FilesOptions{MaxUploadBytes: 64 << 10}})
	s := h.AnthropicSession(fake, nil)
	h.WaitState(s.ID, "active")
	ws := h.Workspace(s.ID)
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	os.WriteFile(secret, []byte("top secret"), 0o600)
	os.WriteFile(filepath.Join(ws, "keep.txt"), []byte("keep me"), 0o644)
	os.Symlink(secret, filepath.Join(ws, "abs-link"))
	os.Symlink(outside, filepath.Join(ws, "out"))
	rel, _ := filepath.Rel(ws, secret)
	os.Symlink(rel, filepath.Join(ws, "rel-link"))
	os.WriteFile(filepath.Join(ws, "bad\x1b[31mname\n"), []byte("x"), 0o644)

	for _, c := range []struct {
		method, route, path string
		want                int
	}{
		{"GET", "/files/content", "../x", 400},
		{"GET", "/files/content", "a/../../x", 400},
		{"GET", "/files/content", "/etc/passwd", 400},
		{"GET", "/files/content", secret, 400},
		{"GET", "/files/content", "abs-link", 400},
		{"GET", "/files/content", "rel-link", 400},
		{"GET", "/files/content", "out/secret", 400},
		{"GET", "/files", "out", 400},
		{"GET", "/files", "..", 400},
		{"GET", "/files/content", "bad\x1b[31mname\n", 400},
		{"GET", "/files/content", "a\x00b", 400},
		{"GET", "/files/content", "caf\xe9", 400},
		{"GET", "/files/content", strings.Repeat("a", 5000), 400},
		{"GET", "/files/content", strings.Repeat("a", 300), 400},
		{"GET", "/files/content", "", 400},
		{"GET", "/files/content", "missing.txt", 404},
		{"GET", "/files", "missing", 404},
		{"GET", "/files/content", "keep.txt/x", 400},
		{"GET", "/files", "keep.txt", 400},
		{"PUT", "/files/content", "../evil", 400},
		{"PUT", "/files/content", "out/evil", 400},
		{"PUT", "/files/content", "out/secret", 400},
		{"PUT", "/files/content", secret, 400},
		{"PUT", "/files/content", "new\nline", 400},
		{"PUT", "/files/content", "", 400},
		{"PUT", "/files/content", ".", 400},
	} {
		var body any
		hd := h.AuthHeader()
		if c.method == "PUT" {
			body = "pwned"
			hd = octets(h)
		}
		r := h.Do(c.method, filesURL(s.ID, c.route, c.path), body, hd)
		if r.Status != c.want || !bytes.Contains(r.Body, []byte(`"error"`)) {
			t.Errorf("%s %s %q: %d %s, want %d", c.method, c.route, c.path, r.Status, r.Body, c.want)
		}
	}
	// A huge upload: refused by its length, or cut off when it does not
	// say; the file it would have replaced is whole.
	big := bytes.Repeat([]byte("x"), 100<<10)
	if r := h.Do("PUT", filesURL(s.ID, "/files/content", "keep.txt"), big, octets(h)); r.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("a huge upload: %d %s", r.Status, r.Body)
	}
	req, _ := http.NewRequest("PUT", h.URL(filesURL(s.ID, "/files/content", "keep.txt")), io.MultiReader(bytes.NewReader(big)))
	req.Header = octets(h)
	req.ContentLength = -1 // chunked: the server finds out as it reads
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("a huge chunked upload: %v %v", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}
	if b, _ := os.ReadFile(filepath.Join(ws, "keep.txt")); string(b) != "keep me" {
		t.Errorf("keep.txt is %q after the refused uploads", b)
	}
	if b, _ := os.ReadFile(secret); string(b) != "top secret" {
		t.Fatalf("the file outside changed: %q", b)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Fatalf("files appeared outside: %v", entries)
	}
	// The listing shows the odd name escaped, marked as such.
	var l listing
	h.Must(200, "GET", filesURL(s.ID, "/files", ""), nil).JSON(t, &l)
	found := false
	for _, e := range l.Entries {
		if strings.ContainsAny(e.Name, "\x1b\n") {
			t.Errorf("a control character in a listed name: %q", e.Name)
		}
		if e.Escaped && e.Name == `bad\x1b[31mname\x0a` {
			found = true
		}
	}
	if !found {
		t.Errorf("the odd name is not listed escaped: %+v", l.Entries)
	}
	// A page of another site (or another origin of this one) cannot make
	// the browser fetch the workspace.
	hd := h.AuthHeader()
	hd.Set("Sec-Fetch-Site", "same-site")
	if r := h.Do("GET", filesURL(s.ID, "/files/content", "keep.txt"), nil, hd); r.Status != http.StatusForbidden {
		t.Errorf("a same-site fetch: %d", r.Status)
	}
	hd.Set("Sec-Fetch-Site", "cross-site")
	if r := h.Do("PUT", filesURL(s.ID, "/files/content", "x"), "x", hd); r.Status != http.StatusForbidden {
		t.Errorf("a cross-site upload: %d", r.Status)
	}
	// Not a session: 404; an ended one: 409.
	if r := h.Do("GET", filesURL("s_000000000000000000000000", "/files", ""), nil, nil); r.Status != 404 {
		t.Errorf("an unknown session: %d", r.Status)
	}
	h.Must(200, "DELETE", "/api/sessions/"+s.ID, nil)
	for _, p := range []string{filesURL(s.ID, "/files", ""), filesURL(s.ID, "/files/content", "keep.txt"), "/api/sessions/" + s.ID + "/workspace.tar.gz", "/api/sessions/" + s.ID + "/changes"} {
		if r := h.Do("GET", p, nil, nil); r.Status != http.StatusConflict {
			t.Errorf("GET %s of an ended session: %d %s", p, r.Status, r.Body)
		}
	}
}

// Someone else's session answers 404 on every workspace route, exactly
// like one that does not exist.
func TestWorkspaceOtherUser404(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{Auth: api.Auth{Mode: api.AuthExeDev}})
	s := h.AnthropicSession(fake, nil)
	h.WaitState(s.ID, "active")
	os.WriteFile(filepath.Join(h.Workspace(s.ID), "mine.txt"), []byte("alice's"), 0o644)
	bob := http.Header{"X-Exedev-Userid": {"bob"}}
	for _, c := range []struct{ method, path string }{
		{"GET", filesURL(s.ID, "/files", "")},
		{"GET", filesURL(s.ID, "/files/content", "mine.txt")},
		{"PUT", filesURL(s.ID, "/files/content", "mine.txt")},
		{"GET", "/api/sessions/" + s.ID + "/workspace.tar.gz"},
		{"GET", "/api/sessions/" + s.ID + "/changes"},
		{"PUT", "/api/sessions/" + s.ID + "/archive"},
	} {
		var body any
		if c.method == "PUT" {
			body = "bob was here"
		}
		if r := h.Do(c.method, c.path, body, bob); r.Status != http.StatusNotFound || !bytes.Contains(r.Body, []byte("session not found")) {
			t.Errorf("bob %s %s: %d %s", c.method, c.path, r.Status, r.Body)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(h.Workspace(s.ID), "mine.txt")); string(b) != "alice's" {
		t.Fatalf("alice's file: %q", b)
	}
}

// Listings are rate-bounded per user, transfers bounded in number.
func TestWorkspaceRateBound(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{})
	s := h.AnthropicSession(fake, nil)
	h.WaitState(s.ID, "active")
	limited := 0
	for range 100 {
		if r := h.Do("GET", filesURL(s.ID, "/files", ""), nil, nil); r.Status == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited == 0 {
		t.Error("100 listings in a row were all answered")
	}
	// The ports route asks the sandbox too, out of the same budget.
	for range 100 {
		if r := h.Do("GET", "/api/sessions/"+s.ID+"/ports", nil, nil); r.Status == http.StatusTooManyRequests {
			return
		}
	}
	t.Error("100 port listings in a row were all answered")
}

// In a workspace that is not a repository, changes are the files added or
// changed since the session began, new text files with their content.
func TestWorkspaceChangesFiles(t *testing.T) {
	fake := llmtest.NewAnthropic(
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "write_file", Input: `{"path":"notes/plan.md","content":"step one\nstep two\n"}`}}},
		llmtest.Turn{Text: "written"},
	).Attach(t)
	h := apitest.New(t, apitest.Options{})
	s := h.AnthropicSession(fake, nil)
	h.WaitState(s.ID, "active")
	var c struct {
		Kind  string
		Files []struct{ Path, Status string }
		Diff  string
		Note  string
	}
	h.Must(200, "GET", "/api/sessions/"+s.ID+"/changes", nil).JSON(t, &c)
	if c.Kind != "files" || len(c.Files) != 0 {
		t.Fatalf("changes of a new session: %+v", c)
	}
	st := h.Stream(s.ID, "")
	h.Input(s.ID, "write a plan")
	st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
	h.Must(200, "GET", "/api/sessions/"+s.ID+"/changes", nil).JSON(t, &c)
	if len(c.Files) != 1 || c.Files[0].Path != "notes/plan.md" || c.Files[0].Status != "added" ||
		!strings.Contains(c.Diff, "+++ b/notes/plan.md") || !strings.Contains(c.Diff, "+step two") {
		t.Fatalf("changes after a write: %+v", c)
	}
}

// gitServer serves a test repository over HTTPS on loopback; the sessions
// of h (RepoPolicy allowing loopback, RepoCA trusting it) clone from it.
func gitServer(t *testing.T, token string) (*testutil.GitServer, testutil.GitRepo, string, []byte) {
	t.Helper()
	if _, err := os.Stat(testutil.GitHTTPBackend); err != nil {
		t.Fatal("these tests need git http-backend:", err)
	}
	repo := testutil.NewGitRepo(t)
	gs := &testutil.GitServer{Root: repo.Root, Token: token, Auth: make(chan string, 100)}
	cert, ca := testutil.TLSCert(t, "127.0.0.1")
	ts := httptest.NewUnstartedServer(gs)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return gs, repo, ts.URL + "/" + repo.Name, ca
}

type changes struct {
	Kind, Diff, Base, Head, Status, Note string
	Files                                []struct{ Path, Status string }
}

// A session starts from a repository cloned at a ref; its changes are git's,
// against where it began, untracked files included.
func TestRepoClone(t *testing.T) {
	_, repo, u, ca := gitServer(t, "")
	fake := llmtest.NewAnthropic(
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "bash", Input: `{"command":"echo more >> README.md && echo new > new.txt && git rm -q --cached run.sh >/dev/null; rm run.sh"}`}}},
		llmtest.Turn{Text: "changed"},
	).Attach(t)
	h := apitest.New(t, apitest.Options{RepoPolicy: egress.PublicAndLoopback(), RepoCA: ca})
	for _, c := range []struct {
		ref   string
		files map[string]string
		head  string
	}{
		{"", testutil.GitMainFiles, repo.Main},
		{"feature", testutil.GitFeatureFiles, repo.Feature},
		{"v1", testutil.GitFirstFiles, repo.First},
		{repo.First[:10], testutil.GitFirstFiles, repo.First},
	} {
		s := h.AnthropicSession(fake, map[string]any{"repo": map[string]string{"url": u, "ref": c.ref}})
		st := h.Stream(s.ID, "")
		h.WaitState(s.ID, "active")
		for name, content := range c.files {
			if b, err := os.ReadFile(filepath.Join(h.Workspace(s.ID), name)); err != nil || string(b) != content {
				t.Errorf("ref %q: %s is %q, %v", c.ref, name, b, err)
			}
		}
		var v map[string]any
		h.Must(200, "GET", "/api/sessions/"+s.ID+"/status", nil).JSON(t, &v)
		if r, _ := v["repo"].(map[string]any); r["url"] != u || (c.ref != "" && r["ref"] != c.ref) {
			t.Errorf("the session's repo: %v", v["repo"])
		}
		phases := ""
		for _, e := range st.Events() {
			if e.Type == event.Status {
				phases += e.Field("phase") + ","
			}
		}
		if !strings.Contains(phases, "clone") {
			t.Errorf("no clone phase in %s", phases)
		}
		st.Close()
		var ch changes
		h.Must(200, "GET", "/api/sessions/"+s.ID+"/changes", nil).JSON(t, &ch)
		if ch.Kind != "git" || ch.Base != c.head || ch.Head != c.head || len(ch.Files) != 0 || ch.Diff != "" {
			t.Errorf("ref %q: changes of a fresh clone: %+v", c.ref, ch)
		}
		if c.ref != "" {
			h.Must(200, "DELETE", "/api/sessions/"+s.ID, nil)
			continue
		}
		st = h.Stream(s.ID, "")
		h.Input(s.ID, "change things")
		st.WaitType(t, apitest.Wait, event.AgentIdle, 1)
		st.Close()
		h.Must(200, "GET", "/api/sessions/"+s.ID+"/changes", nil).JSON(t, &ch)
		got := map[string]string{}
		for _, f := range ch.Files {
			got[f.Path] = f.Status
		}
		if got["README.md"] != "modified" || got["new.txt"] != "untracked" || got["run.sh"] != "deleted" || len(got) != 3 {
			t.Errorf("changed files: %v", ch.Files)
		}
		for _, want := range []string{"+more", "+++ b/new.txt", "+new", "--- a/run.sh"} {
			if !strings.Contains(ch.Diff, want) {
				t.Errorf("the diff lacks %q:\n%s", want, ch.Diff)
			}
		}
		if !strings.Contains(ch.Status, "## main") {
			t.Errorf("git status: %q", ch.Status)
		}
		h.Must(200, "DELETE", "/api/sessions/"+s.ID, nil)
	}
}

// A private repository's token is used for the clone and kept nowhere: not
// in the workspace's git config, the session, its events or its transcript.
// A wrong one fails the session with an error that does not show it.
func TestRepoCloneToken(t *testing.T) {
	const token = "ghp_s3cr3tTOKENvalue1234"
	gs, _, u, ca := gitServer(t, token)
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{RepoPolicy: egress.PublicAndLoopback(), RepoCA: ca})
	s := h.AnthropicSession(fake, map[string]any{"repo": map[string]string{"url": u, "token": token}})
	h.WaitState(s.ID, "active")
	if _, err := os.Stat(filepath.Join(h.Workspace(s.ID), "README.md")); err != nil {
		t.Fatal("not cloned:", err)
	}
	want := testutil.BasicToken("x-access-token", token)
	sawToken := false
	for len(gs.Auth) > 0 {
		if a := <-gs.Auth; a == want {
			sawToken = true
		}
	}
	if !sawToken {
		t.Error("the server never saw the token")
	}
	var found []string
	filepath.WalkDir(h.Workspace(s.ID), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(token)) {
				found = append(found, p)
			}
		}
		return nil
	})
	if len(found) > 0 {
		t.Errorf("the token is in the workspace: %v", found)
	}
	for _, p := range []string{"/api/sessions/" + s.ID + "/status", "/api/sessions/" + s.ID + "/transcript?format=json", "/api/sessions"} {
		if r := h.Must(200, "GET", p, nil); bytes.Contains(r.Body, []byte(token)) {
			t.Errorf("%s shows the token", p)
		}
	}
	if raw, _ := os.ReadFile(filepath.Join(h.DataDir, "execlaw.db")); bytes.Contains(raw, []byte(token)) {
		t.Error("the database holds the token")
	}

	bad := h.AnthropicSession(fake, map[string]any{"repo": map[string]string{"url": u, "token": "wrong-token-value"}})
	v := h.WaitState(bad.ID, "error")
	if !strings.Contains(v.Error, "could not be cloned") || strings.Contains(v.Error, "wrong-token-value") {
		t.Errorf("a wrong token: %q", v.Error)
	}
	r := h.Must(200, "GET", "/api/sessions/"+bad.ID+"/transcript?format=json", nil)
	if !bytes.Contains(r.Body, []byte(`"error_event"`)) || bytes.Contains(r.Body, []byte("wrong-token-value")) {
		t.Errorf("the failed clone's events: %s", r.Body)
	}
}

// Repository requests are checked before anything starts.
func TestRepoRequestValidation(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{})
	for _, c := range []struct {
		repo  map[string]any
		extra map[string]any
		want  string
	}{
		{map[string]any{"url": "http://example.com/r.git"}, nil, "https"},
		{map[string]any{"url": "https://user:pw@example.com/r.git"}, nil, "credentials"},
		{map[string]any{"url": "https://example.com/r.git?x=1"}, nil, "query"},
		{map[string]any{"url": "https://example.com"}, nil, "repository"},
		{map[string]any{"url": "https://127.0.0.1/r.git"}, nil, "loopback"},
		{map[string]any{"url": "https://169.254.169.254/r.git"}, nil, "refused"},
		{map[string]any{"url": "https://10.1.2.3/r.git"}, nil, "private"},
		{map[string]any{"url": "https://localhost/r.git"}, nil, "this machine"},
		{map[string]any{"url": "ssh://example.com/r.git"}, nil, "https"},
		{map[string]any{"url": "https://example.com/r.git", "ref": "--upload-pack=evil"}, nil, "ref"},
		{map[string]any{"url": "https://example.com/r.git", "ref": "a..b"}, nil, "ref"},
		{map[string]any{"url": "https://example.com/r.git", "ref": "a b"}, nil, "ref"},
		{map[string]any{"url": "https://example.com/r.git", "token": "has space"}, nil, "token"},
		{map[string]any{"url": "https://example.com/r\n.git"}, nil, "url"},
		{map[string]any{"url": "https://example.com/r.git"}, map[string]any{"network": "none"}, "network"},
		{map[string]any{"url": ""}, nil, "required"},
		{map[string]any{"url": "https://example.com/r.git", "extra": 1}, nil, "unknown field"},
	} {
		req := map[string]any{"provider": "anthropic", "apiKey": "sk-ant-test", "baseUrl": fake.BaseURL(), "repo": c.repo}
		for k, v := range c.extra {
			req[k] = v
		}
		r := h.Do("POST", "/api/sessions", req, nil)
		if r.Status != 400 || !strings.Contains(strings.ToLower(string(r.Body)), c.want) {
			t.Errorf("repo %v: %d %s (want 400 mentioning %q)", c.repo, r.Status, r.Body, c.want)
		}
	}
	var list struct{ Sessions []any }
	h.Must(200, "GET", "/api/sessions", nil).JSON(t, &list)
	if len(list.Sessions) != 0 {
		t.Errorf("refused requests made %d sessions", len(list.Sessions))
	}
}

func tarGz(t *testing.T, files map[string]string, links map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, content := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
		tw.Write([]byte(content))
	}
	for name, target := range links {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target})
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// A session starts from an uploaded archive: created with archiveUpload,
// then PUT .../archive (which may come before its sandbox is up). It is
// unpacked once; an archive that tries to leave the workspace fails the
// session and writes nothing outside.
func TestArchiveUpload(t *testing.T) {
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{Files: api.FilesOptions{MaxUploadBytes: 1 << 20}})
	s := h.AnthropicSession(fake, map[string]any{"archiveUpload": true})
	arch := tarGz(t, map[string]string{"proj/README.md": "# from an archive\n", "proj/src/a.go": "package a\n"}, map[string]string{"proj/link": "src/a.go"})
	var res struct {
		Format          string
		Files, Symlinks int
		Stripped        string
	}
	h.Must(200, "PUT", "/api/sessions/"+s.ID+"/archive", arch).JSON(t, &res)
	if res.Format != "tar.gz" || res.Files != 2 || res.Symlinks != 1 || res.Stripped != "proj" {
		t.Errorf("unpacked %+v", res)
	}
	v := h.WaitState(s.ID, "active")
	if !v.ArchiveUpload {
		t.Error("the session does not say it started from an archive")
	}
	if b, _ := os.ReadFile(filepath.Join(h.Workspace(s.ID), "README.md")); string(b) != "# from an archive\n" {
		t.Errorf("README.md: %q", b)
	}
	if r := h.Do("PUT", "/api/sessions/"+s.ID+"/archive", arch, nil); r.Status != http.StatusConflict {
		t.Errorf("a second archive: %d %s", r.Status, r.Body)
	}
	// The archive is the baseline: nothing changed yet.
	var ch changes
	h.Must(200, "GET", "/api/sessions/"+s.ID+"/changes", nil).JSON(t, &ch)
	if ch.Kind != "files" || len(ch.Files) != 0 {
		t.Errorf("changes right after the archive: %+v", ch)
	}

	// A zip, uploaded before the sandbox is even up.
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	w, _ := zw.Create("hello.txt")
	w.Write([]byte("hello from a zip"))
	zw.Close()
	z := h.AnthropicSession(fake, map[string]any{"archiveUpload": true})
	h.Must(200, "PUT", "/api/sessions/"+z.ID+"/archive", zbuf.Bytes())
	h.WaitState(z.ID, "active")
	if b, _ := os.ReadFile(filepath.Join(h.Workspace(z.ID), "hello.txt")); string(b) != "hello from a zip" {
		t.Errorf("hello.txt: %q", b)
	}

	// Hostile: a symlink out, then a file through it.
	outside := t.TempDir()
	bad := h.AnthropicSession(fake, map[string]any{"archiveUpload": true})
	st := h.Stream(bad.ID, "")
	evil := tarGz(t, nil, map[string]string{"ln": outside})
	if r := h.Do("PUT", "/api/sessions/"+bad.ID+"/archive", evil, nil); r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "outside the workspace") {
		t.Errorf("an archive with a symlink out: %d %s", r.Status, r.Body)
	}
	v = h.WaitState(bad.ID, "error")
	if !strings.Contains(v.Error, "archive could not be unpacked") {
		t.Errorf("the session's error: %q", v.Error)
	}
	st.WaitType(t, apitest.Wait, event.Exit, 1)
	hasError := false
	for _, e := range st.Events() {
		hasError = hasError || e.Type == event.Error
	}
	if !hasError {
		t.Error("no error_event for the failed archive")
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("written outside: %v", entries)
	}
	// Too large, and to a session that waits for none.
	huge := h.AnthropicSession(fake, map[string]any{"archiveUpload": true})
	if r := h.Do("PUT", "/api/sessions/"+huge.ID+"/archive", bytes.Repeat([]byte{1}, 2<<20), nil); r.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("a huge archive: %d %s", r.Status, r.Body)
	}
	plain := h.AnthropicSession(fake, nil)
	if r := h.Do("PUT", "/api/sessions/"+plain.ID+"/archive", arch, nil); r.Status != http.StatusConflict {
		t.Errorf("an archive to a session that waits for none: %d %s", r.Status, r.Body)
	}
	var p map[string]any
	h.Must(200, "GET", "/api/platform", nil).JSON(t, &p)
	if p["maxUploadBytes"] != float64(1<<20) {
		t.Errorf("platform maxUploadBytes: %v", p["maxUploadBytes"])
	}
}
