package keystore

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// goodHex is a valid key file's contents.
func goodHex(t testing.TB, n byte) string { return hex.EncodeToString(operatorKey(t, n)) }

// writeKey writes a key file with the given contents and mode (chmod, so
// the umask does not matter).
func writeKey(t *testing.T, path, contents string, mode os.FileMode) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(contents), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// noEnv is a getenv with nothing set.
func noEnv(string) string { return "" }

func wantErr(t *testing.T, err error, says ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one saying %q", says)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

func TestOpenNone(t *testing.T) {
	for _, spec := range []string{"", "none"} {
		s, err := Open(spec, t.TempDir(), noEnv)
		if err != nil || s != nil {
			t.Errorf("Open(%q) = %v, %v; want nil, nil", spec, s, err)
		}
		if s.Enabled() {
			t.Errorf("Open(%q) is enabled", spec)
		}
	}
}

func TestOpenBadSpec(t *testing.T) {
	key := goodHex(t, 1)
	for _, c := range []struct {
		spec string
		says string
	}{
		{key, "must be file:PATH, credential:NAME"}, // a key pasted where the spec goes
		{"File:/etc/execlaw/keystore.key", "must be file:PATH"},
		{"/etc/execlaw/keystore.key", "must be file:PATH"},
		{"tpm:0", "must be file:PATH"},
		{"file:", "needs a path"},
		{"credential:", "needs a name"},
		{"credential:../etc/shadow", "not a credential name"},
		{"credential:a/b", "not a credential name"},
		{"credential:..", "not a credential name"},
		{"credential:.", "not a credential name"},
	} {
		t.Run(c.spec, func(t *testing.T) {
			s, err := Open(c.spec, t.TempDir(), func(string) string { return t.TempDir() })
			if s != nil {
				t.Error("a store was returned")
			}
			wantErr(t, err, c.says)
			if strings.Contains(err.Error(), key) {
				t.Errorf("error quotes the key: %v", err)
			}
		})
	}
}

func TestOpenFile(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	path := writeKey(t, filepath.Join(dir, "keystore.key"), goodHex(t, 1)+"\n", 0o600)
	s, err := Open("file:"+path, data, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if want := "file " + path + " (key id " + s.KeyID() + ")"; s.String() != want {
		t.Errorf("String = %q, want %q", s, want)
	}
	if want := newStore(t, 1).KeyID(); s.KeyID() != want {
		t.Errorf("key id %s, want %s (the key New derives from the same bytes)", s.KeyID(), want)
	}
	// Opened again, as after a restart, it opens what it sealed.
	sealed, err := s.Seal("sess-1", []byte(testKey))
	if err != nil {
		t.Fatal(err)
	}
	again, err := Open("file:"+path, data, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := again.Open("sess-1", sealed); err != nil || string(got) != testKey {
		t.Errorf("reopened store: %v", err)
	}
	// A relative path is made absolute.
	t.Chdir(dir)
	if s, err := Open("file:keystore.key", data, noEnv); err != nil || !strings.Contains(s.String(), "file "+path+" ") {
		t.Errorf("relative path: %v, %v", s, err)
	}
	// getenv nil reads the real environment (nothing needed here).
	if _, err := Open("file:"+path, data, nil); err != nil {
		t.Errorf("nil getenv: %v", err)
	}
	// A data directory is required for the check.
	_, err = Open("file:"+path, "", noEnv)
	wantErr(t, err, "no data directory")
}

// Permission bits: the file may be read by its owner only. (Tests run as
// root here, which reads any file; the check is on the mode itself.)
func TestOpenFileMode(t *testing.T) {
	for _, c := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o700, true}, // owner only, if odd
		{0o644, false},
		{0o640, false},
		{0o604, false},
		{0o660, false},
		{0o620, false}, // group may replace it
		{0o602, false},
		{0o444, false},
		{0o666, false},
	} {
		t.Run(c.mode.String(), func(t *testing.T) {
			path := writeKey(t, filepath.Join(t.TempDir(), "k"), goodHex(t, 1), c.mode)
			s, err := Open("file:"+path, t.TempDir(), noEnv)
			if c.ok {
				if err != nil || s == nil {
					t.Errorf("refused: %v", err)
				}
				return
			}
			wantErr(t, err, path, "chmod 0600", "owner only")
		})
	}
}

func TestOpenFileNotRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fifo, sub, "/dev/null"} {
		_, err := Open("file:"+path, t.TempDir(), noEnv)
		wantErr(t, err, "not a regular file")
	}
	_, err := Open("file:"+filepath.Join(dir, "missing"), t.TempDir(), noEnv)
	wantErr(t, err, "does not exist", "execlaw keystore init")
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	_, err = Open("file:"+dangling, t.TempDir(), noEnv)
	wantErr(t, err, "does not exist")
}

func TestOpenFileHardLink(t *testing.T) {
	dir := t.TempDir()
	path := writeKey(t, filepath.Join(dir, "k"), goodHex(t, 1), 0o600)
	if err := os.Link(path, filepath.Join(dir, "k2")); err != nil {
		t.Fatal(err)
	}
	_, err := Open("file:"+path, t.TempDir(), noEnv)
	wantErr(t, err, "2 hard links")
}

// The key must not be in the data directory, however it is reached.
func TestOpenFileInsideDataDir(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	key := goodHex(t, 1)

	inside := writeKey(t, filepath.Join(data, "keystore.key"), key, 0o600)
	deep := writeKey(t, filepath.Join(data, "a", "b", "keystore.key"), key, 0o600)
	dots := writeKey(t, filepath.Join(data, "..keystore.key"), key, 0o600)
	// A link outside, to a file inside.
	linkOut := filepath.Join(root, "outside.key")
	if err := os.Symlink(inside, linkOut); err != nil {
		t.Fatal(err)
	}
	// A directory outside that is a link to one inside.
	linkDir := filepath.Join(root, "etc")
	if err := os.Symlink(filepath.Join(data, "a"), linkDir); err != nil {
		t.Fatal(err)
	}
	// The data directory given through a link, the key by its real path.
	dataLink := filepath.Join(root, "data-link")
	if err := os.Symlink(data, dataLink); err != nil {
		t.Fatal(err)
	}
	// Beside it, with a name that starts the same: outside.
	beside := writeKey(t, filepath.Join(root, "data2", "keystore.key"), key, 0o600)
	besideFile := writeKey(t, filepath.Join(root, "data.key"), key, 0o600)
	// A data directory that does not exist yet, under a linked parent.
	realParent := filepath.Join(root, "real")
	future := writeKey(t, filepath.Join(realParent, "new-data", "keystore.key"), key, 0o600)
	if err := os.Symlink(realParent, filepath.Join(root, "parent-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(future); err != nil { // only the directory is needed
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Dir(future)); err != nil {
		t.Fatal(err)
	}
	futureKey := writeKey(t, filepath.Join(realParent, "k.key"), key, 0o600)

	for _, c := range []struct {
		name, key, data string
		inside          bool
	}{
		{"in the data directory", inside, data, true},
		{"deep in it", deep, data, true},
		{"in it, named ..keystore.key", dots, data, true},
		{"through a symlinked file", linkOut, data, true},
		{"through a symlinked directory", filepath.Join(linkDir, "b", "keystore.key"), data, true},
		{"data directory through a symlink", inside, dataLink, true},
		{"data directory with a trailing slash", inside, data + "/", true},
		{"data directory as a relative path", inside, "data", true},
		{"the data directory is /", beside, "/", true},
		{"a sibling directory with the same prefix", beside, data, false},
		{"a sibling file with the same prefix", besideFile, data, false},
		{"data directory not created yet", futureKey, filepath.Join(root, "parent-link", "new-data"), false},
		{"a linked data directory holding the key", futureKey, filepath.Join(root, "parent-link"), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Chdir(root)
			s, err := Open("file:"+c.key, c.data, noEnv)
			if !c.inside {
				if err != nil || s == nil {
					t.Errorf("refused: %v", err)
				}
				return
			}
			wantErr(t, err, "inside the data directory", c.key)
		})
	}
}

func TestOpenFileContents(t *testing.T) {
	key := operatorKey(t, 1)
	good := hex.EncodeToString(key)
	for _, c := range []struct {
		name     string
		contents string
		says     string // empty: accepted
	}{
		{"hex", good, ""},
		{"hex and a newline", good + "\n", ""},
		{"hex and CRLF", good + "\r\n", ""},
		{"upper case hex", strings.ToUpper(good), ""},
		{"spaces around", "  \n" + good + "\n\n", ""},
		{"empty", "", "is empty"},
		{"white space only", " \n\t\n", "is empty"},
		{"63 digits", good[:63], "holds 63 characters, want 64 hex digits"},
		{"66 digits", good + "ab", "holds 66 characters"},
		{"16 bytes in hex", good[:32], "holds 32 characters"},
		{"raw bytes", string(key), "raw bytes are not accepted"},
		{"base64", base64.StdEncoding.EncodeToString(key), "base64 is not accepted"},
		{"a space inside", good[:31] + " " + good[32:], "not a hex digit at position 32"},
		{"0x prefix", "0x" + good[2:], "not a hex digit at position 2"},
		{"a password", "hunter2hunter2hunter2hunter2hunter2hunter2hunter2hunter2hunter2h", "not a hex digit"},
		{"zeros", strings.Repeat("0", 64), "only 1 distinct byte values"},
		{"a repeated pattern", strings.Repeat("0123456789abcdef", 4), "only 8 distinct"},
		{"hex-encoded text", hex.EncodeToString([]byte("Correct-Horse-Battery-Staple!?#X")), "printable text"},
		{"too large", good + strings.Repeat("\n", maxKeyFile), "too large"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeKey(t, filepath.Join(t.TempDir(), "k"), c.contents, 0o600)
			s, err := Open("file:"+path, t.TempDir(), noEnv)
			if c.says == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if s.KeyID() != newStore(t, 1).KeyID() {
					t.Error("another key was read")
				}
				return
			}
			wantErr(t, err, c.says, path, "execlaw keystore init")
			// The error never shows what the file holds.
			trimmed := strings.TrimSpace(c.contents)
			if len(trimmed) >= 8 && strings.Contains(err.Error(), trimmed[:8]) {
				t.Errorf("error shows the contents: %v", err)
			}
		})
	}
}

func TestOpenCredential(t *testing.T) {
	creds, data := t.TempDir(), t.TempDir()
	writeKey(t, filepath.Join(creds, "execlaw-keystore"), goodHex(t, 1)+"\n", 0o400) // as systemd writes them
	writeKey(t, filepath.Join(creds, "loose"), goodHex(t, 1), 0o644)
	env := func(dir string) func(string) string {
		return func(k string) string {
			if k == CredentialsDirectoryEnv {
				return dir
			}
			return ""
		}
	}

	s, err := Open("credential:execlaw-keystore", data, env(creds))
	if err != nil {
		t.Fatal(err)
	}
	if want := "systemd credential execlaw-keystore (key id " + newStore(t, 1).KeyID() + ")"; s.String() != want {
		t.Errorf("String = %q, want %q", s, want)
	}

	// Not started by systemd with credentials.
	_, err = Open("credential:execlaw-keystore", data, noEnv)
	wantErr(t, err, "$CREDENTIALS_DIRECTORY is not set", "LoadCredential=execlaw-keystore:", "LoadCredentialEncrypted=execlaw-keystore:")

	// Started with credentials, but not this one.
	_, err = Open("credential:other", data, env(creds))
	wantErr(t, err, `no credential "other"`, filepath.Join(creds, "other"), "LoadCredential=other:")

	// The same checks as a file.
	_, err = Open("credential:loose", data, env(creds))
	wantErr(t, err, "mode 0644")
	_, err = Open("credential:execlaw-keystore", creds, env(creds))
	wantErr(t, err, "inside the data directory")

	// getenv nil reads the process environment.
	t.Setenv(CredentialsDirectoryEnv, creds)
	if _, err := Open("credential:execlaw-keystore", data, nil); err != nil {
		t.Errorf("from the environment: %v", err)
	}
}

func TestGenerateFile(t *testing.T) {
	dir := t.TempDir()
	old := syscall.Umask(0o277) // GenerateFile sets 0600 whatever the umask
	t.Cleanup(func() { syscall.Umask(old) })

	a, b := filepath.Join(dir, "a.key"), filepath.Join(dir, "b.key")
	for _, p := range []string{a, b} {
		if err := GenerateFile(p); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", p, fi.Mode())
		}
		text, _ := os.ReadFile(p)
		if len(text) != 2*KeySize+1 || text[len(text)-1] != '\n' {
			t.Errorf("%s: %d bytes, want %d hex digits and a newline", p, len(text), 2*KeySize)
		}
	}
	ta, _ := os.ReadFile(a)
	tb, _ := os.ReadFile(b)
	if bytes.Equal(ta, tb) {
		t.Error("two generated keys are equal")
	}
	sa, err := Open("file:"+a, t.TempDir(), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := Open("file:"+b, t.TempDir(), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := sb.Seal("sess-1", []byte(testKey))
	if _, err := sa.Open("sess-1", sealed); !errors.Is(err, ErrOtherKey) {
		t.Errorf("a key from another generated file: %v", err)
	}

	// Never replaces a file.
	if err := GenerateFile(a); !errors.Is(err, os.ErrExist) {
		t.Errorf("over an existing file: %v", err)
	}
	if again, _ := os.ReadFile(a); !bytes.Equal(again, ta) {
		t.Error("the existing key file changed")
	}
	// Nor follows a link, dangling or not.
	target := filepath.Join(dir, "target")
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := GenerateFile(link); !errors.Is(err, os.ErrExist) {
		t.Errorf("through a dangling link: %v", err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Error("the link's target was created")
	}
	// A directory that does not exist: an error, nothing left behind.
	if err := GenerateFile(filepath.Join(dir, "no", "k")); err == nil {
		t.Error("no error for a missing directory")
	}
}

// The key file parser takes anything without panicking, and accepts only
// 64 hex digits with white space around them.
func FuzzParseKey(f *testing.F) {
	f.Add([]byte(goodHex(f, 1) + "\n"))
	f.Add([]byte(""))
	f.Add([]byte(strings.Repeat("0", 64)))
	f.Add(operatorKey(f, 1))
	f.Fuzz(func(t *testing.T, raw []byte) {
		key, err := parseKey(raw)
		if err != nil {
			if key != nil {
				t.Fatal("key returned with an error")
			}
			return
		}
		text := bytes.TrimSpace(raw)
		if len(key) != KeySize || !strings.EqualFold(hex.EncodeToString(key), string(text)) {
			t.Fatalf("accepted %q as %x", raw, key)
		}
	})
}
