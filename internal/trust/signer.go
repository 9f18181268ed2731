package trust

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"github.com/misaki-io/misaki/internal/durable"
	"os"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Signer is a key that signs: the port a KMS implements. FileSigner is the
// file implementation.
//
// Sign signs the whole message (a DSSE PAE, or a root's canonical JSON); a
// signer whose algorithm signs a digest hashes the message itself. Keys in
// a root may be Ed25519 (TUF scheme "ed25519") or ECDSA P-256 with SHA-256
// ("ecdsa-sha2-nistp256", ASN.1 signatures).
type Signer interface {
	// KeyID is the TUF key ID of Public (KeyID computes it).
	KeyID() string
	Public() crypto.PublicKey
	Sign(ctx context.Context, data []byte) ([]byte, error)
}

// FileSigner is an Ed25519 private key in a PKCS#8 PEM file, mode 0600.
type FileSigner struct {
	path string
	key  ed25519.PrivateKey
	id   string
}

var _ Signer = (*FileSigner)(nil)

// KeyID returns the TUF key ID of pub: the hex SHA-256 of the canonical JSON
// of its TUF key record.
func KeyID(pub crypto.PublicKey) (string, error) {
	k, err := metadata.KeyFromPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("trust: key id: %w", err)
	}
	id, err := k.ID()
	if err != nil {
		return "", fmt.Errorf("trust: key id: %w", err)
	}
	return id, nil
}

// GenerateFileSigner creates a new Ed25519 key and writes it to path, which
// must not exist, as PKCS#8 PEM with mode 0600.
func GenerateFileSigner(path string) (*FileSigner, error) {
	s, err := generateKey()
	if err != nil {
		return nil, err
	}
	if err := s.write(path); err != nil {
		return nil, err
	}
	return s, nil
}

// generateKey makes a new Ed25519 key not yet written anywhere.
func generateKey() (*FileSigner, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("trust: generate key: %w", err)
	}
	return newFileSigner("", key)
}

// write stores the key at path, which must not exist.
func (s *FileSigner) write(path string) error {
	der, err := x509.MarshalPKCS8PrivateKey(s.key)
	if err != nil {
		return fmt.Errorf("trust: encode key: %w", err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := durable.WriteNew(path, pemBytes, 0o600); err != nil {
		return fmt.Errorf("trust: write key: %w", err)
	}
	s.path = path
	return nil
}

// LoadFileSigner reads an Ed25519 PKCS#8 PEM private key. It refuses a file
// that group or others may read.
func LoadFileSigner(path string) (*FileSigner, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("trust: load key: %w", err)
	}
	// Others may not read it and nobody but the owner may write it. Group
	// read is allowed: a Kubernetes Secret volume with an fsGroup gives a
	// key mode 0440 (owner root, the pod's group), and that is how hub
	// replicas share the signing key.
	if m := fi.Mode().Perm(); m&0o037 != 0 {
		return nil, fmt.Errorf("trust: load key %s: mode %#o lets others read it or group write it; chmod 600 (or 640) it", path, m)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trust: load key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("trust: load key %s: no PEM \"PRIVATE KEY\" block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("trust: load key %s: %w", path, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("trust: load key %s: %T is not an Ed25519 key", path, k)
	}
	return newFileSigner(path, key)
}

func newFileSigner(path string, key ed25519.PrivateKey) (*FileSigner, error) {
	id, err := KeyID(key.Public())
	if err != nil {
		return nil, err
	}
	return &FileSigner{path: path, key: key, id: id}, nil
}

// KeyID returns the key's TUF key ID.
func (s *FileSigner) KeyID() string { return s.id }

// Public returns the ed25519.PublicKey.
func (s *FileSigner) Public() crypto.PublicKey { return s.key.Public() }

// Path is the key's file.
func (s *FileSigner) Path() string { return s.path }

// Sign signs data with Ed25519 (the whole message; Ed25519 hashes it
// itself). It does not block, so ctx is not consulted.
func (s *FileSigner) Sign(_ context.Context, data []byte) ([]byte, error) {
	return ed25519.Sign(s.key, data), nil
}
