package keystore

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Spec prefixes, as --key-store (EXECLAW_KEY_STORE) takes them.
const (
	FilePrefix       = "file:"
	CredentialPrefix = "credential:"
)

// CredentialsDirectoryEnv is the variable systemd sets for a service that
// has credentials (LoadCredential=, LoadCredentialEncrypted=, ...).
const CredentialsDirectoryEnv = "CREDENTIALS_DIRECTORY"

// maxKeyFile bounds what is read of a key file: a key, white space, no more.
const maxKeyFile = 4096

// Open opens the key store that spec names, as --key-store says it:
//
//   - "" or "none": no key store; Open returns nil, nil, and the nil *Store
//     says so (keys stay in memory).
//   - "file:PATH": the operator key in the file PATH (see the package
//     comment for its format and the checks on it).
//   - "credential:NAME": systemd's credential NAME, the file
//     $CREDENTIALS_DIRECTORY/NAME, which systemd writes for LoadCredential=
//     and, decrypted, for LoadCredentialEncrypted=; same format and checks.
//
// dataDir is the server's data directory, which the key must not be in.
// getenv reads the environment (os.Getenv when nil). Errors never quote the
// key, nor an unrecognised spec (which might be a key pasted by mistake).
func Open(spec, dataDir string, getenv func(string) string) (*Store, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	switch {
	case spec == "" || spec == "none":
		return nil, nil
	case strings.HasPrefix(spec, FilePrefix):
		path := strings.TrimPrefix(spec, FilePrefix)
		if path == "" {
			return nil, errors.New("keystore: file: needs a path (file:/etc/execlaw/keystore.key)")
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, fmt.Errorf("keystore: key file %s: %w", path, err)
		}
		return openFile(abs, "file "+abs, dataDir)
	case strings.HasPrefix(spec, CredentialPrefix):
		name := strings.TrimPrefix(spec, CredentialPrefix)
		if err := checkCredentialName(name); err != nil {
			return nil, err
		}
		dir := getenv(CredentialsDirectoryEnv)
		if dir == "" {
			return nil, fmt.Errorf("keystore: credential:%s: $%s is not set: systemd sets it for a service with LoadCredential=%s:PATH or LoadCredentialEncrypted=%s:PATH; was the server started by such a unit? (outside systemd, use file:PATH)",
				name, CredentialsDirectoryEnv, name, name)
		}
		path := filepath.Join(dir, name)
		if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("keystore: credential:%s: systemd passed no credential %q (no %s): add LoadCredential=%s:PATH or LoadCredentialEncrypted=%s:PATH to the unit, under that name",
				name, name, path, name, name)
		}
		return openFile(path, "systemd credential "+name, dataDir)
	default:
		return nil, errors.New("keystore: --key-store must be file:PATH, credential:NAME or empty (keys in memory only); the value given is neither (not shown, in case it is a key)")
	}
}

// checkCredentialName accepts what systemd accepts as a credential name: a
// file name, no "/", not "." or "..", at most 255 bytes.
func checkCredentialName(name string) error {
	switch {
	case name == "":
		return errors.New("keystore: credential: needs a name (credential:execlaw-keystore)")
	case name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255:
		return fmt.Errorf("keystore: credential:%q: not a credential name (a file name, no /)", name)
	}
	return nil
}

// openFile reads and checks the operator key at path (absolute).
func openFile(path, source, dataDir string) (*Store, error) {
	if dataDir == "" {
		return nil, errors.New("keystore: no data directory given to check the key file against")
	}
	real, err := filepath.EvalSymlinks(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("keystore: key file %s does not exist (create one with `execlaw keystore init %s`)", path, path)
	}
	if err != nil {
		return nil, fmt.Errorf("keystore: key file: %w", err)
	}
	data, err := resolve(dataDir)
	if err != nil {
		return nil, fmt.Errorf("keystore: data directory: %w", err)
	}
	if within(data, real) {
		via := ""
		if real != path {
			via = " (it is " + real + ")"
		}
		return nil, fmt.Errorf("keystore: key file %s%s is inside the data directory %s: a copy of the data directory would then hold the key that opens the keys sealed in it; keep it outside, e.g. /etc/execlaw/keystore.key, or use a systemd credential",
			path, via, dataDir)
	}
	// Stat first so that a FIFO or device is refused without opening it
	// (opening a FIFO would block); then compare with what was opened.
	fi, err := os.Stat(real)
	if err != nil {
		return nil, fmt.Errorf("keystore: key file: %w", err)
	}
	if err := checkMode(path, fi); err != nil {
		return nil, err
	}
	f, err := os.Open(real)
	if err != nil {
		return nil, fmt.Errorf("keystore: key file: %w (it must be readable by the server's user, and by no one else)", err)
	}
	defer f.Close()
	ofi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("keystore: key file: %w", err)
	}
	if !os.SameFile(fi, ofi) {
		return nil, fmt.Errorf("keystore: key file %s changed while it was opened", path)
	}
	if err := checkMode(path, ofi); err != nil {
		return nil, err
	}
	if st, ok := ofi.Sys().(*syscall.Stat_t); ok && uint64(st.Nlink) > 1 {
		return nil, fmt.Errorf("keystore: key file %s has %d hard links: another name for it might be inside the data directory; give it one link only", path, uint64(st.Nlink))
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	defer clear(raw)
	if err != nil {
		return nil, fmt.Errorf("keystore: key file: %w", err)
	}
	key, err := parseKey(raw)
	defer clear(key)
	if err != nil {
		return nil, fmt.Errorf("keystore: key file %s %w", path, err)
	}
	return New(key, source)
}

// checkMode refuses anything but a regular file without permission bits for
// group or others.
func checkMode(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("keystore: key file %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("keystore: key file %s has mode %04o: group or others may read or change it; it must be readable by its owner only (chmod 0600 or 0400), the owner being the server's user",
			path, perm)
	}
	return nil
}

// parseKey reads a key file's contents: KeySize bytes as hex digits, white
// space around them ignored. Errors start with a verb phrase ("holds ...",
// "is not random ...") and never quote the contents.
func parseKey(raw []byte) ([]byte, error) {
	text := bytes.TrimSpace(raw)
	const digits = 2 * KeySize
	const how = "; generate one with `execlaw keystore init PATH` or `od -An -N32 -tx1 /dev/urandom | tr -d ' \\n'`"
	switch {
	case len(raw) > maxKeyFile:
		return nil, fmt.Errorf("is too large: more than %d bytes, want %d hex digits%s", maxKeyFile, digits, how)
	case len(text) == 0:
		return nil, fmt.Errorf("is empty: want %d hex digits (%d random bytes)%s", digits, KeySize, how)
	case len(text) != digits:
		hint := ""
		if n, err := base64.StdEncoding.Decode(make([]byte, len(text)), text); err == nil && n == KeySize {
			hint = " (base64 is not accepted)"
		} else if len(raw) == KeySize {
			hint = " (raw bytes are not accepted)"
		}
		return nil, fmt.Errorf("holds %d characters, want %d hex digits (%d random bytes)%s%s", len(text), digits, KeySize, hint, how)
	}
	for i, c := range text {
		if !isHexDigit(c) {
			return nil, fmt.Errorf("has a character that is not a hex digit at position %d: want %d hex digits (%d random bytes)%s", i+1, digits, KeySize, how)
		}
	}
	key := make([]byte, KeySize)
	if _, err := hex.Decode(key, text); err != nil {
		return nil, errors.New("is not hex") // not reached: the digits were checked
	}
	if err := checkRandom(key); err != nil {
		clear(key)
		return nil, fmt.Errorf("%w%s", err, how)
	}
	return key, nil
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// resolve makes p absolute with its symbolic links resolved, as far as it
// exists: a data directory not created yet resolves through its nearest
// existing parent.
func resolve(p string) (string, error) {
	p, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	rest := ""
	for {
		r, err := filepath.EvalSymlinks(p)
		if err == nil {
			return filepath.Join(r, rest), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return filepath.Join(p, rest), nil
		}
		rest = filepath.Join(filepath.Base(p), rest)
		p = parent
	}
}

// within reports whether p is dir or below it; both absolute and clean.
func within(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	if err != nil {
		return false
	}
	return rel == "." || rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// GenerateFile writes a new operator key to path: KeySize random bytes as
// hex digits and a newline, mode 0600 (owned by the caller). It never
// replaces an existing file, nor follows a symbolic link at path.
func GenerateFile(path string) (err error) {
	key := make([]byte, KeySize)
	defer clear(key)
	rand.Read(key)
	text := hex.AppendEncode(make([]byte, 0, 2*KeySize+1), key)
	defer clear(text)
	text = append(text, '\n')
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("keystore: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
			err = fmt.Errorf("keystore: %s: %w", path, err)
		}
	}()
	if err := f.Chmod(0o600); err != nil { // whatever the umask did
		return err
	}
	if _, err := f.Write(text); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}
