package builtin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"charm.land/fantasy"

	"github.com/execlaw/execlaw/internal/agent"
	"github.com/execlaw/execlaw/internal/guest"
)

// Tool limits. Outputs past MaxToolOutput are cut in the middle with a note,
// keeping the start (what was run) and the end (how it ended).
const (
	MaxToolOutput      = 32 << 10
	DefaultBashTimeout = 120
	MaxBashTimeout     = 3600
	DefaultReadLines   = 2000
	maxLineChars       = 2000
)

// toolMeta travels from a tool's Run to the tool_result event through fantasy's
// ToolResponse.Metadata.
type toolMeta struct {
	ExitCode   *int  `json:"exitCode,omitempty"`
	DurationMs int64 `json:"durationMs"`
	Truncated  bool  `json:"truncated,omitempty"`
}

type bashInput struct {
	Command    string `json:"command" description:"The shell command to run, with bash -lc, in the workspace directory."`
	TimeoutSec int    `json:"timeoutSec,omitempty" description:"Seconds before the command and everything it started are killed (default 120, at most 3600)."`
}

type readInput struct {
	Path   string `json:"path" description:"File to read; relative paths are inside the workspace."`
	Offset int    `json:"offset,omitempty" description:"First line to return, counting from 1 (default 1)."`
	Limit  int    `json:"limit,omitempty" description:"Most lines to return (default 2000)."`
}

type writeInput struct {
	Path    string `json:"path" description:"File to write; parent directories are created. Relative paths are inside the workspace."`
	Content string `json:"content" description:"The complete new content of the file."`
}

type editInput struct {
	Path       string `json:"path" description:"File to edit; relative paths are inside the workspace."`
	OldString  string `json:"old_string" description:"Exact text to replace, including whitespace. It must occur exactly once unless replace_all is true."`
	NewString  string `json:"new_string" description:"Text to put in its place."`
	ReplaceAll bool   `json:"replace_all,omitempty" description:"Replace every occurrence instead of exactly one."`
}

type listInput struct {
	Path      string `json:"path,omitempty" description:"Directory to list (default: the workspace)."`
	Recursive bool   `json:"recursive,omitempty" description:"List everything below the directory too."`
}

// newTools returns the built-in tools, bound to ws.
func newTools(ws agent.Workspace) []fantasy.AgentTool {
	t := &toolbox{ws: ws}
	return []fantasy.AgentTool{
		fantasy.NewAgentTool("bash",
			"Run a shell command in the sandbox with bash -lc, in the workspace directory. Returns combined stdout and stderr and the exit code. Long outputs are cut in the middle.",
			timed(t.bash)),
		fantasy.NewAgentTool("read_file",
			"Read a text file from the sandbox. Returns numbered lines; use offset and limit for long files.",
			timed(t.read)),
		fantasy.NewAgentTool("write_file",
			"Create or overwrite a file in the sandbox with the given content.",
			timed(t.write)),
		fantasy.NewAgentTool("edit_file",
			"Replace an exact string in a file in the sandbox. Read the file first; old_string must match exactly once unless replace_all is set.",
			timed(t.edit)),
		fantasy.NewAgentTool("list_files",
			"List a directory in the sandbox (names, sizes, directories marked with a trailing /).",
			timed(t.list)),
	}
}

type toolbox struct {
	ws agent.Workspace
}

// result is what a tool body produces; timed turns it into a ToolResponse.
type result struct {
	output    string
	isError   bool
	exitCode  *int
	truncated bool // output was already cut (with its own note) by the tool
}

// timed measures a tool body and packs its result. A tool never returns a Go
// error to fantasy: that would end the turn. Failures are error results the
// model can read and react to.
func timed[In any](fn func(ctx context.Context, in In) result) func(context.Context, In, fantasy.ToolCall) (fantasy.ToolResponse, error) {
	return func(ctx context.Context, in In, _ fantasy.ToolCall) (fantasy.ToolResponse, error) {
		start := time.Now()
		r := fn(ctx, in)
		out, truncated := truncateMiddle(r.output, MaxToolOutput)
		truncated = truncated || r.truncated
		resp := fantasy.NewTextResponse(out)
		if r.isError {
			resp = fantasy.NewTextErrorResponse(out)
		}
		return fantasy.WithResponseMetadata(resp, toolMeta{
			ExitCode:   r.exitCode,
			DurationMs: time.Since(start).Milliseconds(),
			Truncated:  truncated,
		}), nil
	}
}

func failf(format string, args ...any) result {
	return result{output: fmt.Sprintf(format, args...), isError: true}
}

// guestFailure words an error from the guest for the model.
func guestFailure(ctx context.Context, action string, err error) result {
	// A turn cancelled with a cause (ErrCancelled) fails the guest call with
	// that cause, which does not wrap context.Canceled: ask ctx instead.
	if errors.Is(err, context.Canceled) || ctx.Err() != nil {
		return failf("%s: cancelled", action)
	}
	return failf("%s: %v", action, err)
}

func (t *toolbox) bash(ctx context.Context, in bashInput) result {
	if strings.TrimSpace(in.Command) == "" {
		return failf("command is empty")
	}
	timeout := in.TimeoutSec
	switch {
	case timeout <= 0:
		timeout = DefaultBashTimeout
	case timeout > MaxBashTimeout:
		timeout = MaxBashTimeout
	}
	// Output is kept whole up to the limit and then only its start and a
	// rolling tail, so a command that prints gigabytes costs bounded memory on
	// the host. The capture is a little under MaxToolOutput so that its note
	// (which counts every byte left out) and the notes below fit: cut again
	// by truncateMiddle, the note would be lost and the count understated.
	out := newCapture(MaxToolOutput - 1<<10)
	res, err := t.ws.Guest().Exec(ctx, guest.ExecRequest{
		Argv:       []string{"bash", "-lc", in.Command},
		TimeoutSec: timeout,
	}, func(_ string, data []byte) { out.Write(data) })
	text := out.String()
	if err != nil {
		r := guestFailure(ctx, "running the command failed", err)
		if text != "" {
			r.output = text + "\n" + r.output
		}
		return r
	}
	code := res.ExitCode
	switch {
	case res.TimedOut:
		text += fmt.Sprintf("\n[command timed out after %d s and was killed]", timeout)
	case res.Signal != "":
		text += fmt.Sprintf("\n[command killed by signal %s]", res.Signal)
	}
	if text == "" {
		text = "(no output)"
	}
	return result{output: text, isError: code != 0 || res.TimedOut, exitCode: &code, truncated: out.Dropped() > 0}
}

func (t *toolbox) read(ctx context.Context, in readInput) result {
	if in.Path == "" {
		return failf("path is empty")
	}
	offset := max(in.Offset, 1)
	limit := in.Limit
	if limit <= 0 {
		limit = DefaultReadLines
	}
	resp, err := t.ws.Guest().Read(ctx, guest.ReadRequest{Path: in.Path, Limit: guest.MaxReadBytes})
	if err != nil {
		return guestFailure(ctx, "read "+in.Path, err)
	}
	if !utf8.Valid(resp.Data) && strings.ContainsRune(string(resp.Data), 0) {
		return failf("%s looks like a binary file (%d bytes); use bash with xxd or file to inspect it", in.Path, resp.Size)
	}
	lines := strings.SplitAfter(string(resp.Data), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) == 0 {
		return result{output: fmt.Sprintf("(%s is empty)", in.Path)}
	}
	if offset > len(lines) {
		return failf("%s has %d lines; offset %d is past the end", in.Path, len(lines), offset)
	}
	end := min(offset-1+limit, len(lines))
	var b strings.Builder
	for i := offset - 1; i < end; i++ {
		line := strings.ToValidUTF8(strings.TrimRight(lines[i], "\n"), "\uFFFD")
		if len(line) > maxLineChars {
			cut := maxLineChars
			for cut > 0 && !utf8.RuneStart(line[cut]) { // never split a character
				cut--
			}
			line = line[:cut] + " [line cut]"
		}
		fmt.Fprintf(&b, "%6d\t%s\n", i+1, line)
	}
	if end < len(lines) || !resp.EOF {
		fmt.Fprintf(&b, "[showing lines %d-%d; the file continues: read again with offset %d]\n", offset, end, end+1)
	}
	return result{output: b.String()}
}

func (t *toolbox) write(ctx context.Context, in writeInput) result {
	if in.Path == "" {
		return failf("path is empty")
	}
	if len(in.Content) > guest.MaxRequestBytes/2 {
		return failf("content is %d bytes; write files larger than %d bytes in pieces with bash", len(in.Content), guest.MaxRequestBytes/2)
	}
	if err := t.ws.Guest().Write(ctx, guest.WriteRequest{Path: in.Path, Data: []byte(in.Content)}); err != nil {
		return guestFailure(ctx, "write "+in.Path, err)
	}
	return result{output: fmt.Sprintf("wrote %d bytes to %s", len(in.Content), in.Path)}
}

func (t *toolbox) edit(ctx context.Context, in editInput) result {
	if in.Path == "" {
		return failf("path is empty")
	}
	if in.OldString == "" {
		return failf("old_string is empty; use write_file to create a file")
	}
	if in.OldString == in.NewString {
		return failf("old_string and new_string are the same; nothing to do")
	}
	g := t.ws.Guest()
	resp, err := g.Read(ctx, guest.ReadRequest{Path: in.Path, Limit: guest.MaxReadBytes})
	if err != nil {
		return guestFailure(ctx, "read "+in.Path, err)
	}
	if !resp.EOF {
		return failf("%s is larger than %d bytes; edit it with bash", in.Path, guest.MaxReadBytes)
	}
	content := string(resp.Data)
	n := strings.Count(content, in.OldString)
	switch {
	case n == 0:
		return failf("old_string was not found in %s; read the file and copy the text exactly, including whitespace", in.Path)
	case n > 1 && !in.ReplaceAll:
		return failf("old_string occurs %d times in %s; add surrounding lines to make it unique, or set replace_all", n, in.Path)
	}
	if !in.ReplaceAll {
		n = 1
	}
	updated := strings.Replace(content, in.OldString, in.NewString, n)
	if err := g.Write(ctx, guest.WriteRequest{Path: in.Path, Data: []byte(updated)}); err != nil {
		return guestFailure(ctx, "write "+in.Path, err)
	}
	return result{output: fmt.Sprintf("replaced %d occurrence(s) in %s", n, in.Path)}
}

func (t *toolbox) list(ctx context.Context, in listInput) result {
	dir := in.Path
	if dir == "" {
		dir = t.ws.Workspace()
	}
	const limit = 1000
	resp, err := t.ws.Guest().List(ctx, guest.ListRequest{Path: dir, Recursive: in.Recursive, Limit: limit})
	if err != nil {
		return guestFailure(ctx, "list "+dir, err)
	}
	if len(resp.Entries) == 0 {
		return result{output: fmt.Sprintf("(%s is empty)", dir)}
	}
	abs := dir
	if !path.IsAbs(abs) {
		abs = path.Join(t.ws.Workspace(), abs)
	}
	prefix := strings.TrimRight(path.Clean(abs), "/") + "/"
	var b strings.Builder
	for _, e := range resp.Entries {
		name := strings.TrimPrefix(e.Path, prefix)
		if e.IsDir {
			fmt.Fprintf(&b, "%s/\n", name)
		} else {
			fmt.Fprintf(&b, "%s\t%d\n", name, e.Size)
		}
	}
	if resp.Truncated {
		fmt.Fprintf(&b, "[only the first %d entries are shown]\n", limit)
	}
	return result{output: b.String()}
}

// capture keeps up to limit bytes of output: all of it while it fits, then the
// first quarter and a rolling tail (the proportions of truncateMiddle).
type capture struct {
	mu      sync.Mutex
	limit   int
	head    []byte
	tail    []byte
	dropped int
}

func newCapture(limit int) *capture { return &capture{limit: limit} }

func (c *capture) Write(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.limit/4 - len(c.head); room > 0 {
		n := min(room, len(p))
		c.head = append(c.head, p[:n]...)
		p = p[n:]
	}
	c.tail = append(c.tail, p...)
	if over := len(c.tail) - (c.limit - c.limit/4); over > 0 {
		c.dropped += over
		c.tail = append(c.tail[:0], c.tail[over:]...)
	}
}

// Dropped is how many bytes were left out.
func (c *capture) Dropped() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

func (c *capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := strings.ToValidUTF8(string(c.head), "\uFFFD")
	if c.dropped > 0 {
		s += fmt.Sprintf("\n[... %d bytes omitted ...]\n", c.dropped)
	}
	return s + strings.ToValidUTF8(string(c.tail), "\uFFFD")
}

// truncateMiddle cuts s to at most limit bytes, keeping its start and end.
func truncateMiddle(s string, limit int) (string, bool) {
	if len(s) <= limit {
		return s, false
	}
	head := limit / 4
	tail := limit - head
	cut := len(s) - head - tail
	return strings.ToValidUTF8(s[:head], "") +
		fmt.Sprintf("\n[... %d bytes omitted: output too long ...]\n", cut) +
		strings.ToValidUTF8(s[len(s)-tail:], ""), true
}

// inputJSON makes a tool call's input safe to put in an event: valid JSON, bounded.
func inputJSON(raw string) json.RawMessage {
	const limit = 64 << 10
	raw = strings.ToValidUTF8(raw, "\uFFFD") // json.Valid does not check UTF-8
	if len(raw) <= limit && json.Valid([]byte(raw)) && strings.HasPrefix(strings.TrimSpace(raw), "{") {
		return json.RawMessage(raw)
	}
	s, _ := truncateMiddle(raw, limit)
	b, _ := json.Marshal(map[string]string{"invalidInput": strings.ToValidUTF8(s, "\uFFFD")})
	return b
}
