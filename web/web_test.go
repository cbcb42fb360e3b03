package web

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"path"
	"regexp"
	"strings"
	"testing"
)

// The vendored libraries are exactly what VERSIONS records (written by
// scripts/vendor-web.sh from npm at pinned versions), and nothing else is
// vendored.
func TestVendoredFilesMatchVERSIONS(t *testing.T) {
	raw, err := Assets.ReadFile("static/vendor/VERSIONS")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 4 {
			t.Fatalf("VERSIONS line %q: want package version file sha256", line)
		}
		name, want := f[2], f[3]
		b, err := Assets.ReadFile("static/vendor/" + name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("%s: sha256 %s, VERSIONS says %s; run scripts/vendor-web.sh", name, got, want)
		}
		listed[name] = true
	}
	if len(listed) == 0 {
		t.Fatal("VERSIONS lists nothing")
	}
	fs.WalkDir(Assets, "static/vendor", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel := strings.TrimPrefix(p, "static/vendor/")
		if base := path.Base(rel); base != "LICENSE" && base != "VERSIONS" && !listed[rel] {
			t.Errorf("%s is vendored but not in VERSIONS", rel)
		}
		return nil
	})
}

// The pages work under the server's CSP (script-src 'self', style-src
// 'self'): no inline script, style element, style attribute or handler.
func TestPagesHaveNoInlineCode(t *testing.T) {
	scriptTag := regexp.MustCompile(`(?is)<script\b[^>]*>`)
	for _, name := range []string{"index.html", "login.html"} {
		b, err := Assets.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		page := string(b)
		for _, bad := range []*regexp.Regexp{
			regexp.MustCompile(`(?i)<style\b`),
			regexp.MustCompile(`(?i)\sstyle\s*=`),
			regexp.MustCompile(`(?i)\son[a-z]+\s*=`),
			regexp.MustCompile(`(?i)javascript:`),
			regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//`),
		} {
			if m := bad.FindString(page); m != "" {
				t.Errorf("%s contains %q", name, m)
			}
		}
		for _, tag := range scriptTag.FindAllString(page, -1) {
			if !strings.Contains(tag, ` src="/static/`) {
				t.Errorf("%s: inline or foreign script %s", name, tag)
			}
		}
	}
}

// The UI's own modules stay small and never build HTML from strings.
func TestScriptsAreSmallAndBuildNoHTML(t *testing.T) {
	risky := regexp.MustCompile(`\.innerHTML\b|\.outerHTML\b|insertAdjacentHTML|document\.write|\beval\(|new Function\b|setAttribute\(\s*['"]style|import .*https?:`)
	files, err := fs.Glob(Assets, "static/js/*.js")
	if err != nil || len(files) < 10 {
		t.Fatalf("modules: %v %v", files, err)
	}
	for _, f := range files {
		b, err := Assets.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src := string(b)
		if n := strings.Count(src, "\n"); n >= 600 {
			t.Errorf("%s has %d lines; keep modules under 600", f, n)
		}
		for i, line := range strings.Split(src, "\n") {
			if m := risky.FindString(line); m != "" {
				t.Errorf("%s:%d uses %q", f, i+1, m)
			}
		}
	}
}
