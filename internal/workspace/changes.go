package workspace

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/execlaw/execlaw/internal/guest"
)

// A session's baseline is how its workspace stood when it became active
// (after a clone or an archive): the commit it began at when it is a git
// repository, and always a manifest of its files (paths, sizes, times).
// It is kept on the host, in the session's own directory, where the agent
// cannot touch it; Changes compares the workspace with it.

// Limits of a baseline and of a changes answer.
const (
	// MaxManifestEntries is the most entries a manifest records (and a
	// files comparison looks at).
	MaxManifestEntries = guest.MaxListEntries
	// MaxDiffBytes bounds the diff of a changes answer; past it the diff is
	// cut at a line with a note.
	MaxDiffBytes = 1 << 20
	// MaxChangedFiles bounds the files listed.
	MaxChangedFiles = 5000
	// maxNewFileDiff is the largest new file whose content a files
	// comparison (or git, for untracked files) shows.
	maxNewFileDiff = 256 << 10
	// changesTimeout bounds computing an answer.
	changesTimeout = 60 * time.Second
	// BaselineFile is the baseline's name in the session's directory.
	BaselineFile = "workspace-baseline.json"
)

// Baseline is how a workspace stood when its session began.
type Baseline struct {
	At time.Time `json:"at"`
	// Git is the commit (or, in a repository without one, the empty tree)
	// the session began at; a snapshot commit of the work tree when it had
	// changes already. Empty when the workspace was not a repository.
	Git string `json:"git,omitempty"`
	// Files is the manifest (Truncated when it holds MaxManifestEntries
	// and there were more).
	Files     []ManifestEntry `json:"files"`
	Truncated bool            `json:"truncated,omitempty"`
}

// ManifestEntry is one entry of the workspace, directories included.
type ManifestEntry struct {
	Path  string `json:"p"`
	Type  string `json:"t"`
	Size  int64  `json:"s"`
	MTime int64  `json:"m"` // Unix nanoseconds
}

var shaPattern = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// gitEnv stops git from finding a repository above the workspace (the
// process sandbox's workspace sits in the host's data directory, which may
// be in a checkout) and from taking locks it need not.
const gitEnv = `export GIT_CEILING_DIRECTORIES="$(dirname "$(pwd -P)")" GIT_OPTIONAL_LOCKS=0 GIT_PAGER=cat GIT_TERMINAL_PROMPT=0 LC_ALL=C
command -v git >/dev/null 2>&1 || exit 0
[ "$(git rev-parse --show-toplevel 2>/dev/null)" = "$(pwd -P)" ] || exit 0
`

// baseScript prints the commit a repository's session begins at: HEAD, or a
// snapshot of the work tree (git stash create: a commit no branch points
// to, the repository otherwise untouched) when it has changes, or the empty
// tree when there is no commit yet. Nothing when it is not a repository.
const baseScript = gitEnv + `s=$(git -c user.name=execlaw -c user.email=execlaw@localhost stash create 2>/dev/null || true)
if [ -n "$s" ]; then echo "$s"; exit 0; fi
git rev-parse --verify --quiet HEAD || git hash-object -t tree /dev/null
`

// Record takes a workspace's baseline.
func Record(ctx context.Context, g *guest.Client, root string) (Baseline, error) {
	ctx, cancel := context.WithTimeout(ctx, changesTimeout)
	defer cancel()
	b := Baseline{At: time.Now().UTC()}
	out, _, _, err := run(ctx, g, baseScript, 4096, nil)
	if err != nil {
		return Baseline{}, err
	}
	if sha := strings.TrimSpace(string(out)); shaPattern.MatchString(sha) {
		b.Git = sha
	}
	b.Files, b.Truncated, err = manifest(ctx, g, root)
	if err != nil {
		return Baseline{}, err
	}
	return b, nil
}

// manifest lists the whole workspace (without following symlinks).
func manifest(ctx context.Context, g *guest.Client, root string) ([]ManifestEntry, bool, error) {
	l, err := g.List(ctx, guest.ListRequest{Path: root, Recursive: true, Limit: MaxManifestEntries})
	if err != nil {
		return nil, false, fmt.Errorf("list the workspace: %w", err)
	}
	prefix := strings.TrimSuffix(root, "/") + "/"
	files := make([]ManifestEntry, 0, len(l.Entries))
	for _, e := range l.Entries {
		rel, ok := strings.CutPrefix(e.Path, prefix)
		if !ok || rel == "" || !utf8.ValidString(rel) {
			continue
		}
		t := guest.WSFile
		switch {
		case e.IsDir:
			t = guest.WSDir
		case strings.HasPrefix(e.Mode, "L"):
			t = guest.WSSymlink
		case !strings.HasPrefix(e.Mode, "-"):
			t = guest.WSOther
		}
		files = append(files, ManifestEntry{Path: rel, Type: t, Size: e.Size, MTime: e.ModTime.UnixNano()})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, l.Truncated, nil
}

// Save writes a baseline into dir (the session's own host directory).
func (b Baseline) Save(dir string) error {
	raw, err := json.Marshal(b)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, BaselineFile+".tmp")
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, BaselineFile))
}

// LoadBaseline reads the baseline Save wrote; os.ErrNotExist when there is none.
func LoadBaseline(dir string) (Baseline, error) {
	raw, err := os.ReadFile(filepath.Join(dir, BaselineFile))
	if err != nil {
		return Baseline{}, err
	}
	var b Baseline
	if err := json.Unmarshal(raw, &b); err != nil {
		return Baseline{}, fmt.Errorf("the workspace baseline: %w", err)
	}
	return b, nil
}

// Change is one changed file.
type Change struct {
	Path   string `json:"path"`
	Status string `json:"status"` // added, modified, deleted, typechange, untracked, unmerged
}

// Changes is what changed in a workspace since its session began.
type Changes struct {
	// Kind is "git" (a repository: compared with the commit it began at,
	// untracked files included) or "files" (compared with the manifest: new
	// text files' content is shown, other changes by name only).
	Kind  string   `json:"kind"`
	Files []Change `json:"files"`
	Diff  string   `json:"diff"`
	// Truncated: the diff or the list is cut (Note says where).
	Truncated bool   `json:"truncated,omitempty"`
	Note      string `json:"note,omitempty"`
	// Git only: the commit compared with, the current HEAD, and git status
	// --short --branch.
	Base   string `json:"base,omitempty"`
	Head   string `json:"head,omitempty"`
	Status string `json:"status,omitempty"`
}

// Compute compares a workspace with its baseline (nil: none was recorded).
func Compute(ctx context.Context, g *guest.Client, root string, base *Baseline) (Changes, error) {
	ctx, cancel := context.WithTimeout(ctx, changesTimeout)
	defer cancel()
	if base == nil {
		return Changes{Kind: "files", Files: []Change{}, Note: "this session has no record of how its workspace began (it started before this server kept one), so its changes are not known"}, nil
	}
	if base.Git != "" {
		c, ok, err := gitChanges(ctx, g, base.Git)
		if err != nil || ok {
			return c, err
		}
		// No longer a repository: compare files.
	}
	return fileChanges(ctx, g, root, base)
}

// diffScript prints, separated by $2 lines: git status, HEAD, the changed
// tracked files (-z), the untracked ones (-z), and the diff against $1,
// untracked text files up to 256 KiB as new files. It exits 3 when the
// workspace is no repository, 4 when $1 is gone (garbage-collected).
const diffScript = `export GIT_CEILING_DIRECTORIES="$(dirname "$(pwd -P)")" GIT_OPTIONAL_LOCKS=0 GIT_PAGER=cat GIT_TERMINAL_PROMPT=0 LC_ALL=C
command -v git >/dev/null 2>&1 || exit 3
[ "$(git rev-parse --show-toplevel 2>/dev/null)" = "$(pwd -P)" ] || exit 3
base=$1 sep=$2
git cat-file -e "$base^{tree}" 2>/dev/null || exit 4
git -c core.quotepath=off status --short --branch 2>&1 | head -c 65536
printf '\n%s\n' "$sep"
git rev-parse --verify --quiet HEAD || true
printf '\n%s\n' "$sep"
git diff --name-status -z --no-renames "$base" -- 2>/dev/null | head -c 1048576
printf '\n%s\n' "$sep"
git ls-files -z --others --exclude-standard 2>/dev/null | head -c 1048576
printf '\n%s\n' "$sep"
git diff --no-color --no-ext-diff --no-textconv --no-renames "$base" -- 2>/dev/null
git ls-files -z --others --exclude-standard 2>/dev/null | head -z -n 1000 | while IFS= read -r -d '' f; do
  if [ -f "$f" ] && [ ! -L "$f" ] && [ "$(stat -c %s -- "$f")" -le ` + "262144" + ` ]; then
    git diff --no-color --no-ext-diff --no-textconv --no-index -- /dev/null "$f" 2>/dev/null
  fi
done
exit 0
`

func gitChanges(ctx context.Context, g *guest.Client, base string) (Changes, bool, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	sep := "--execlaw-" + hex.EncodeToString(rnd[:]) + "--"
	out, code, cut, err := run(ctx, g, diffScript, 4<<20+MaxDiffBytes, []string{base, sep})
	if err != nil {
		return Changes{}, false, err
	}
	switch code {
	case 3:
		return Changes{}, false, nil
	case 4:
		c := Changes{Kind: "git", Files: []Change{}, Base: base,
			Note: "the commit this session began at (" + base[:12] + ") is no longer in the repository, so its changes cannot be shown"}
		return c, true, nil
	}
	parts := strings.SplitN(string(out), "\n"+sep+"\n", 5)
	for len(parts) < 5 {
		parts = append(parts, "")
	}
	c := Changes{Kind: "git", Base: base, Status: strings.ToValidUTF8(strings.TrimRight(parts[0], "\n"), "\uFFFD"),
		Head: strings.TrimSpace(parts[1])}
	if !shaPattern.MatchString(c.Head) {
		c.Head = ""
	}
	statuses := map[string]string{"A": "added", "M": "modified", "D": "deleted", "T": "typechange", "U": "unmerged"}
	fields := splitZ(parts[2])
	for i := 0; i+1 < len(fields); i += 2 {
		st := statuses[fields[i]]
		if st == "" {
			st = "modified"
		}
		c.Files = append(c.Files, Change{Path: displayPath(fields[i+1]), Status: st})
	}
	for _, f := range splitZ(parts[3]) {
		c.Files = append(c.Files, Change{Path: displayPath(f), Status: "untracked"})
	}
	if c.Files == nil {
		c.Files = []Change{}
	}
	if len(c.Files) > MaxChangedFiles {
		c.Files, c.Truncated = c.Files[:MaxChangedFiles], true
		c.Note = fmt.Sprintf("more than %d files changed; the first %d are listed", MaxChangedFiles, MaxChangedFiles)
	}
	c.Diff = parts[4]
	if cut || len(c.Diff) > MaxDiffBytes {
		c.Diff, c.Truncated = cutDiff(c.Diff), true
		c.Note = joinNote(c.Note, fmt.Sprintf("the diff is longer than %d KiB and is cut; download the workspace for all of it", MaxDiffBytes>>10))
	}
	c.Diff = strings.ToValidUTF8(c.Diff, "\uFFFD")
	return c, true, nil
}

func fileChanges(ctx context.Context, g *guest.Client, root string, base *Baseline) (Changes, error) {
	now, truncated, err := manifest(ctx, g, root)
	if err != nil {
		return Changes{}, err
	}
	c := Changes{Kind: "files", Files: []Change{}}
	before := make(map[string]ManifestEntry, len(base.Files))
	for _, e := range base.Files {
		before[e.Path] = e
	}
	seen := make(map[string]bool, len(now))
	var added []ManifestEntry
	for _, e := range now {
		seen[e.Path] = true
		if e.Type == guest.WSDir {
			continue
		}
		old, ok := before[e.Path]
		switch {
		case !ok:
			c.Files = append(c.Files, Change{Path: e.Path, Status: "added"})
			added = append(added, e)
		case old.Type != e.Type:
			c.Files = append(c.Files, Change{Path: e.Path, Status: "typechange"})
		case old.Size != e.Size || old.MTime != e.MTime:
			c.Files = append(c.Files, Change{Path: e.Path, Status: "modified"})
		}
	}
	if !truncated { // a cut listing cannot tell what is gone
		for _, e := range base.Files {
			if !seen[e.Path] && e.Type != guest.WSDir {
				c.Files = append(c.Files, Change{Path: e.Path, Status: "deleted"})
			}
		}
	}
	sort.Slice(c.Files, func(i, j int) bool { return c.Files[i].Path < c.Files[j].Path })
	c.Note = "the workspace is not a git repository: changes are found by name, size and time, and only new text files' content is shown"
	if base.Truncated || truncated {
		c.Note = joinNote(c.Note, fmt.Sprintf("the workspace has more than %d entries, so only some are compared", MaxManifestEntries))
		c.Truncated = true
	}
	if len(c.Files) > MaxChangedFiles {
		c.Files, c.Truncated = c.Files[:MaxChangedFiles], true
	}
	var diff strings.Builder
	shown := 0
	for _, e := range added {
		if e.Type != guest.WSFile || e.Size > maxNewFileDiff || shown >= 200 {
			continue
		}
		if diff.Len()+int(e.Size) > MaxDiffBytes {
			c.Truncated = true
			c.Note = joinNote(c.Note, fmt.Sprintf("the new files' content is longer than %d KiB; the rest is not shown", MaxDiffBytes>>10))
			break
		}
		text, ok := readText(ctx, g, e.Path)
		if !ok {
			continue
		}
		shown++
		diff.WriteString(newFileDiff(e.Path, text))
	}
	c.Diff = diff.String()
	return c, nil
}

// readText reads a small file, if it is text (valid UTF-8, no NUL).
func readText(ctx context.Context, g *guest.Client, rel string) (string, bool) {
	rc, size, err := g.WSRead(ctx, rel)
	if err != nil {
		return "", false
	}
	defer rc.Close()
	if size > maxNewFileDiff {
		return "", false
	}
	b, err := io.ReadAll(io.LimitReader(rc, maxNewFileDiff))
	if err != nil || bytes.IndexByte(b, 0) >= 0 || !utf8.Valid(b) {
		return "", false
	}
	return string(b), true
}

// newFileDiff is a file's content as git shows a new file.
func newFileDiff(p, text string) string {
	lines := strings.SplitAfter(text, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "diff --git a/%s b/%s\nnew file\n--- /dev/null\n+++ b/%s\n", p, p, p)
	if len(lines) == 0 {
		return b.String()
	}
	fmt.Fprintf(&b, "@@ -0,0 +1,%d @@\n", len(lines))
	for _, l := range lines {
		b.WriteString("+")
		b.WriteString(l)
		if !strings.HasSuffix(l, "\n") {
			b.WriteString("\n\\ No newline at end of file\n")
		}
	}
	return b.String()
}

func splitZ(s string) []string {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "\n"), "\n")
	var out []string
	for f := range strings.SplitSeq(s, "\x00") {
		if f != "" {
			out = append(out, f)
		}
	}
	// head -c may have cut the last one short: a list that did not end in
	// NUL loses its last (partial) field.
	if len(out) > 0 && !strings.HasSuffix(s, "\x00") && len(s) >= 1<<20 {
		out = out[:len(out)-1]
	}
	return out
}

// displayPath is a path from git made safe to show (escaped like a listed name).
func displayPath(p string) string {
	esc, _ := escapeName(p)
	return esc
}

// cutDiff cuts a diff at the last whole line within MaxDiffBytes.
func cutDiff(d string) string {
	if len(d) <= MaxDiffBytes {
		if i := strings.LastIndexByte(d, '\n'); i >= 0 {
			return d[:i+1]
		}
		return d
	}
	d = d[:MaxDiffBytes]
	if i := strings.LastIndexByte(d, '\n'); i >= 0 {
		d = d[:i+1]
	}
	return d
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// run runs a bash script in the workspace with args, collecting its stdout
// (stderr is dropped) up to limit bytes: past that the command is stopped
// and cut is true.
func run(ctx context.Context, g *guest.Client, script string, limit int, args []string) (out []byte, code int, cut bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var buf bytes.Buffer
	res, err := g.Exec(ctx, guest.ExecRequest{Argv: append([]string{"bash", "-c", script, "execlaw"}, args...), TimeoutSec: int(changesTimeout / time.Second)},
		func(stream string, data []byte) {
			if stream != guest.FrameStdout {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if cut {
				return
			}
			if buf.Len()+len(data) > limit {
				buf.Write(data[:limit-buf.Len()])
				cut = true
				cancel()
				return
			}
			buf.Write(data)
		})
	mu.Lock()
	defer mu.Unlock()
	if cut {
		return buf.Bytes(), 0, true, nil
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, 0, false, fmt.Errorf("the sandbox took longer than %s", changesTimeout)
		}
		return nil, 0, false, err
	}
	if res.TimedOut {
		return nil, 0, false, fmt.Errorf("the sandbox took longer than %s", changesTimeout)
	}
	return buf.Bytes(), res.ExitCode, false, nil
}
