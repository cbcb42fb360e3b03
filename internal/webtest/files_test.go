package webtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/egress"
	"github.com/execlaw/execlaw/internal/llm/llmtest"
	"github.com/execlaw/execlaw/internal/testutil"
)

// The Files panel: browse the workspace, open a file (highlighted), download
// it, upload by drag and drop and through the file picker; it follows what
// the agent writes; the Changes view shows the diff in the tool cards'
// colours.
func TestFilesPanel(t *testing.T) {
	fake := llmtest.NewAnthropic(
		llmtest.Turn{ToolCalls: []llmtest.ToolCall{{Name: "write_file", Input: `{"path":"notes/agent.md","content":"# Plan\n\nwritten by the agent\n"}`}}},
		llmtest.Turn{Text: "Wrote the plan."},
	).Attach(t)
	h := apitest.New(t, apitest.Options{})
	p := openPage(t, h, pageOptions{})
	id := p.createSession(fake, "files-test")
	pn := panel(id)
	ws := h.Workspace(id)
	os.MkdirAll(filepath.Join(ws, "src"), 0o755)
	os.WriteFile(filepath.Join(ws, "src", "main.go"), []byte("package main\n\nfunc main() {\n\tprintln(\"<b>not markup</b>\")\n}\n"), 0o644)
	os.WriteFile(filepath.Join(ws, "blob.bin"), []byte{0, 1, 2, 3, 0, 255}, 0o644)

	p.click(pn + " .open-files")
	p.waitFor("the panel", fmt.Sprintf(`document.querySelector('%s').classList.contains('ws-open') && !document.querySelector('%s .ws-panel').hidden`, pn, pn))
	row := func(name string) string {
		return fmt.Sprintf(`%s .ws-row[data-name=%q]`, pn, name)
	}
	p.waitFor("the listing", fmt.Sprintf(`!!document.querySelector(%s) && !!document.querySelector(%s)`, jsStr(row("src")), jsStr(row("blob.bin"))))

	// Into src/, and main.go opened, highlighted, its markup shown as text.
	p.click(row("src") + " .ws-entry")
	p.waitFor("src/", fmt.Sprintf(`!!document.querySelector(%s)`, jsStr(row("main.go"))))
	p.click(row("main.go") + " .ws-entry")
	p.waitFor("the highlighted file", fmt.Sprintf(`(() => { const c = document.querySelector('%s .ws-code code'); return c && !!c.querySelector('.hljs-keyword') && c.textContent.includes('<b>not markup</b>') })()`, pn))
	if n := eval[int](p, fmt.Sprintf(`document.querySelectorAll('%s .ws-code b').length`, pn)); n != 0 {
		t.Fatal("the file's content became markup")
	}
	if got := p.text(pn + " .ws-path"); got != "src/main.go" {
		t.Errorf("the viewer's path: %q", got)
	}
	// Download it.
	dl := p.downloads()
	p.click(pn + " .ws-file-head a[download]")
	if got := waitFile(t, dl, "main.go"); !strings.Contains(got, "func main()") {
		t.Errorf("downloaded %q", got)
	}
	p.click(pn + " .ws-back")
	p.waitFor("the listing again", fmt.Sprintf(`!document.querySelector('%s .ws-list').hidden`, pn))
	// A binary file is offered for download, not shown.
	p.click(pn + " .ws-crumb")
	p.waitFor("the root", fmt.Sprintf(`!!document.querySelector(%s)`, jsStr(row("blob.bin"))))
	p.click(row("blob.bin") + " .ws-entry")
	p.waitText(pn+" .ws-file-body", "binary file")
	p.click(pn + " .ws-back")

	// Drag and drop: a file dropped on the panel is uploaded into the folder shown.
	p.eval0(fmt.Sprintf(`(() => {
		const dt = new DataTransfer();
		dt.items.add(new File(['dropped <i>content</i>\n'], 'dropped.txt', { type: 'text/plain' }));
		const pane = document.querySelector('%s .ws-pane');
		pane.dispatchEvent(new DragEvent('dragenter', { dataTransfer: dt, bubbles: true, cancelable: true }));
		pane.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
	})()`, pn))
	p.waitFor("the dropped file", fmt.Sprintf(`!!document.querySelector(%s)`, jsStr(row("dropped.txt"))))
	if b, _ := os.ReadFile(filepath.Join(ws, "dropped.txt")); string(b) != "dropped <i>content</i>\n" {
		t.Errorf("dropped.txt in the workspace: %q", b)
	}
	// The file picker too.
	local := filepath.Join(t.TempDir(), "picked.txt")
	os.WriteFile(local, []byte("picked\n"), 0o644)
	p.do(chromedp.SetUploadFiles(chromedp.CSS(pn+` .ws-pane input[type=file]`), []string{local}))
	p.waitFor("the picked file", fmt.Sprintf(`!!document.querySelector(%s)`, jsStr(row("picked.txt"))))

	// The agent writes a file: the open panel shows it once the tool is done.
	p.send(id, "write a plan")
	p.idle(id)
	p.waitFor("the agent's folder", fmt.Sprintf(`!!document.querySelector(%s)`, jsStr(row("notes"))))

	// Changes: everything added since the session began, new text as a diff.
	p.click(fmt.Sprintf(`#ws-tab-changes-%s`, id))
	p.waitFor("the changes", fmt.Sprintf(`(() => { const d = document.querySelector('%s .ws-diff'); return d && !d.hidden && [...d.querySelectorAll('.diff-add')].some(l => l.textContent === '+written by the agent') })()`, pn))
	for _, want := range []string{"notes/agent.md", "dropped.txt", "src/main.go"} {
		p.waitText(pn+" .ws-changed .ws-name", want)
	}
	if got := p.text(pn + " .ws-summary"); !strings.Contains(got, "files changed") {
		t.Errorf("summary: %q", got)
	}
	// Closed, the panel gives the conversation its room back.
	p.click(pn + " .open-files")
	p.waitFor("the panel closed", fmt.Sprintf(`!document.querySelector('%s').classList.contains('ws-open') && document.querySelector('%s .ws-panel').hidden`, pn, pn))
}

// The new-session form starts a session from a repository (the token's risk
// is said as soon as one is typed) and from an archive.
func TestNewSessionFromRepoAndArchive(t *testing.T) {
	repo := testutil.NewGitRepo(t)
	gs := &testutil.GitServer{Root: repo.Root}
	cert, ca := testutil.TLSCert(t, "127.0.0.1")
	ts := httptest.NewUnstartedServer(gs)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	fake := llmtest.NewAnthropic().Attach(t)
	h := apitest.New(t, apitest.Options{RepoPolicy: egress.PublicAndLoopback(), RepoCA: ca})
	p := openPage(t, h, pageOptions{})

	p.click("#ns-workspace summary")
	p.setValue("#ns-repo-url", ts.URL+"/"+repo.Name)
	p.setValue("#ns-repo-ref", "feature")
	if !eval[bool](p, `document.querySelector('#ns-repo-token-warn').hidden`) {
		t.Error("the token warning shows without a token")
	}
	p.typeInto("#ns-repo-token", "x")
	p.waitFor("the token warning", `!document.querySelector('#ns-repo-token-warn').hidden && document.querySelector('#ns-repo-token-warn').textContent.includes('cannot be kept from the agent')`)
	p.setValue("#ns-repo-token", "")
	id := p.createSession(fake, "from-repo")
	pn := panel(id)
	p.waitText(pn+" .boot li", "cloned")
	if b, err := os.ReadFile(filepath.Join(h.Workspace(id), "feature.txt")); err != nil || string(b) != "a feature\n" {
		t.Fatalf("the clone: %q %v", b, err)
	}
	if v := eval[string](p, `document.querySelector('#ns-repo-token').value`); v != "" {
		t.Error("the token stayed in the form")
	}
	p.click(pn + " .open-files")
	p.waitFor("the cloned files", fmt.Sprintf(`!!document.querySelector('%s .ws-row[data-name="feature.txt"]')`, pn))
	p.click(fmt.Sprintf(`#ws-tab-changes-%s`, id))
	p.waitText(pn+" .ws-summary", "Nothing changed since "+repo.Feature[:10])

	// An archive.
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	body := "unpacked from an archive\n"
	tw.WriteHeader(&tar.Header{Name: "site/index.md", Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
	tw.Write([]byte(body))
	tw.Close()
	zw.Close()
	arch := filepath.Join(t.TempDir(), "site.tar.gz")
	os.WriteFile(arch, buf.Bytes(), 0o644)
	p.click("#new-tab")
	p.waitFor("the form", `!document.querySelector('#new-view').hidden`)
	p.setValue("#ns-repo-url", "")
	p.do(chromedp.SetUploadFiles(chromedp.CSS("#ns-archive"), []string{arch}))
	id2 := p.createSession(fake, "from-archive")
	p.waitText(panel(id2)+" .boot li", "unpacked tar.gz")
	if b, _ := os.ReadFile(filepath.Join(h.Workspace(id2), "index.md")); string(b) != body {
		t.Errorf("index.md: %q", b)
	}
}
