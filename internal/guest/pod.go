package guest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
)

// A guest in a Kubernetes pod is reached over the cluster network, where
// anyone may connect, so the channel the VMs get for free (a private serial
// port or vsock) is rebuilt from TLS and a bearer token: the host dials the
// pod on TCP, pins the session's own certificate, sends the session's token,
// and once the guest accepts it the connection carries the same yamux
// session a VM's virtio-serial port does. Every stream of that session is
// one connection for the control API, exactly as in a VM.

// Pod channel constants shared by the guest and the host.
const (
	// PodPort is the TCP port the guest listens on in a pod.
	PodPort = 7600
	// PodServerName is the DNS name the certificate is issued for and the
	// host verifies, whatever address it dials.
	PodServerName = "execlaw-guest"
	// DefaultPodSecretDir is where the pod's Secret is mounted.
	DefaultPodSecretDir = "/run/execlaw/secret"

	// Files of the secret directory, and keys of SecretData.
	PodTokenFile = "token"
	PodCertFile  = "tls.crt"
	PodKeyFile   = "tls.key"

	// MinPodTokenBytes and MaxPodTokenBytes bound the token's length.
	MinPodTokenBytes = 32
	MaxPodTokenBytes = 1024
)

// ErrPodAuth is returned when the guest refused the token or presented
// another certificate than the pinned one: retrying will not help unless the
// credentials change.
var ErrPodAuth = errors.New("guest: pod authentication failed")

const (
	podCertValidity = 20 * 365 * 24 * time.Hour // outlives any session: the pin, not the date, is what is checked
	podClockSkew    = time.Hour                 // NotBefore backdated, for a node whose clock is behind
	podHandshake    = 10 * time.Second          // TLS and token exchange, on both sides
	maxSecretBytes  = 64 << 10                  // per secret file
)

// The token exchange after the TLS handshake: the host sends podHello, the
// token's length (2 bytes, big endian) and the token; the guest answers
// podAccept, or closes the connection. Nothing else is sent before yamux.
const (
	podHello  = "execlaw-pod/1\n"
	podAccept = "execlaw-pod/1 ok\n"
)

// PodCredentials are one session's secrets for its pod: the token the host
// authenticates with and the certificate and key the guest serves TLS with.
type PodCredentials struct {
	Token   string
	CertPEM []byte
	KeyPEM  []byte
}

// NewPodCredentials makes fresh credentials for sessionID: a random 256-bit
// token and a self-signed ECDSA P-256 certificate for PodServerName whose
// subject names the session.
func NewPodCredentials(sessionID string) (PodCredentials, error) {
	if sessionID == "" || len(sessionID) > 64 || strings.ContainsFunc(sessionID, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
		return PodCredentials{}, fmt.Errorf("pod credentials: session ID %q: want 1 to 64 printable ASCII characters", sessionID)
	}
	var tok [32]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return PodCredentials{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return PodCredentials{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return PodCredentials{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: sessionID, Organization: []string{"execlaw"}},
		DNSNames:              []string{PodServerName},
		NotBefore:             now.Add(-podClockSkew),
		NotAfter:              now.Add(podCertValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, // and not a CA: nothing else can chain to the pinned certificate
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return PodCredentials{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return PodCredentials{}, err
	}
	return PodCredentials{
		Token:   hex.EncodeToString(tok[:]),
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// SecretData is the content of the pod's Secret, keyed by the file names
// the guest reads from its secret directory.
func (c PodCredentials) SecretData() map[string][]byte {
	return map[string][]byte{
		PodTokenFile: []byte(c.Token),
		PodCertFile:  bytes.Clone(c.CertPEM),
		PodKeyFile:   bytes.Clone(c.KeyPEM),
	}
}

// LoadPodCredentials reads the guest's credentials from the files of dir
// and checks them as the guest needs them: a long enough token, a
// certificate for PodServerName, and the key of that certificate.
func LoadPodCredentials(dir string) (PodCredentials, error) {
	var c PodCredentials
	var files [3][]byte
	for i, name := range []string{PodTokenFile, PodCertFile, PodKeyFile} {
		b, err := readSecretFile(filepath.Join(dir, name))
		if err != nil {
			return PodCredentials{}, fmt.Errorf("secret %s: %w", name, err)
		}
		files[i] = b
	}
	// A token file written by hand usually ends in a newline.
	c.Token = strings.TrimSpace(string(files[0]))
	c.CertPEM, c.KeyPEM = files[1], files[2]
	if _, err := c.serverConfig(); err != nil {
		return PodCredentials{}, fmt.Errorf("secret directory %s: %w", dir, err)
	}
	return c, nil
}

func readSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSecretBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxSecretBytes)
	}
	return b, nil
}

// checkToken refuses tokens too short to be secret and anything that is not
// one printable word, which a newline or space in the file would otherwise
// silently become part of.
func checkToken(tok string) error {
	switch {
	case len(tok) < MinPodTokenBytes:
		return fmt.Errorf("token is %d bytes, want at least %d", len(tok), MinPodTokenBytes)
	case len(tok) > MaxPodTokenBytes:
		return fmt.Errorf("token is %d bytes, want at most %d", len(tok), MaxPodTokenBytes)
	case strings.ContainsFunc(tok, func(r rune) bool { return r <= 0x20 || r >= 0x7f }):
		return errors.New("token holds characters other than printable ASCII without spaces")
	}
	return nil
}

// podLeaf parses certPEM, which must hold exactly one certificate, issued
// for PodServerName and valid now.
func podLeaf(certPEM []byte) (*x509.Certificate, error) {
	block, rest := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("certificate: no PEM CERTIFICATE block")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("certificate: more than one PEM block; the pin is one certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	if err := leaf.VerifyHostname(PodServerName); err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	if now := time.Now(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("certificate: valid from %s to %s, not now", leaf.NotBefore.Format(time.RFC3339), leaf.NotAfter.Format(time.RFC3339))
	}
	return leaf, nil
}

// serverConfig checks the credentials as the guest uses them and returns
// the guest's TLS configuration.
func (c PodCredentials) serverConfig() (*tls.Config, error) {
	if err := checkToken(c.Token); err != nil {
		return nil, err
	}
	if _, err := podLeaf(c.CertPEM); err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("key does not go with the certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13}, nil
}

// clientConfig checks the credentials as the host uses them (the key is
// the guest's alone) and returns the host's TLS configuration, which trusts
// the session's certificate and nothing else.
func (c PodCredentials) clientConfig() (*tls.Config, error) {
	if err := checkToken(c.Token); err != nil {
		return nil, err
	}
	leaf, err := podLeaf(c.CertPEM)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return &tls.Config{
		RootCAs:    roots,
		ServerName: PodServerName,
		MinVersion: tls.VersionTLS13,
		// The roots already admit only this certificate, as it is no CA;
		// the explicit pin keeps that true whatever the chain building does.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, leaf.Raw) {
				return fmt.Errorf("%w: the guest presented another certificate than the pinned one", ErrPodAuth)
			}
			return nil
		},
	}, nil
}

// tokenDigest is what tokens are compared by: equal-length digests make the
// constant-time comparison hide the token's length too.
func tokenDigest(tok []byte) [sha256.Size]byte { return sha256.Sum256(tok) }

func tokenMatches(want [sha256.Size]byte, got []byte) bool {
	d := tokenDigest(got)
	return subtle.ConstantTimeCompare(want[:], d[:]) == 1
}

// podHelloMessage is the host's side of the token exchange.
func podHelloMessage(tok string) []byte {
	b := make([]byte, 0, len(podHello)+2+len(tok))
	b = append(b, podHello...)
	b = append(b, byte(len(tok)>>8), byte(len(tok)))
	return append(b, tok...)
}

func podYamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = io.Discard
	c.ConnectionWriteTimeout = 30 * time.Second
	c.StreamOpenTimeout = 30 * time.Second
	return c
}
