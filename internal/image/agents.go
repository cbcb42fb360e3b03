package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Agent CLIs an image can carry besides the built-in agent, which needs
// nothing in the guest.
const (
	AgentClaudeCode = "claude-code"
	AgentNullclaw   = "nullclaw"
)

// ClaudeCodeVersion is the pinned @anthropic-ai/claude-code release: the last
// one that is plain JavaScript for Node.js 18, which Debian bookworm ships
// (later releases are native binaries that want Node.js 22 to install).
const ClaudeCodeVersion = "2.1.112"

// AgentSpec says which agents to install and from where.
type AgentSpec struct {
	ClaudeCode        bool
	ClaudeCodeVersion string // default ClaudeCodeVersion
	// Nullclaw is a local file or an http(s) URL of the static nullclaw
	// binary; NullclawSHA256 must match it.
	Nullclaw       string
	NullclawSHA256 string
}

// Names lists the agents the spec installs.
func (a AgentSpec) Names() []string {
	var n []string
	if a.ClaudeCode {
		n = append(n, AgentClaudeCode)
	}
	if a.Nullclaw != "" {
		n = append(n, AgentNullclaw)
	}
	return n
}

// ParseAgents reads a comma-separated list such as "claude-code,nullclaw".
func ParseAgents(list string) (AgentSpec, error) {
	var a AgentSpec
	for _, n := range strings.Split(list, ",") {
		switch strings.TrimSpace(n) {
		case "":
		case AgentClaudeCode:
			a.ClaudeCode = true
		case AgentNullclaw:
			return a, errors.New("nullclaw needs its binary: use --nullclaw FILE_OR_URL --nullclaw-sha256 HEX")
		default:
			return a, fmt.Errorf("unknown agent %q (want %s or %s)", n, AgentClaudeCode, AgentNullclaw)
		}
	}
	return a, nil
}

var (
	sha256RE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	releaseRE = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+$`)
)

func checkClaudeVersion(v string) error {
	if !releaseRE.MatchString(v) {
		return fmt.Errorf("claude-code version %q is not a release number", v)
	}
	return nil
}

func (a AgentSpec) validate() error {
	if a.Nullclaw != "" && !sha256RE.MatchString(a.NullclawSHA256) {
		return errors.New("--nullclaw needs --nullclaw-sha256 with the binary's SHA-256 (64 hex digits)")
	}
	return checkClaudeVersion(a.claudeVersion())
}

func (a AgentSpec) claudeVersion() string {
	if a.ClaudeCodeVersion != "" {
		return a.ClaudeCodeVersion
	}
	return ClaudeCodeVersion
}

// packages are what the agents need from the distribution.
func (a AgentSpec) packages() []string {
	if a.ClaudeCode {
		return []string{"nodejs", "ripgrep"}
	}
	return nil
}

// recipe identifies the agents in the root filesystem's recipe.
func (a AgentSpec) recipe() string {
	var parts []string
	if a.ClaudeCode {
		parts = append(parts, "claude-code@"+a.claudeVersion())
	}
	if a.Nullclaw != "" {
		parts = append(parts, "nullclaw@"+a.NullclawSHA256)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// InstallClaudeCode installs @anthropic-ai/claude-code at version under
// prefix with the host's npm, as `npm install --global --prefix` does, and
// returns the path of its bin/claude.
func InstallClaudeCode(ctx context.Context, prefix, version string) (string, error) {
	if err := checkClaudeVersion(version); err != nil {
		return "", err
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", errors.New("installing claude-code needs npm on the build host (apt-get install npm)")
	}
	cmd := exec.CommandContext(ctx, npm, "install", "--global", "--prefix", prefix,
		"--no-audit", "--no-fund", "--omit=dev", "--ignore-scripts", "@anthropic-ai/claude-code@"+version)
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm install claude-code: %v: %s", err, lastLines(b, 8))
	}
	bin := filepath.Join(prefix, "bin", "claude")
	if _, err := os.Lstat(bin); err != nil {
		return "", fmt.Errorf("npm installed claude-code but %s is missing", bin)
	}
	return bin, nil
}

// install puts the agents into a root filesystem tree and returns what it
// installed, as "name=version".
func (a AgentSpec) install(ctx context.Context, tree string, out io.Writer) ([]string, error) {
	var installed []string
	if a.ClaudeCode {
		v := a.claudeVersion()
		fmt.Fprintf(out, "      installing @anthropic-ai/claude-code@%s from npm\n", v)
		// The host's npm writes into the tree: the package is JavaScript run
		// by the guest's own Node.js, so nothing needs to run inside the tree.
		if _, err := InstallClaudeCode(ctx, filepath.Join(tree, "usr/local"), v); err != nil {
			return nil, err
		}
		installed = append(installed, AgentClaudeCode+"="+v)
	}
	if a.Nullclaw != "" {
		fmt.Fprintf(out, "      installing nullclaw from %s\n", a.Nullclaw)
		data, err := fetch(ctx, a.Nullclaw, 256<<20)
		if err != nil {
			return nil, fmt.Errorf("nullclaw: %w", err)
		}
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != a.NullclawSHA256 {
			return nil, fmt.Errorf("nullclaw: SHA-256 is %s, not the %s given", got, a.NullclawSHA256)
		}
		if err := checkStatic(data); err != nil {
			return nil, fmt.Errorf("nullclaw binary %w", err)
		}
		if err := os.WriteFile(filepath.Join(tree, "usr/local/bin/nullclaw"), data, 0o755); err != nil {
			return nil, err
		}
		installed = append(installed, AgentNullclaw+"=sha256:"+a.NullclawSHA256[:12])
	}
	return installed, nil
}

// fetch reads a local file or downloads an http(s) URL, bounded.
func fetch(ctx context.Context, src string, limit int64) ([]byte, error) {
	if !strings.HasPrefix(src, "http://") && !strings.HasPrefix(src, "https://") {
		f, err := os.Open(src)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return readLimited(f, limit)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", src, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("download %s: %s", src, resp.Status)
	}
	return readLimited(resp.Body, limit)
}

func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}
