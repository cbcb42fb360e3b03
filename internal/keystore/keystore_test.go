package keystore

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// testKey is a provider key as users paste them.
const testKey = "sk-proj-Zq8vN3xK7wLm2RtY5bHc9DfG4jPs6UeA"

// operatorKey returns a fixed, random-looking operator key: n differs per key.
func operatorKey(t testing.TB, n byte) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = byte(i*37+11) ^ n*101
	}
	if err := checkRandom(k); err != nil {
		t.Fatalf("test key %d: %v", n, err)
	}
	return k
}

func newStore(t testing.TB, n byte) *Store {
	t.Helper()
	s, err := New(operatorKey(t, n), fmt.Sprintf("test key %d", n))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRoundTrip(t *testing.T) {
	s := newStore(t, 1)
	for _, key := range []string{testKey, "x", "", strings.Repeat("k", 10000)} {
		sealed, err := s.Seal("sess-1", []byte(key))
		if err != nil {
			t.Fatal(err)
		}
		if len(sealed) != len(key)+Overhead {
			t.Errorf("sealed %d bytes: %d long, want %d", len(key), len(sealed), len(key)+Overhead)
		}
		if sealed[0] != Version {
			t.Errorf("version byte %d", sealed[0])
		}
		got, err := s.Open("sess-1", sealed)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		if string(got) != key {
			t.Errorf("round trip of %d bytes gave %d bytes back", len(key), len(got))
		}
	}
	// The same operator key, a new Store (as after a restart), opens it.
	sealed, _ := s.Seal("sess-1", []byte(testKey))
	if got, err := newStore(t, 1).Open("sess-1", sealed); err != nil || string(got) != testKey {
		t.Errorf("a store with the same key: %q, %v", got, err)
	}
}

func TestSealRefusesEmptySessionID(t *testing.T) {
	if _, err := newStore(t, 1).Seal("", []byte(testKey)); err == nil {
		t.Error("sealed for an empty session id")
	}
}

func TestSealsDiffer(t *testing.T) {
	s := newStore(t, 1)
	a, _ := s.Seal("sess-1", []byte(testKey))
	b, _ := s.Seal("sess-1", []byte(testKey))
	if bytes.Equal(a, b) {
		t.Fatal("two seals of one key are equal")
	}
	if bytes.Equal(a[1+idLen:headerLen], b[1+idLen:headerLen]) {
		t.Error("two seals share a nonce")
	}
	if !bytes.Equal(a[:1+idLen], b[:1+idLen]) {
		t.Error("version and key id differ between two seals of one store")
	}
}

// What the data directory will hold must not show the key, in any of the
// forms a store or a scan might see it in.
func TestSealedNeverShowsTheKey(t *testing.T) {
	s := newStore(t, 1)
	for i := range 200 {
		sealed, err := s.Seal(fmt.Sprintf("sess-%d", i), []byte(testKey))
		if err != nil {
			t.Fatal(err)
		}
		for _, form := range []string{string(sealed), hex.EncodeToString(sealed), base64.StdEncoding.EncodeToString(sealed)} {
			for j := 0; j+8 <= len(testKey); j++ {
				if strings.Contains(form, testKey[j:j+8]) {
					t.Fatalf("sealed key shows %q", testKey[j:j+8])
				}
			}
		}
	}
}

func TestOpenFailures(t *testing.T) {
	s := newStore(t, 1)
	sealed, err := s.Seal("sess-1", []byte(testKey))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newStore(t, 2).Seal("sess-1", []byte(testKey))
	flip := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 0x01
		return b
	}
	for _, c := range []struct {
		name    string
		session string
		sealed  []byte
		want    error
	}{
		{"another session", "sess-2", sealed, ErrNotOpened},
		{"session id with a suffix", "sess-1x", sealed, ErrNotOpened},
		{"empty session id", "", sealed, ErrNotOpened},
		{"another operator key", "sess-1", other, ErrOtherKey},
		{"version changed", "sess-1", flip(0), ErrVersion},
		{"version 0", "sess-1", append([]byte{0}, sealed[1:]...), ErrVersion},
		{"key id changed", "sess-1", flip(1 + idLen - 1), ErrOtherKey},
		{"nonce changed", "sess-1", flip(1 + idLen), ErrNotOpened},
		{"nonce end changed", "sess-1", flip(headerLen - 1), ErrNotOpened},
		{"ciphertext changed", "sess-1", flip(headerLen), ErrNotOpened},
		{"tag changed", "sess-1", flip(len(sealed) - 1), ErrNotOpened},
		{"truncated by one", "sess-1", sealed[:len(sealed)-1], ErrNotOpened},
		{"header and tag only", "sess-1", sealed[:Overhead], ErrNotOpened},
		{"shorter than the overhead", "sess-1", sealed[:Overhead-1], ErrMalformed},
		{"version byte only", "sess-1", sealed[:1], ErrMalformed},
		{"empty", "sess-1", nil, ErrMalformed},
		{"extended", "sess-1", append(bytes.Clone(sealed), 0), ErrNotOpened},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := s.Open(c.session, c.sealed)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if got != nil {
				t.Errorf("returned %d bytes with the error", len(got))
			}
			if strings.Contains(err.Error(), testKey[:8]) {
				t.Errorf("error shows the key: %v", err)
			}
		})
	}
}

// The version and key id are authenticated with the session id: a
// ciphertext sealed without them in its additional data does not open,
// although its header is right.
func TestHeaderIsAuthenticated(t *testing.T) {
	s := newStore(t, 1)
	sealed, _ := s.Seal("sess-1", []byte(testKey))
	nonce := sealed[1+idLen : headerLen]
	forged := append(bytes.Clone(sealed[:headerLen]), s.aead.Seal(nil, nonce, []byte(testKey), []byte("sess-1"))...)
	if _, err := s.Open("sess-1", forged); !errors.Is(err, ErrNotOpened) {
		t.Errorf("a ciphertext without the header in its additional data: %v", err)
	}
}

func TestOtherKeyErrorSaysSo(t *testing.T) {
	a, b := newStore(t, 1), newStore(t, 2)
	if a.KeyID() == b.KeyID() {
		t.Fatal("two operator keys have one id")
	}
	sealed, _ := b.Seal("sess-1", []byte(testKey))
	_, err := a.Open("sess-1", sealed)
	if !errors.Is(err, ErrOtherKey) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"another key", b.KeyID(), a.KeyID()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestNilStoreIsNone(t *testing.T) {
	var s *Store
	if s.Enabled() || s.KeyID() != "" {
		t.Error("a nil store is enabled")
	}
	if _, err := s.Seal("sess-1", []byte(testKey)); !errors.Is(err, ErrDisabled) {
		t.Errorf("Seal: %v", err)
	}
	if _, err := s.Open("sess-1", []byte{1}); !errors.Is(err, ErrDisabled) {
		t.Errorf("Open: %v", err)
	}
	if got := fmt.Sprint(s); !strings.Contains(got, "none") {
		t.Errorf("String = %q", got)
	}
}

// Nothing prints the operator key or the derived AES key: not String, not
// any fmt verb, not slog.
func TestStoreNeverPrintsItsKey(t *testing.T) {
	key := operatorKey(t, 3)
	s, err := New(key, "file /etc/execlaw/keystore.key")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.String(), "file /etc/execlaw/keystore.key (key id "+s.KeyID()+")"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	if len(s.KeyID()) != 2*idLen {
		t.Errorf("KeyID = %q", s.KeyID())
	}
	aesKey, err := hkdf.Key(sha256.New, key, nil, infoAEAD, 32)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	slog.New(slog.NewTextHandler(&log, nil)).Info("store", "store", s)
	slog.New(slog.NewJSONHandler(&log, nil)).Info("store", "store", s)
	outs := []string{log.String()}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"}
	for _, verb := range verbs {
		outs = append(outs, fmt.Sprintf(verb, s), fmt.Sprintf(verb, struct{ S *Store }{s}))
	}
	// These all go through String.
	for _, out := range outs {
		if !strings.Contains(out, s.KeyID()) || strings.Contains(out, "aead") || strings.Contains(out, "0x") {
			t.Errorf("output is not the description: %q", out)
		}
	}
	// A copy of the struct has no methods; fmt shows its fields, where the
	// cipher is only a pointer.
	for _, verb := range append(verbs, "%p") {
		outs = append(outs, fmt.Sprintf(verb, *s), fmt.Sprintf(verb, s))
	}
	for _, out := range outs {
		for _, k := range [][]byte{key, aesKey} {
			if strings.Contains(strings.ToLower(out), hex.EncodeToString(k[:8])) || bytes.Contains([]byte(out), k[:8]) ||
				strings.Contains(out, strings.Trim(fmt.Sprint(k[:8]), "[]")) {
				t.Errorf("output shows a key: %q", out)
			}
		}
	}
}

func TestNewRefusesWeakKeys(t *testing.T) {
	for _, c := range []struct {
		name string
		key  []byte
	}{
		{"short", operatorKey(t, 1)[:KeySize-1]},
		{"empty", nil},
		{"zeros", make([]byte, KeySize)},
		{"eight values repeated", bytes.Repeat([]byte{1, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}, 4)},
		{"printable text", []byte("correct horse battery staple 1234")},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := New(c.key, "test"); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	s := newStore(t, 1)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			id := fmt.Sprintf("sess-%d", i)
			for range 100 {
				sealed, err := s.Seal(id, []byte(testKey))
				if err != nil {
					t.Error(err)
					return
				}
				if got, err := s.Open(id, sealed); err != nil || string(got) != testKey {
					t.Errorf("%s: %v", id, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// Arbitrary input to Open never panics, and nothing opens that was not
// sealed: a success can only be a seed sealed here, with its session id.
func FuzzOpen(f *testing.F) {
	s := newStore(f, 1)
	sealed, _ := s.Seal("sess-1", []byte(testKey))
	other, _ := newStore(f, 2).Seal("sess-1", []byte(testKey))
	f.Add("sess-1", sealed)
	f.Add("sess-2", sealed)
	f.Add("sess-1", other)
	f.Add("sess-1", sealed[:Overhead])
	f.Add("sess-1", sealed[:1])
	f.Add("", []byte{})
	f.Add("sess-1", []byte{2, 0, 0})
	f.Fuzz(func(t *testing.T, session string, in []byte) {
		got, err := s.Open(session, in)
		if err != nil {
			if got != nil {
				t.Fatal("bytes returned with an error")
			}
			for _, known := range []error{ErrMalformed, ErrVersion, ErrOtherKey, ErrNotOpened} {
				if errors.Is(err, known) {
					return
				}
			}
			t.Fatalf("unexpected error %v", err)
		}
		// (Not compared with sealed itself: each fuzzing worker seals its
		// own seeds again, with other nonces.)
		if session != "sess-1" || string(got) != testKey {
			t.Fatalf("opened something not sealed here: session %q, %d bytes", session, len(got))
		}
	})
}
