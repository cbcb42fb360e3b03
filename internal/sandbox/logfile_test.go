package sandbox

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCappedWriter(t *testing.T) {
	var buf bytes.Buffer
	w := NewCappedWriter(&buf, 10)
	for _, s := range []string{"12345", "67890", "abc", "def"} {
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if buf.String() != "1234567890\n[execlaw: log reached 10 bytes; further output dropped]\n" {
		t.Errorf("capped output = %q", buf.String())
	}

	// A write that crosses the cap keeps what fits.
	buf.Reset()
	w = NewCappedWriter(&buf, 4)
	if n, err := w.Write([]byte("abcdef")); n != 6 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if !strings.HasPrefix(buf.String(), "abcd\n[execlaw: log reached 4 bytes") || strings.Contains(buf.String(), "ef") {
		t.Errorf("capped output = %q", buf.String())
	}
}

func TestLogTail(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var lines []string
	for i := range 30 {
		lines = append(lines, strings.Repeat(string(rune('a'+i%26)), 9))
	}
	long := write("long", strings.Join(lines, "\n")+"\n\n")
	tests := []struct {
		name     string
		path     string
		maxBytes int64
		maxLines int
		want     string
	}{
		{"missing file", filepath.Join(dir, "nope"), 100, 0, ""},
		{"empty", write("empty", ""), 100, 0, ""},
		{"only space", write("space", " \n\t\n"), 100, 0, ""},
		{"whole file", write("short", "\n  one\ntwo  \n"), 100, 0, "one\ntwo"},
		{"bytes bound", long, 25, 0, "bbb\nccccccccc\nddddddddd"},
		{"lines bound", long, 1 << 10, 3, "bbbbbbbbb\nccccccccc\nddddddddd"},
		{"bytes bind first", long, 15, 3, "ccc\nddddddddd"},
		{"no line bound", long, 1 << 10, 0, strings.Join(lines, "\n")},
		{"control characters", write("ctl", "\x1b[1mbold\x1b[0m\r\n\ttab\x07\x7f\n"), 100, 0, "[1mbold[0m\n\ttab"},
		{"invalid UTF-8", write("utf8", "ok \xff\xfe end"), 100, 0, "ok \uFFFD end"},
		{"cut rune", write("rune", "é!"), 2, 0, "\uFFFD!"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := LogTail(tc.path, tc.maxBytes, tc.maxLines); got != tc.want {
				t.Errorf("LogTail = %q, want %q", got, tc.want)
			}
		})
	}
}
