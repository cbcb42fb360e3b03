package workspace

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/execlaw/execlaw/internal/egress"
	"github.com/execlaw/execlaw/internal/guest"
)

// Repo is a git repository a new session's workspace starts from.
type Repo struct {
	URL string `json:"url"`
	Ref string `json:"ref,omitempty"`
	// Token authenticates the clone of a private repository (HTTP Basic,
	// user "x-access-token", or "user:password" as given). It is used for
	// the clone only: never stored, logged, shown or written in the VM.
	Token string `json:"token,omitempty"`
}

// Limits of a repository request.
const (
	MaxRepoURLBytes   = 2048
	MaxRepoRefBytes   = 255
	MaxRepoTokenBytes = 4096
	// CloneTimeout bounds a clone (and the checkout of its ref).
	CloneTimeout = 10 * time.Minute
)

// refPattern is what a ref may look like: a branch, tag or commit name
// without anything git or a shell could read as more (no leading "-", no
// "..", no spaces, no "@{", no control characters; see git check-ref-format).
var refPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._/+-]*$`)

// Check validates a repository request and returns it trimmed. The URL must
// be https, without credentials, query or fragment, naming a host; an IP
// address must be one policy allows (nil: public addresses only) and
// "localhost" names are refused. A host name is resolved by the sandbox
// itself, whose own network policy decides what it may reach (a VM reaches
// the internet, never the host or its LAN).
func (r Repo) Check(policy *egress.Policy) (Repo, error) {
	r.URL = strings.TrimSpace(r.URL)
	r.Ref = strings.TrimSpace(r.Ref)
	if r.URL == "" {
		return Repo{}, invalid("repo.url is required")
	}
	if len(r.URL) > MaxRepoURLBytes || !utf8.ValidString(r.URL) || strings.ContainsFunc(r.URL, func(c rune) bool { return unicode.IsControl(c) || unicode.IsSpace(c) }) {
		return Repo{}, invalid("repo.url must be a URL of at most %d bytes without spaces or control characters", MaxRepoURLBytes)
	}
	u, err := url.Parse(r.URL)
	if err != nil {
		return Repo{}, invalid("repo.url is not a URL: %v", err)
	}
	switch {
	case u.Scheme != "https":
		return Repo{}, invalid("repo.url must be an https:// URL (the clone runs over HTTPS only)")
	case u.User != nil:
		return Repo{}, invalid("repo.url must not hold credentials: give a token in repo.token instead")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return Repo{}, invalid("repo.url must not have a query or fragment")
	case u.Host == "" || u.Opaque != "":
		return Repo{}, invalid("repo.url must name a host")
	case u.Path == "" || u.Path == "/":
		return Repo{}, invalid("repo.url must name a repository (a path on the host)")
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return Repo{}, invalid("repo.url names this machine (%s): not allowed", host)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if policy == nil {
			policy = egress.PublicOnly()
		}
		port := uint16(443)
		if p := u.Port(); p != "" {
			fmt.Sscan(p, &port)
		}
		if err := policy.Check("", netip.AddrPortFrom(ip, port)); err != nil {
			return Repo{}, invalid("repo.url: %v", err)
		}
	} else if net.ParseIP(host) != nil || strings.ContainsAny(host, "[]%") {
		return Repo{}, invalid("repo.url has an unusual host address")
	}
	if r.Ref != "" {
		if len(r.Ref) > MaxRepoRefBytes || !refPattern.MatchString(r.Ref) || strings.Contains(r.Ref, "..") ||
			strings.Contains(r.Ref, "//") || strings.HasSuffix(r.Ref, "/") || strings.HasSuffix(r.Ref, ".lock") || strings.HasSuffix(r.Ref, ".") {
			return Repo{}, invalid("repo.ref must be a branch, tag or commit name (letters, digits, . _ / + -, not starting with - or containing ..)")
		}
	}
	if len(r.Token) > MaxRepoTokenBytes || strings.ContainsFunc(r.Token, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
		return Repo{}, invalid("repo.token must be printable ASCII without spaces, at most %d bytes", MaxRepoTokenBytes)
	}
	return r, nil
}

// Safe is the repository without its token, to keep and show.
func (r Repo) Safe() Repo {
	r.Token = ""
	return r
}

// cloneScript clones $1 into the workspace (which must be empty) and checks
// out $2 when given: a branch (made local, tracking the remote's), a tag or
// a commit (detached). The token, when there is one, arrives as an
// http.<url>.extraHeader in GIT_CONFIG_* variables: git keeps it in memory
// for this one command, never in .git/config, the remote URL or a
// credential store; it is sent to that URL's host only.
const cloneScript = `set -eu
export GIT_TERMINAL_PROMPT=0 GIT_ASKPASS=/bin/false SSH_ASKPASS=/bin/false GIT_ALLOW_PROTOCOL=https LC_ALL=C
if ! command -v git >/dev/null 2>&1; then
  echo "git is not installed in the sandbox" >&2
  exit 127
fi
if [ -n "${EXECLAW_EXTRA_CA:-}" ]; then
  ca=$(mktemp)
  trap 'rm -f "$ca"' EXIT
  cat /etc/ssl/certs/ca-certificates.crt >"$ca" 2>/dev/null || true
  printf '%s\n' "$EXECLAW_EXTRA_CA" >>"$ca"
  export GIT_SSL_CAINFO="$ca"
fi
unset EXECLAW_EXTRA_CA
git clone --progress --no-local -- "$1" .
ref=${2:-}
if [ -n "$ref" ]; then
  if git show-ref --verify --quiet "refs/remotes/origin/$ref"; then
    git -c advice.detachedHead=false checkout --quiet -B "$ref" --track "origin/$ref" --
  elif c=$(git rev-parse --verify --quiet "refs/tags/$ref^{commit}") || c=$(git rev-parse --verify --quiet "$ref^{commit}"); then
    git -c advice.detachedHead=false checkout --quiet --detach "$c" --
  else
    echo "ref $ref: no such branch, tag or commit in the repository" >&2
    exit 2
  fi
fi
`

// CloneOptions say how to clone.
type CloneOptions struct {
	Repo Repo
	// ExtraCA is PEM certificates trusted besides the system's (a private
	// git server's CA).
	ExtraCA []byte
	// Progress, when set, gets git's progress lines ("Receiving objects:
	// 45% ..."), cleaned, as they come.
	Progress func(line string)
}

// Clone clones a repository into the (empty) workspace of a sandbox, inside
// the sandbox: the host fetches nothing.
func Clone(ctx context.Context, g *guest.Client, o CloneOptions) error {
	ctx, cancel := context.WithTimeout(ctx, CloneTimeout+30*time.Second)
	defer cancel()
	env := []string{}
	if len(o.ExtraCA) > 0 {
		env = append(env, "EXECLAW_EXTRA_CA="+string(o.ExtraCA))
	}
	var secrets []string
	if tok := o.Repo.Token; tok != "" {
		cred := tok
		if !strings.Contains(cred, ":") {
			cred = "x-access-token:" + cred
		}
		b64 := base64.StdEncoding.EncodeToString([]byte(cred))
		env = append(env, "GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http."+o.Repo.URL+".extraHeader",
			"GIT_CONFIG_VALUE_0=Authorization: Basic "+b64)
		secrets = append(secrets, tok, b64, cred)
		if _, pw, ok := strings.Cut(tok, ":"); ok && pw != "" {
			secrets = append(secrets, pw)
		}
	}
	var mu sync.Mutex
	var stderr tailBuffer
	var partial []byte
	res, err := g.Exec(ctx, guest.ExecRequest{
		Argv: []string{"bash", "-c", cloneScript, "clone", o.Repo.URL, o.Repo.Ref}, Env: env,
		TimeoutSec: int(CloneTimeout / time.Second),
	}, func(stream string, data []byte) {
		mu.Lock()
		defer mu.Unlock()
		stderr.Write(data)
		if o.Progress == nil {
			return
		}
		// Progress lines end in \r while they are redrawn.
		partial = append(partial, data...)
		if i := bytes.LastIndexAny(partial, "\r\n"); i >= 0 {
			lines := bytes.FieldsFunc(partial[:i], func(r rune) bool { return r == '\r' || r == '\n' })
			partial = append([]byte(nil), partial[i+1:]...)
			if len(lines) > 0 {
				o.Progress(cleanLine(scrub(string(lines[len(lines)-1]), secrets)))
			}
		}
		if len(partial) > 4096 {
			partial = partial[len(partial)-4096:]
		}
	})
	if err != nil {
		return fmt.Errorf("cloning %s: %s", o.Repo.URL, scrub(err.Error(), secrets))
	}
	if res.TimedOut {
		return fmt.Errorf("cloning %s took longer than %s", o.Repo.URL, CloneTimeout)
	}
	if res.ExitCode != 0 {
		mu.Lock()
		msg := lastLines(scrub(stderr.String(), secrets), 6)
		mu.Unlock()
		if msg == "" {
			msg = fmt.Sprintf("git exited with %d", res.ExitCode)
		}
		return fmt.Errorf("cloning %s failed: %s", o.Repo.URL, msg)
	}
	return nil
}

// tailBuffer keeps the last 8 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) {
	t.b = append(t.b, p...)
	if len(t.b) > 8<<10 {
		t.b = append([]byte(nil), t.b[len(t.b)-8<<10:]...)
	}
}

func (t *tailBuffer) String() string { return string(t.b) }

func scrub(s string, secrets []string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}

// cleanLine makes a line from the guest safe to show: valid UTF-8, no
// control characters, at most 300 bytes.
func cleanLine(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return -1
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > 300 {
		s = strings.ToValidUTF8(s[:300], "") + "…"
	}
	return s
}

// lastLines is the last n non-empty lines of s (progress redraws dropped),
// joined with "; ".
func lastLines(s string, n int) string {
	var keep []string
	for _, l := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }) {
		l = cleanLine(l)
		if l == "" || strings.Contains(l, "% (") {
			continue
		}
		keep = append(keep, l)
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, "; ")
}
