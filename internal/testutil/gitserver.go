package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// GitRepo is a bare repository made for a test: "main" with two commits,
// a branch "feature" with one more, a tag "v1" on the first commit.
type GitRepo struct {
	Root    string // the directory holding Name (GIT_PROJECT_ROOT)
	Name    string // "project.git"
	First   string // the first commit (tag v1)
	Main    string // main's commit
	Feature string // feature's commit
}

// Files of each commit of NewGitRepo.
var (
	GitFirstFiles   = map[string]string{"README.md": "# project\n", "src/main.go": "package main\n"}
	GitMainFiles    = map[string]string{"README.md": "# project\n\nSecond version.\n", "src/main.go": "package main\n", "run.sh": "#!/bin/sh\necho run\n"}
	GitFeatureFiles = map[string]string{"README.md": "# project\n\nSecond version.\n", "src/main.go": "package main\n", "run.sh": "#!/bin/sh\necho run\n", "feature.txt": "a feature\n"}
)

// NewGitRepo makes the repository with the host's git.
func NewGitRepo(t testing.TB) GitRepo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("these tests need git on the host")
	}
	root := t.TempDir()
	work := t.TempDir()
	env := append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t",
		"GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+work)
	git := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	write := func(files map[string]string) {
		for name, content := range files {
			p := filepath.Join(work, name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			mode := os.FileMode(0o644)
			if strings.HasSuffix(name, ".sh") {
				mode = 0o755
			}
			if err := os.WriteFile(p, []byte(content), mode); err != nil {
				t.Fatal(err)
			}
		}
	}
	r := GitRepo{Root: root, Name: "project.git"}
	git(root, "init", "--quiet", "--bare", "-b", "main", r.Name)
	git(work, "init", "--quiet", "-b", "main")
	write(GitFirstFiles)
	git(work, "add", "-A")
	git(work, "commit", "--quiet", "-m", "first")
	r.First = git(work, "rev-parse", "HEAD")
	git(work, "tag", "v1")
	write(GitMainFiles)
	git(work, "add", "-A")
	git(work, "commit", "--quiet", "-m", "second")
	r.Main = git(work, "rev-parse", "HEAD")
	git(work, "checkout", "--quiet", "-b", "feature")
	write(GitFeatureFiles)
	git(work, "add", "-A")
	git(work, "commit", "--quiet", "-m", "feature")
	r.Feature = git(work, "rev-parse", "HEAD")
	git(work, "push", "--quiet", filepath.Join(root, r.Name), "main", "feature", "v1")
	return r
}

// GitServer serves repositories under root with git http-backend (smart
// HTTP) through net/http/cgi. With a token, every request must carry it as
// HTTP Basic (any user name, or "x-access-token"); Requests counts them
// and Unauthorized counts those refused.
type GitServer struct {
	Root         string
	Token        string
	Requests     atomic.Int64
	Unauthorized atomic.Int64
	// Headers records every request's Authorization header.
	Auth chan string
}

// GitHTTPBackend is where Debian keeps git http-backend.
const GitHTTPBackend = "/usr/lib/git-core/git-http-backend"

func (g *GitServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.Requests.Add(1)
	if g.Auth != nil {
		select {
		case g.Auth <- r.Header.Get("Authorization"):
		default:
		}
	}
	if g.Token != "" {
		_, pw, ok := r.BasicAuth()
		if !ok || pw != g.Token {
			g.Unauthorized.Add(1)
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
	}
	h := &cgi.Handler{Path: GitHTTPBackend, Env: []string{"GIT_PROJECT_ROOT=" + g.Root, "GIT_HTTP_EXPORT_ALL=1"}}
	h.ServeHTTP(w, r)
}

// BasicToken is how a token appears in an Authorization header.
func BasicToken(user, token string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+token))
}

// TLSCert makes a CA and a certificate it signed for hosts (names or IP
// addresses): the server's certificate, and the CA as PEM for a client to
// trust.
func TLSCert(t testing.TB, hosts ...string) (tls.Certificate, []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "execlaw test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: hosts[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			leaf.IPAddresses = append(leaf.IPAddresses, ip)
		} else {
			leaf.DNSNames = append(leaf.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}
