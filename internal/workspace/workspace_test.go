package workspace

import (
	"strings"
	"testing"
	"time"

	"github.com/execlaw/execlaw/internal/egress"
	"github.com/execlaw/execlaw/internal/guest"
)

func TestRel(t *testing.T) {
	for _, c := range []struct {
		root, in, want string
		ok             bool
	}{
		{"/workspace", "", "", true},
		{"/workspace", ".", "", true},
		{"/workspace", "a/b", "a/b", true},
		{"/workspace", "a//b/./c/", "a/b/c", true},
		{"/workspace", "a/../b", "b", true},
		{"/workspace", "/workspace", "", true},
		{"/workspace", "/workspace/x/y", "x/y", true},
		{"/workspace", "/workspace2/x", "", false},
		{"/workspace", "/etc/passwd", "", false},
		{"/workspace", "/workspace/../etc", "", false},
		{"/workspace", "..", "", false},
		{"/workspace", "a/../../b", "", false},
		{"/workspace", "a\x00b", "", false},
		{"/workspace", "a\nb", "", false},
		{"/workspace", "a\x1b[31m", "", false},
		{"/workspace", "a\u0085b", "", false},
		{"/workspace", "caf\xe9", "", false},
		{"/workspace", strings.Repeat("x", 256), "", false},
		{"/workspace", strings.Repeat("a/", 2100), "", false},
		{"/workspace", "café/naïve.txt", "café/naïve.txt", true},
		{"", "/anything", "", false},
		{"", "rel/path", "rel/path", true},
	} {
		got, err := Rel(c.root, c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("Rel(%q, %q) = %q, %v; want %q ok=%v", c.root, c.in, got, err, c.want, c.ok)
		}
	}
}

func TestEntries(t *testing.T) {
	now := time.Now()
	in := []guest.WSEntry{
		{Name: "ok.txt", Type: "file", Size: 3, MTime: now},
		{Name: "", Type: "file"}, {Name: "..", Type: "dir"}, {Name: "a/b", Type: "file"}, {Name: "nul\x00", Type: "file"},
		{Name: strings.Repeat("n", 300), Type: "file"},
		{Name: "bell\a\\x", Type: "file"},
		{Name: "bad\xff", Type: "weird", Size: -5},
		{Name: "evil\u202etxt.exe", Type: "file"},
	}
	out, dropped := Entries(in)
	if dropped != 5 || len(out) != 4 {
		t.Fatalf("kept %+v, dropped %d", out, dropped)
	}
	if out[0].Name != "ok.txt" || out[0].Escaped {
		t.Errorf("plain name: %+v", out[0])
	}
	if out[1].Name != `bell\x07\\x` || !out[1].Escaped {
		t.Errorf("control character: %+v", out[1])
	}
	if out[2].Name != `bad\xff` || !out[2].Escaped || out[2].Type != guest.WSOther || out[2].Size != 0 {
		t.Errorf("invalid UTF-8: %+v", out[2])
	}
	if out[3].Name != `evil\u{202e}txt.exe` || !out[3].Escaped {
		t.Errorf("a bidi override: %+v", out[3])
	}
}

func TestDisposition(t *testing.T) {
	for in, want := range map[string]string{
		"main.go":            `attachment; filename="main.go"`,
		"a\"b;c.txt":         `attachment; filename="a_b_c.txt"; filename*=UTF-8''a%22b%3Bc.txt`,
		"naïve.txt":          `attachment; filename="na_ve.txt"; filename*=UTF-8''na%C3%AFve.txt`,
		"..":                 `attachment; filename="download"`,
		".hidden":            `attachment; filename="hidden"; filename*=UTF-8''.hidden`,
		"x\r\nSet-Cookie: a": `attachment; filename="x__Set-Cookie: a"`,
	} {
		if got := Disposition(in); got != want {
			t.Errorf("Disposition(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestRepoCheck(t *testing.T) {
	good := []Repo{
		{URL: "https://github.com/owner/project.git"},
		{URL: " https://gitlab.example.com:8443/group/sub/project ", Ref: "release/1.2"},
		{URL: "https://8.8.8.8/r.git", Ref: "v1.0.0", Token: "ghp_abc:def"},
		{URL: "https://h.example/r", Ref: "0123456789abcdef0123456789abcdef01234567"},
	}
	for _, r := range good {
		if _, err := r.Check(nil); err != nil {
			t.Errorf("%+v refused: %v", r, err)
		}
	}
	bad := []Repo{
		{URL: "http://github.com/o/p"}, {URL: "git://github.com/o/p"}, {URL: "file:///etc"}, {URL: "ssh://git@github.com/o/p"},
		{URL: "https://u:p@github.com/o/p"}, {URL: "https://github.com/o/p?x"}, {URL: "https://github.com/o/p#f"},
		{URL: "https://github.com"}, {URL: "https:///o/p"}, {URL: "https://127.0.0.1/o/p"}, {URL: "https://[::1]/o/p"},
		{URL: "https://169.254.169.254/o/p"}, {URL: "https://10.0.0.1/o/p"}, {URL: "https://localhost/o/p"},
		{URL: "https://x.localhost/o/p"}, {URL: "https://github.com/o/p\x00"}, {URL: "https://github.com/o /p"},
		{URL: "https://github.com/o/p", Ref: "-x"}, {URL: "https://github.com/o/p", Ref: "a..b"}, {URL: "https://github.com/o/p", Ref: "a~1"},
		{URL: "https://github.com/o/p", Ref: "a@{1}"}, {URL: "https://github.com/o/p", Ref: "x.lock"}, {URL: "https://github.com/o/p", Ref: "a/"},
		{URL: "https://github.com/o/p", Token: "two words"}, {URL: "https://github.com/o/p", Token: "tab\there"},
		{URL: ""},
	}
	for _, r := range bad {
		if _, err := r.Check(nil); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	if _, err := (Repo{URL: "https://127.0.0.1:3000/o/p"}).Check(egress.PublicAndLoopback()); err != nil {
		t.Errorf("loopback with a policy that allows it: %v", err)
	}
	if r := (Repo{URL: "https://h/o/p", Token: "secret"}).Safe(); r.Token != "" {
		t.Error("Safe kept the token")
	}
}

func TestDiffHelpers(t *testing.T) {
	if got := newFileDiff("a.txt", "one\ntwo"); got != "diff --git a/a.txt b/a.txt\nnew file\n--- /dev/null\n+++ b/a.txt\n@@ -0,0 +1,2 @@\n+one\n+two\n\\ No newline at end of file\n" {
		t.Errorf("newFileDiff: %q", got)
	}
	if got := newFileDiff("e", ""); strings.Contains(got, "@@") {
		t.Errorf("an empty file: %q", got)
	}
	if got := splitZ("M\x00a\x00A\x00b c\x00"); strings.Join(got, "|") != "M|a|A|b c" {
		t.Errorf("splitZ: %q", got)
	}
	long := strings.Repeat("+line\n", MaxDiffBytes/6+10)
	if cut := cutDiff(long); len(cut) > MaxDiffBytes || !strings.HasSuffix(cut, "\n") {
		t.Errorf("cutDiff: %d bytes", len(cut))
	}
	if got := lastLines("a\rRemote: 45% (1/2)\rb\n\nc\nd", 2); got != "c; d" {
		t.Errorf("lastLines: %q", got)
	}
	if got := scrub("fatal: token s3cret in s3cret", []string{"s3cret"}); strings.Contains(got, "s3cret") {
		t.Errorf("scrub: %q", got)
	}
	if got := cleanLine("\x1b[31mred\x1b[0m\u202e"); got != "[31mred[0m" {
		t.Errorf("cleanLine: %q", got)
	}
}
