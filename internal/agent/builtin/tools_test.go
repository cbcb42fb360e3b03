package builtin

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"charm.land/fantasy"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/testutil"
)

// toolOut is what one tool call returned.
type toolOut struct {
	text    string
	isError bool
	meta    toolMeta
}

// callTool runs one built-in tool the way fantasy's agent does.
func callTool(t *testing.T, ws agent.Workspace, name string, input any) toolOut {
	t.Helper()
	return callToolCtx(t, testCtx(t), ws, name, input)
}

func callToolCtx(t *testing.T, ctx context.Context, ws agent.Workspace, name string, input any) toolOut {
	t.Helper()
	in, ok := input.(string)
	if !ok {
		b, err := json.Marshal(input)
		if err != nil {
			t.Fatal(err)
		}
		in = string(b)
	}
	for _, tool := range newTools(ws) {
		if tool.Info().Name != name {
			continue
		}
		resp, err := tool.Run(ctx, fantasy.ToolCall{ID: "call_1", Name: name, Input: in})
		if err != nil {
			t.Fatalf("%s returned a Go error (that would end the turn): %v", name, err)
		}
		out := toolOut{text: resp.Content, isError: resp.IsError}
		if resp.Metadata != "" {
			mustUnmarshal(t, []byte(resp.Metadata), &out.meta)
		}
		if !utf8.ValidString(out.text) {
			t.Errorf("%s output is not valid UTF-8: %q", name, out.text)
		}
		return out
	}
	t.Fatalf("no tool %q", name)
	return toolOut{}
}

func wantOK(t *testing.T, o toolOut, want string) {
	t.Helper()
	if o.isError || o.text != want {
		t.Errorf("got (isError %v) %q\nwant %q", o.isError, o.text, want)
	}
}

func wantErr(t *testing.T, o toolOut, substr string) {
	t.Helper()
	if !o.isError || !strings.Contains(o.text, substr) {
		t.Errorf("got (isError %v) %q, want an error containing %q", o.isError, o.text, substr)
	}
}

func writeHost(t *testing.T, ws agent.Workspace, rel, content string) {
	t.Helper()
	p := filepath.Join(ws.Workspace(), rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readHost(t *testing.T, ws agent.Workspace, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ws.Workspace(), rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var omittedNote = regexp.MustCompile(`\n\[\.\.\. (\d+) bytes omitted[^\]]*\]\n`)

func TestBashTool(t *testing.T) {
	sb := startSandbox(t)

	t.Run("output and exit code", func(t *testing.T) {
		o := callTool(t, sb, "bash", bashInput{Command: "echo out; echo err >&2"})
		// stdout and stderr are separate pipes: their order is not fixed.
		if o.isError || (o.text != "out\nerr\n" && o.text != "err\nout\n") {
			t.Errorf("got (isError %v) %q", o.isError, o.text)
		}
		if o.meta.ExitCode == nil || *o.meta.ExitCode != 0 || o.meta.Truncated {
			t.Errorf("meta %+v", o.meta)
		}
		wantOK(t, callTool(t, sb, "bash", bashInput{Command: "pwd"}), sb.Workspace()+"\n")
	})
	t.Run("non-zero exit", func(t *testing.T) {
		o := callTool(t, sb, "bash", bashInput{Command: "echo partial; exit 3"})
		if !o.isError || o.text != "partial\n" || o.meta.ExitCode == nil || *o.meta.ExitCode != 3 {
			t.Errorf("got %+v exit %v, want error 'partial' with exit 3", o, o.meta.ExitCode)
		}
	})
	t.Run("no output", func(t *testing.T) {
		wantOK(t, callTool(t, sb, "bash", bashInput{Command: "true"}), "(no output)")
	})
	t.Run("empty command", func(t *testing.T) {
		wantErr(t, callTool(t, sb, "bash", bashInput{Command: "  "}), "command is empty")
	})
	t.Run("malformed input", func(t *testing.T) {
		wantErr(t, callTool(t, sb, "bash", `{"command": 5}`), "invalid parameters")
	})
	t.Run("timeout kills the process group", func(t *testing.T) {
		o := callTool(t, sb, "bash", bashInput{Command: "sleep 300 & echo $! > bg.pid; echo started; wait", TimeoutSec: 1})
		wantErr(t, o, "started\n\n[command timed out after 1 s and was killed]")
		if o.meta.DurationMs < 900 || o.meta.DurationMs > 30_000 {
			t.Errorf("took %d ms for a 1 s timeout", o.meta.DurationMs)
		}
		// The background sleep went with it.
		testutil.Poll(t, "the background sleep to die", 20*time.Second, func() bool {
			o := callTool(t, sb, "bash", bashInput{Command: "kill -0 $(cat bg.pid) 2>/dev/null && echo alive || echo gone"})
			return o.text == "gone\n"
		})
	})
	t.Run("huge output is cut and bounded", func(t *testing.T) {
		const total = 5_000_000
		o := callTool(t, sb, "bash", bashInput{Command: "yes | head -c 5000000"})
		if o.isError || !o.meta.Truncated {
			t.Errorf("isError %v truncated %v", o.isError, o.meta.Truncated)
		}
		if len(o.text) > MaxToolOutput+256 {
			t.Errorf("output is %d bytes, limit %d", len(o.text), MaxToolOutput)
		}
		if !strings.HasPrefix(o.text, "y\ny\n") || !strings.HasSuffix(o.text, "y\ny\n") {
			t.Errorf("start %q end %q", o.text[:10], o.text[len(o.text)-10:])
		}
		// What is shown plus what the notes say was left out is the whole output.
		notes := omittedNote.FindAllStringSubmatch(o.text, -1)
		if len(notes) == 0 {
			t.Fatalf("no omission note in %q...", o.text[:100])
		}
		shown, omitted := len(omittedNote.ReplaceAllString(o.text, "")), 0
		for _, n := range notes {
			v, _ := strconv.Atoi(n[1])
			omitted += v
		}
		if shown+omitted != total {
			t.Errorf("shown %d + omitted %d = %d bytes, the command printed %d; notes %q",
				shown, omitted, shown+omitted, total, notes)
		}
	})
	t.Run("binary output becomes valid UTF-8", func(t *testing.T) {
		o := callTool(t, sb, "bash", bashInput{Command: `printf 'a\xff\xfe\000b\xe2\x82'`})
		wantOK(t, o, "a\uFFFD\x00b\uFFFD")
	})
	t.Run("cancelled by the user", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(testCtx(t))
		cancel(agent.ErrCancelled)
		for _, tc := range []struct{ tool, input, want string }{
			{"bash", `{"command":"touch never"}`, "running the command failed: cancelled"},
			{"read_file", `{"path":"x"}`, "read x: cancelled"},
			{"write_file", `{"path":"never","content":""}`, "write never: cancelled"},
			{"list_files", `{}`, "list " + sb.Workspace() + ": cancelled"},
		} {
			o := callToolCtx(t, ctx, sb, tc.tool, tc.input)
			if !o.isError || o.text != tc.want {
				t.Errorf("%s: got %q, want %q", tc.tool, o.text, tc.want)
			}
		}
		if _, err := os.Stat(filepath.Join(sb.Workspace(), "never")); err == nil {
			t.Error("a cancelled call ran")
		}
	})
	t.Run("timeout is clamped", func(t *testing.T) {
		// A negative timeout means the default, not an immediate kill.
		wantOK(t, callTool(t, sb, "bash", bashInput{Command: "echo ok", TimeoutSec: -5}), "ok\n")
	})
}

func TestReadFileTool(t *testing.T) {
	sb := startSandbox(t)
	var ten strings.Builder
	for i := 1; i <= 10; i++ {
		ten.WriteString("line" + strconv.Itoa(i) + "\n")
	}
	writeHost(t, sb, "ten.txt", ten.String())

	t.Run("range", func(t *testing.T) {
		wantOK(t, callTool(t, sb, "read_file", readInput{Path: "ten.txt", Offset: 3, Limit: 2}),
			"     3\tline3\n     4\tline4\n[showing lines 3-4; the file continues: read again with offset 5]\n")
	})
	t.Run("whole file", func(t *testing.T) {
		o := callTool(t, sb, "read_file", readInput{Path: "ten.txt"})
		if o.isError || !strings.HasPrefix(o.text, "     1\tline1\n") || !strings.HasSuffix(o.text, "    10\tline10\n") ||
			strings.Count(o.text, "\n") != 10 {
			t.Errorf("got %q", o.text)
		}
	})
	t.Run("last line, no note", func(t *testing.T) {
		wantOK(t, callTool(t, sb, "read_file", readInput{Path: "ten.txt", Offset: 10, Limit: 5}), "    10\tline10\n")
	})
	t.Run("limit reaching the end exactly", func(t *testing.T) {
		o := callTool(t, sb, "read_file", readInput{Path: "ten.txt", Offset: 9, Limit: 2})
		wantOK(t, o, "     9\tline9\n    10\tline10\n")
	})
	t.Run("past the end", func(t *testing.T) {
		wantErr(t, callTool(t, sb, "read_file", readInput{Path: "ten.txt", Offset: 11}), "ten.txt has 10 lines; offset 11 is past the end")
	})
	t.Run("absolute path", func(t *testing.T) {
		o := callTool(t, sb, "read_file", readInput{Path: filepath.Join(sb.Workspace(), "ten.txt"), Limit: 1})
		if o.isError || !strings.HasPrefix(o.text, "     1\tline1\n[showing lines 1-1;") {
			t.Errorf("got %q", o.text)
		}
	})
	t.Run("missing", func(t *testing.T) {
		o := callTool(t, sb, "read_file", readInput{Path: "nope/missing.txt"})
		wantErr(t, o, "read nope/missing.txt:")
		wantErr(t, o, "no such file")
	})
	t.Run("directory", func(t *testing.T) {
		writeHost(t, sb, "adir/x", "")
		wantErr(t, callTool(t, sb, "read_file", readInput{Path: "adir"}), "is a directory")
	})
	t.Run("empty path", func(t *testing.T) {
		wantErr(t, callTool(t, sb, "read_file", readInput{}), "path is empty")
	})
	t.Run("empty file", func(t *testing.T) {
		writeHost(t, sb, "empty.txt", "")
		wantOK(t, callTool(t, sb, "read_file", readInput{Path: "empty.txt"}), "(empty.txt is empty)")
	})
	t.Run("no trailing newline and CRLF", func(t *testing.T) {
		writeHost(t, sb, "crlf.txt", "a\r\nb")
		wantOK(t, callTool(t, sb, "read_file", readInput{Path: "crlf.txt"}), "     1\ta\r\n     2\tb\n")
	})
	t.Run("long line is cut on a rune boundary", func(t *testing.T) {
		writeHost(t, sb, "long.txt", strings.Repeat("€", 1000)+"\nshort\n") // 3000 bytes
		o := callTool(t, sb, "read_file", readInput{Path: "long.txt"})
		first, _, _ := strings.Cut(o.text, "\n")
		body, ok := strings.CutSuffix(strings.TrimPrefix(first, "     1\t"), " [line cut]")
		if !ok || len(body) > maxLineChars || len(body) < maxLineChars-3 || strings.Trim(body, "€") != "" {
			t.Errorf("first line %d bytes %q...", len(first), first[:20])
		}
		if !strings.HasSuffix(o.text, "     2\tshort\n") {
			t.Errorf("got %q", o.text[len(o.text)-30:])
		}
	})
	t.Run("latin-1 text becomes valid UTF-8", func(t *testing.T) {
		writeHost(t, sb, "latin1.txt", "caf\xe9\n")
		wantOK(t, callTool(t, sb, "read_file", readInput{Path: "latin1.txt"}), "     1\tcaf\uFFFD\n")
	})
	t.Run("binary file", func(t *testing.T) {
		writeHost(t, sb, "bin.dat", "\x7fELF\x00\x01\xff\xfe")
		wantErr(t, callTool(t, sb, "read_file", readInput{Path: "bin.dat"}), "bin.dat looks like a binary file (8 bytes)")
	})
}

func TestWriteFileTool(t *testing.T) {
	sb := startSandbox(t)
	o := callTool(t, sb, "write_file", writeInput{Path: "a/b/c.txt", Content: "héllo\n"})
	wantOK(t, o, "wrote 7 bytes to a/b/c.txt")
	if got := readHost(t, sb, "a/b/c.txt"); got != "héllo\n" {
		t.Errorf("file holds %q", got)
	}
	wantOK(t, callTool(t, sb, "write_file", writeInput{Path: "a/b/c.txt", Content: ""}), "wrote 0 bytes to a/b/c.txt")
	if got := readHost(t, sb, "a/b/c.txt"); got != "" {
		t.Errorf("overwritten file holds %q", got)
	}
	abs := filepath.Join(sb.Workspace(), "abs.txt")
	wantOK(t, callTool(t, sb, "write_file", writeInput{Path: abs, Content: "x"}), "wrote 1 bytes to "+abs)
	wantErr(t, callTool(t, sb, "write_file", writeInput{Content: "x"}), "path is empty")
	wantErr(t, callTool(t, sb, "write_file", writeInput{Path: "a/b", Content: "x"}), "is a directory")
}

func TestEditFileTool(t *testing.T) {
	sb := startSandbox(t)
	const orig = "#!/bin/sh\r\nfoo  \n\tbar\nfoo\nbaz \x00 é\n" + "no newline at end"
	reset := func() { writeHost(t, sb, "f.txt", orig) }

	t.Run("single replacement keeps the rest", func(t *testing.T) {
		reset()
		wantOK(t, callTool(t, sb, "edit_file", editInput{Path: "f.txt", OldString: "\tbar\n", NewString: "\tBAR\n\tqux\n"}),
			"replaced 1 occurrence(s) in f.txt")
		want := strings.Replace(orig, "\tbar\n", "\tBAR\n\tqux\n", 1)
		if got := readHost(t, sb, "f.txt"); got != want {
			t.Errorf("file is %q\nwant      %q", got, want)
		}
	})
	t.Run("not found", func(t *testing.T) {
		reset()
		wantErr(t, callTool(t, sb, "edit_file", editInput{Path: "f.txt", OldString: "\tBAR", NewString: "x"}), "old_string was not found in f.txt")
		if readHost(t, sb, "f.txt") != orig {
			t.Error("file changed")
		}
	})
	t.Run("several occurrences", func(t *testing.T) {
		reset()
		wantErr(t, callTool(t, sb, "edit_file", editInput{Path: "f.txt", OldString: "foo", NewString: "x"}), "old_string occurs 2 times in f.txt")
		if readHost(t, sb, "f.txt") != orig {
			t.Error("file changed")
		}
		wantOK(t, callTool(t, sb, "edit_file", editInput{Path: "f.txt", OldString: "foo", NewString: "x", ReplaceAll: true}),
			"replaced 2 occurrence(s) in f.txt")
		if got := readHost(t, sb, "f.txt"); got != strings.ReplaceAll(orig, "foo", "x") {
			t.Errorf("file is %q", got)
		}
	})
	t.Run("replace_all with one occurrence", func(t *testing.T) {
		reset()
		wantOK(t, callTool(t, sb, "edit_file", editInput{Path: "f.txt", OldString: "at end", NewString: "", ReplaceAll: true}),
			"replaced 1 occurrence(s) in f.txt")
		if got := readHost(t, sb, "f.txt"); got != strings.TrimSuffix(orig, "at end") {
			t.Errorf("file is %q", got)
		}
	})
	t.Run("keeps the executable bit", func(t *testing.T) {
		reset()
		p := filepath.Join(sb.Workspace(), "f.txt")
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
		wantOK(t, callTool(t, sb, "edit_file", editInput{Path: "f.txt", OldString: "baz", NewString: "BAZ"}), "replaced 1 occurrence(s) in f.txt")
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("mode after edit: %v %v", fi.Mode(), err)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		reset()
		wantErr(t, callTool(t, sb, "edit_file", editInput{Path: "f.txt", OldString: "", NewString: "x"}), "old_string is empty")
		wantErr(t, callTool(t, sb, "edit_file", editInput{Path: "f.txt", OldString: "foo", NewString: "foo"}), "the same")
		wantErr(t, callTool(t, sb, "edit_file", editInput{Path: "gone.txt", OldString: "a", NewString: "b"}), "read gone.txt")
		wantErr(t, callTool(t, sb, "edit_file", editInput{OldString: "a", NewString: "b"}), "path is empty")
		if readHost(t, sb, "f.txt") != orig {
			t.Error("file changed")
		}
	})
}

func TestListFilesTool(t *testing.T) {
	sb := startSandbox(t)
	writeHost(t, sb, "a.txt", "12345")
	writeHost(t, sb, "sub/b.txt", "xy")
	writeHost(t, sb, "sub/deep/c.txt", "")
	if err := os.Mkdir(filepath.Join(sb.Workspace(), "emptydir"), 0o755); err != nil {
		t.Fatal(err)
	}

	wantOK(t, callTool(t, sb, "list_files", listInput{}), "a.txt\t5\nemptydir/\nsub/\n")
	wantOK(t, callTool(t, sb, "list_files", `{}`), "a.txt\t5\nemptydir/\nsub/\n")
	wantOK(t, callTool(t, sb, "list_files", listInput{Path: "."}), "a.txt\t5\nemptydir/\nsub/\n")
	wantOK(t, callTool(t, sb, "list_files", listInput{Recursive: true}),
		"a.txt\t5\nemptydir/\nsub/\nsub/b.txt\t2\nsub/deep/\nsub/deep/c.txt\t0\n")
	wantOK(t, callTool(t, sb, "list_files", listInput{Path: "sub/"}), "b.txt\t2\ndeep/\n")
	wantOK(t, callTool(t, sb, "list_files", listInput{Path: "./sub", Recursive: true}), "b.txt\t2\ndeep/\ndeep/c.txt\t0\n")
	wantOK(t, callTool(t, sb, "list_files", listInput{Path: filepath.Join(sb.Workspace(), "sub")}), "b.txt\t2\ndeep/\n")
	wantOK(t, callTool(t, sb, "list_files", listInput{Path: "emptydir"}), "(emptydir is empty)")
	wantErr(t, callTool(t, sb, "list_files", listInput{Path: "missing"}), "list missing:")
	wantErr(t, callTool(t, sb, "list_files", listInput{Path: "a.txt"}), "is not a directory")
}
