package vmtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/execlaw/execlaw/internal/apitest"
	"github.com/execlaw/execlaw/internal/egress"
	"github.com/execlaw/execlaw/internal/network"
	"github.com/execlaw/execlaw/internal/testutil"
)

func contentURL(id, p string) string {
	return "/api/sessions/" + id + "/files/content?path=" + url.QueryEscape(p)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// The workspace in the user's hands, with a real VM: a file uploaded is the
// one the agent's cat sees; a file the agent writes downloads byte for
// byte; the workspace tarball unpacks to the tree the guest has; a symlink
// the agent points out of the workspace leads nowhere.
func TestWorkspaceFilesInVM(t *testing.T) {
	e := newEnv(t)
	id := e.session(t, "none")

	blob := make([]byte, 200<<10)
	for i := range blob {
		blob[i] = byte(i*31 + i>>8)
	}
	e.h.Must(200, "PUT", contentURL(id, "up/hello.txt"), "hello from the host\n")
	e.h.Must(200, "PUT", contentURL(id, "up/blob.bin"), blob)
	out := e.bash(t, id, "cat /workspace/up/hello.txt; sha256sum /workspace/up/blob.bin")
	if !strings.Contains(out, "hello from the host\n") || !strings.Contains(out, sha(blob)) {
		t.Fatalf("the agent sees %q; the upload's sha256 is %s", out, sha(blob))
	}

	out = e.bash(t, id, "mkdir -p made/deep && head -c 300000 /dev/urandom > made/deep/random.bin && "+
		"printf '#!/bin/sh\\necho hi\\n' > made/run.sh && chmod 755 made/run.sh && ln -s deep/random.bin made/link && "+
		"ln -s /etc/shadow made/escape && sha256sum made/deep/random.bin")
	want := strings.Fields(out)[0]
	r := e.h.Must(200, "GET", contentURL(id, "made/deep/random.bin"), nil)
	if len(r.Body) != 300000 || sha(r.Body) != want {
		t.Fatalf("downloaded %d bytes with sha256 %s, the guest has %s", len(r.Body), sha(r.Body), want)
	}
	if r := e.h.Do("GET", contentURL(id, "made/escape"), nil, nil); r.Status != 400 {
		t.Errorf("a symlink to /etc/shadow: %d %s", r.Status, r.Body)
	}
	if r := e.h.Do("GET", contentURL(id, "/etc/shadow"), nil, nil); r.Status != 400 {
		t.Errorf("/etc/shadow: %d %s", r.Status, r.Body)
	}
	if r := e.h.Do("PUT", contentURL(id, "made/escape"), "replaced", nil); r.Status != 200 {
		t.Errorf("replacing the symlink itself: %d %s", r.Status, r.Body)
	}
	if out := e.bash(t, id, "grep -c replaced /etc/shadow; cat made/escape; echo"); out != "0\nreplaced\n" {
		t.Errorf("after replacing the link (want /etc/shadow untouched): %q", out)
	}

	// The tarball holds what the guest holds, byte for byte.
	guestTree := e.bash(t, id, `cd /workspace && find . -mindepth 1 | sort | while read -r p; do `+
		`if [ -L "$p" ]; then echo "$p -> $(readlink "$p")"; elif [ -d "$p" ]; then echo "$p/"; `+
		`else echo "$p $(sha256sum < "$p" | cut -c1-64) $(stat -c %a "$p")"; fi; done`)
	r = e.h.Must(200, "GET", "/api/sessions/"+id+"/workspace.tar.gz", nil)
	guestLines := strings.Split(strings.TrimSpace(guestTree), "\n")
	sort.Strings(guestLines)
	if got := treeOfTar(t, r.Body); got != strings.Join(guestLines, "\n") {
		t.Errorf("the tarball holds\n%s\nthe guest\n%s", got, guestTree)
	}

	var c struct {
		Kind  string
		Files []struct{ Path, Status string }
		Diff  string
	}
	e.h.Must(200, "GET", "/api/sessions/"+id+"/changes", nil).JSON(t, &c)
	statuses := map[string]string{}
	for _, f := range c.Files {
		statuses[f.Path] = f.Status
	}
	if c.Kind != "files" || statuses["up/hello.txt"] != "added" || statuses["made/deep/random.bin"] != "added" ||
		!strings.Contains(c.Diff, "+hello from the host") {
		t.Errorf("changes: %+v", c)
	}
}

// treeOfTar lists a workspace tarball as the find loop above lists the guest.
func treeOfTar(t *testing.T, b []byte) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var lines []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := "./" + strings.TrimSuffix(strings.TrimPrefix(h.Name, "workspace/"), "/")
		if name == "./" {
			continue
		}
		switch h.Typeflag {
		case tar.TypeDir:
			lines = append(lines, name+"/")
		case tar.TypeSymlink:
			lines = append(lines, name+" -> "+h.Linkname)
		default:
			content, _ := io.ReadAll(tr)
			lines = append(lines, fmt.Sprintf("%s %s %o", name, sha(content), h.Mode&0o777))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// A session starts from a private repository served over HTTPS by git
// http-backend on the testbed's "internet": the guest clones it at the
// branch asked for, with the token, before the first turn; the token is
// nowhere in the VM afterwards; the changes are git's.
func TestRepoCloneInVM(t *testing.T) {
	const token = "ghp_vmtestTOKEN0123456789"
	tb, pfx := newTestbed(t)
	repo := testutil.NewGitRepo(t)
	gs := &testutil.GitServer{Root: repo.Root, Token: token}
	cert, ca := testutil.TLSCert(t, tb.InternetAddr.String())
	var ln net.Listener
	if err := tb.InternetDo(func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(tb.InternetAddr, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: gs, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	u := fmt.Sprintf("https://%s/%s", ln.Addr().String(), repo.Name)

	e := newRepoEnv(t, tb, pfx, ca)
	v := e.h.AnthropicSession(e.fake, map[string]any{"network": "full", "memoryMiB": 512, "vcpus": 1,
		"repo": map[string]string{"url": u, "ref": "feature", "token": token}})
	if err := e.waitActive(v.ID); err != nil {
		t.Fatal(err)
	}
	if gs.Requests.Load() == 0 {
		t.Fatal("the git server saw no request")
	}
	out := e.bash(t, v.ID, "cat /workspace/feature.txt; git -C /workspace rev-parse HEAD; git -C /workspace branch --show-current; "+
		"grep -rl "+token+" /workspace /etc /root /tmp /var/tmp 2>/dev/null | head -3; grep -l "+token+" /proc/[0-9]*/environ 2>/dev/null | head -3; echo end")
	if !strings.HasPrefix(out, "a feature\n"+repo.Feature+"\nfeature\nend") {
		t.Errorf("in the VM after the clone: %q (want feature.txt, %s, branch feature, no token anywhere)", out, repo.Feature)
	}
	e.bash(t, v.ID, "echo changed >> /workspace/README.md && echo new > /workspace/added.txt")
	var c struct {
		Kind, Diff, Base string
		Files            []struct{ Path, Status string }
	}
	e.h.Must(200, "GET", "/api/sessions/"+v.ID+"/changes", nil).JSON(t, &c)
	if c.Kind != "git" || c.Base != repo.Feature || len(c.Files) != 2 || !strings.Contains(c.Diff, "+changed") || !strings.Contains(c.Diff, "+new") {
		t.Errorf("changes: %+v", c)
	}
}

// newRepoEnv is newEnv with the git image, and a server whose sessions may
// clone from the testbed's internet (a documentation range, refused by
// default) trusting ca.
func newRepoEnv(t *testing.T, tb *network.Testbed, pfx string, ca []byte) *env {
	t.Helper()
	policy, err := egress.PublicOnly().With(tb.InternetAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	cfg := network.Config{NetNSPrefix: pfx + "s-", DNS: []netip.Addr{netip.MustParseAddr("192.0.2.53")}}
	return newServerWith(t, tb, pfx, cfg, testutil.VMImageWithGit(t), 2, nil, func(o *apitest.Options) {
		o.RepoPolicy, o.RepoCA = policy, ca
	})
}
