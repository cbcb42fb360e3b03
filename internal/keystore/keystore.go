// Package keystore seals model provider API keys at rest, so that sessions
// can resume after a server restart without asking for their key again.
//
// It is optional. Without it (the default) keys stay in the server's memory
// only and a restart loses them. With it, the server is given a key of the
// operator's (the "operator key") that lives outside the data directory: a
// file only its owner may read, or a systemd credential (LoadCredential= or
// LoadCredentialEncrypted=). What the data directory holds is then only
// sealed keys, which a copy of the data directory alone does not open.
//
// What it does not protect against: anyone who can read the operator key
// (root, the server's own user, a backup that holds both the data directory
// and the key file) or who controls the running server can open every sealed
// key. Use a systemd credential encrypted with the host key or a TPM
// (systemd-creds encrypt) to keep the operator key off the disk in the clear
// as well.
//
// # Operator key
//
// The key file (or credential) holds 32 random bytes written as 64 hex
// digits; surrounding white space, such as a final newline, is ignored.
// Raw bytes and base64 are refused, with a hint, as are keys that are
// plainly not random (fewer than 16 distinct byte values, or bytes that are
// all printable text, as when a password is hex-encoded). GenerateFile
// writes a good one; so does
//
//	od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
//
// The file must be a regular file with no permission bits for group or
// others (0600 or 0400), have a single link, and not be inside the data
// directory (symbolic links resolved, of both).
//
// # Sealed format
//
// A sealed key is
//
//	version (1 byte, 1) | key id (8 bytes) | nonce (12 bytes) | AES-256-GCM ciphertext and tag
//
// The AES-256 key and the key id are derived from the operator key with
// HKDF-SHA256 (no salt), under two fixed info strings, so the operator's
// bytes are never used directly and the id reveals nothing of the key. The
// nonce is random for every seal. The additional data is the version and
// key id followed by the session id, so a sealed key copied to another
// session, or given another version or key id, does not open. A key id that
// is not the store's gives ErrOtherKey: the store was opened with another
// operator key than the one that sealed it.
package keystore

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
)

// KeySize is the size of the operator key in bytes; the key file holds it
// as twice as many hex digits.
const KeySize = 32

// Version is the format version of what Seal writes, its first byte.
const Version = 1

const (
	idLen     = 8
	nonceLen  = 12
	headerLen = 1 + idLen + nonceLen
	tagLen    = 16

	// HKDF info strings: fixed, one per derived value.
	infoAEAD = "execlaw keystore v1: aes-256-gcm key"
	infoID   = "execlaw keystore v1: key id"
)

// Overhead is how many bytes longer a sealed key is than the key.
const Overhead = headerLen + tagLen

var (
	// ErrDisabled is returned by a nil *Store, which means "no key store".
	ErrDisabled = errors.New("keystore: no key store configured (keys stay in memory)")
	// ErrOtherKey means the sealed key names another operator key than the
	// store's: the key file or credential was replaced since it was sealed.
	ErrOtherKey = errors.New("keystore: sealed with another key")
	// ErrVersion means the sealed key's format version is not known.
	ErrVersion = errors.New("keystore: unknown sealed-key format version")
	// ErrMalformed means the sealed key is too short to be one.
	ErrMalformed = errors.New("keystore: malformed sealed key")
	// ErrNotOpened means the ciphertext did not authenticate: it was
	// tampered with, or sealed for another session.
	ErrNotOpened = errors.New("keystore: sealed key does not open (tampered with, or sealed for another session)")
)

// Store seals and opens keys with one operator key. It is safe for
// concurrent use. A nil *Store is valid and means that there is no key
// store: Seal and Open answer ErrDisabled and String says "none".
type Store struct {
	aead   cipher.AEAD
	id     [idLen]byte
	source string // where the operator key came from, for String
}

// New makes a store from an operator key itself (at least KeySize bytes,
// random); source says where it came from, for String ("file /etc/..."),
// and must not be the key. Open is the usual way in; New is for callers
// that hold a key already, and for tests.
func New(key []byte, source string) (*Store, error) {
	if len(key) < KeySize {
		return nil, fmt.Errorf("keystore: key of %d bytes, want at least %d", len(key), KeySize)
	}
	if err := checkRandom(key); err != nil {
		return nil, fmt.Errorf("keystore: key %w", err)
	}
	aeadKey, err := hkdf.Key(sha256.New, key, nil, infoAEAD, 32)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	defer clear(aeadKey)
	id, err := hkdf.Key(sha256.New, key, nil, infoID, idLen)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	block, err := aes.NewCipher(aeadKey)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	s := &Store{aead: aead, source: source}
	copy(s.id[:], id)
	return s, nil
}

// checkRandom refuses keys that are plainly not random bytes. Both tests
// wrongly refuse 32 random bytes with a probability far below 1e-12.
func checkRandom(key []byte) error {
	var seen [256]bool
	distinct, printable := 0, true
	for _, b := range key {
		if !seen[b] {
			seen[b] = true
			distinct++
		}
		if b < 0x20 || b > 0x7e {
			printable = false
		}
	}
	if distinct < 16 {
		return fmt.Errorf("is not random: only %d distinct byte values", distinct)
	}
	if printable {
		return errors.New("is not random: every byte is printable text (a hex-encoded password?)")
	}
	return nil
}

// Enabled reports whether s is a key store (not nil).
func (s *Store) Enabled() bool { return s != nil }

// KeyID is the operator key's id as 16 hex digits, as sealed keys carry it;
// it reveals nothing of the key. Empty for a nil store.
func (s *Store) KeyID() string {
	if s == nil {
		return ""
	}
	return hex.EncodeToString(s.id[:])
}

// String describes the store without revealing anything secret:
// "file /etc/execlaw/keystore.key (key id 1a2b3c4d5e6f7081)".
func (s *Store) String() string {
	if s == nil {
		return "none (keys stay in memory)"
	}
	return fmt.Sprintf("%s (key id %s)", s.source, s.KeyID())
}

// GoString keeps %#v to the description as well.
func (s *Store) GoString() string { return "keystore.Store{" + s.String() + "}" }

// Format prints the description for every verb, so that no verb prints the
// store's insides.
func (s *Store) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, s.GoString())
		return
	}
	io.WriteString(f, s.String())
}

// LogValue logs the description.
func (s *Store) LogValue() slog.Value { return slog.StringValue(s.String()) }

// additionalData is what GCM authenticates besides the ciphertext: the
// version and key id (fixed length), then the session id.
func additionalData(header []byte, sessionID string) []byte {
	ad := make([]byte, 0, 1+idLen+len(sessionID))
	ad = append(ad, header[:1+idLen]...)
	return append(ad, sessionID...)
}

// Seal encrypts key for the session sessionID (not empty). The result is
// Overhead bytes longer than key, differs at every call, and opens only with
// this store's operator key and the same session id.
func (s *Store) Seal(sessionID string, key []byte) ([]byte, error) {
	if s == nil {
		return nil, ErrDisabled
	}
	if sessionID == "" {
		return nil, errors.New("keystore: seal: empty session id")
	}
	out := make([]byte, headerLen, headerLen+len(key)+tagLen)
	out[0] = Version
	copy(out[1:], s.id[:])
	nonce := out[1+idLen : headerLen]
	rand.Read(nonce) // never fails (crypto/rand crashes the program instead)
	return s.aead.Seal(out, nonce, key, additionalData(out, sessionID)), nil
}

// Open decrypts what Seal returned for sessionID. Errors: ErrDisabled (nil
// store), ErrMalformed (too short), ErrVersion, ErrOtherKey (sealed with
// another operator key), ErrNotOpened (tampered with, or another session's);
// all match with errors.Is.
func (s *Store) Open(sessionID string, sealed []byte) ([]byte, error) {
	if s == nil {
		return nil, ErrDisabled
	}
	if len(sealed) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrMalformed)
	}
	if sealed[0] != Version {
		return nil, fmt.Errorf("%w %d (this server reads %d)", ErrVersion, sealed[0], Version)
	}
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w: %d bytes, at least %d expected", ErrMalformed, len(sealed), Overhead)
	}
	if id := sealed[1 : 1+idLen]; !bytes.Equal(id, s.id[:]) {
		return nil, fmt.Errorf("%w (key id %x), not this store's %s: the key file or credential was replaced since; the session's key must be given again",
			ErrOtherKey, id, s)
	}
	nonce := sealed[1+idLen : headerLen]
	key, err := s.aead.Open(nil, nonce, sealed[headerLen:], additionalData(sealed, sessionID))
	if err != nil {
		return nil, ErrNotOpened
	}
	return key, nil
}
