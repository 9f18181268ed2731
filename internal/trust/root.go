package trust

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/cjson"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// Role names used here (TUF's top-level roles). Snapshot and timestamp are
// in every root because TUF requires them, but nothing here signs or reads
// snapshot or timestamp metadata: Init gives them the targets keys, and
// Rotate keeps them equal to the targets role.
const (
	RoleRoot    = metadata.ROOT
	RoleTargets = metadata.TARGETS
)

var topLevelRoles = []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP}

type rootMeta = metadata.Metadata[metadata.RootType]

// trusted is one parsed and checked root version. It is not changed after
// parseRoot returns, so a Verifier hands it to Verify without a lock.
type trusted struct {
	md      *rootMeta
	json    []byte
	version int64
	expires time.Time
	// targets are the targets role's keys by key ID, and threshold its
	// threshold.
	targets   map[string]verifyKey
	threshold int
}

// verifyKey is a targets key ready to check DSSE signatures.
type verifyKey struct {
	pub crypto.PublicKey
	// fingerprint is SHA-256 of the PKIX public key: two key IDs naming
	// one key count once towards a threshold (as go-tuf counts them).
	fingerprint [32]byte
}

// parseRoot decodes a root and checks that it is usable: type root, spec
// version 1.x, version >= 1, an expiry, all four top-level roles with a
// threshold of at least 1 that their keys can meet, every key ID known, and
// targets keys of a type Verify checks (Ed25519, ECDSA P-256). It does not
// check signatures.
func parseRoot(b []byte) (*trusted, error) {
	md, err := (&rootMeta{}).FromBytes(b)
	if err != nil {
		return nil, refuse(ReasonRootInvalid, "decode: %v", err)
	}
	s := &md.Signed
	switch {
	case s.Type != metadata.ROOT:
		return nil, refuse(ReasonRootInvalid, "_type %q, want root", s.Type)
	case !strings.HasPrefix(s.SpecVersion, "1."):
		return nil, refuse(ReasonRootInvalid, "spec_version %q, want 1.x", s.SpecVersion)
	case s.Version < 1:
		return nil, refuse(ReasonRootInvalid, "version %d, want >= 1", s.Version)
	case s.Expires.IsZero():
		return nil, refuse(ReasonRootInvalid, "no expiry")
	}
	t := &trusted{md: md, json: b, version: s.Version, expires: s.Expires, targets: map[string]verifyKey{}}
	for _, name := range topLevelRoles {
		r := s.Roles[name]
		if r == nil {
			return nil, refuse(ReasonRootInvalid, "version %d: no %s role", s.Version, name)
		}
		if r.Threshold < 1 || r.Threshold > len(r.KeyIDs) {
			return nil, refuse(ReasonRootInvalid, "version %d: %s role has threshold %d and %d keys", s.Version, name, r.Threshold, len(r.KeyIDs))
		}
		for i, id := range r.KeyIDs {
			if slices.Contains(r.KeyIDs[:i], id) {
				return nil, refuse(ReasonRootInvalid, "version %d: %s role lists key %s twice", s.Version, name, id)
			}
			k := s.Keys[id]
			if k == nil {
				return nil, refuse(ReasonRootInvalid, "version %d: %s role's key %s is not in keys", s.Version, name, id)
			}
			if name != metadata.TARGETS {
				continue
			}
			vk, err := newVerifyKey(k)
			if err != nil {
				return nil, refuse(ReasonRootInvalid, "version %d: targets key %s: %v", s.Version, id, err)
			}
			t.targets[id] = vk
		}
	}
	t.threshold = s.Roles[metadata.TARGETS].Threshold
	return t, nil
}

func newVerifyKey(k *metadata.Key) (verifyKey, error) {
	pub, err := k.ToPublicKey()
	if err != nil {
		return verifyKey{}, err
	}
	switch p := pub.(type) {
	case ed25519.PublicKey:
		if k.Scheme != metadata.KeySchemeEd25519 || len(p) != ed25519.PublicKeySize {
			return verifyKey{}, fmt.Errorf("ed25519 key with scheme %q", k.Scheme)
		}
	case *ecdsa.PublicKey:
		if k.Scheme != metadata.KeySchemeECDSA_SHA2_P256 || p.Curve != elliptic.P256() {
			return verifyKey{}, fmt.Errorf("ecdsa key on %s with scheme %q; only P-256 with ecdsa-sha2-nistp256", p.Curve.Params().Name, k.Scheme)
		}
	default:
		return verifyKey{}, fmt.Errorf("key type %q is not supported for targets (ed25519, ecdsa P-256)", k.Type)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return verifyKey{}, err
	}
	return verifyKey{pub: pub, fingerprint: sha256.Sum256(der)}, nil
}

func (k verifyKey) verify(msg, sig []byte) bool {
	switch p := k.pub.(type) {
	case ed25519.PublicKey:
		return ed25519.Verify(p, msg, sig)
	case *ecdsa.PublicKey:
		h := sha256.Sum256(msg)
		return ecdsa.VerifyASN1(p, h[:], sig)
	}
	return false
}

// verifyEnvelope checks that at least the threshold of distinct targets
// keys signed PAE(payloadType, payload). A signature whose key ID is not in
// the targets role, or whose key already counted, is skipped without a
// cryptographic check, so a long list of signatures costs at most one
// check per targets key.
func (t *trusted) verifyEnvelope(env *hubv1.Envelope) *RefusalError {
	pae := dsse.PAE(env.PayloadType, env.Payload)
	var counted [][32]byte
	for _, s := range env.Signatures {
		k, ok := t.targets[s.KeyID]
		if !ok || slices.Contains(counted, k.fingerprint) || !k.verify(pae, s.Sig) {
			continue
		}
		counted = append(counted, k.fingerprint)
		if len(counted) >= t.threshold {
			return nil
		}
	}
	return refuse(ReasonSignature, "%d valid signature(s) by root %d's targets keys, %d needed", len(counted), t.version, t.threshold)
}

// verifyNext applies TUF's root update rules to next: version exactly one
// above, signed by a threshold of this root's root keys and by a threshold
// of next's own root keys.
func (t *trusted) verifyNext(next *trusted) error {
	if next.version != t.version+1 {
		return refuse(ReasonRootVersion, "root version %d after trusted version %d; apply every version in order", next.version, t.version)
	}
	if err := t.md.VerifyDelegate(metadata.ROOT, next.md); err != nil {
		return refuse(ReasonRootSignature, "root %d is not signed by a threshold of root %d's root keys: %v", next.version, t.version, err)
	}
	if err := next.verifySelf(); err != nil {
		return err
	}
	return nil
}

// verifySelf checks that a threshold of the root's own root keys signed it.
func (t *trusted) verifySelf() error {
	if err := t.md.VerifyDelegate(metadata.ROOT, t.md); err != nil {
		return refuse(ReasonRootSignature, "root %d is not signed by a threshold of its own root keys: %v", t.version, err)
	}
	return nil
}

// signRoot adds a signature by each signer over the canonical JSON of the
// root's signed part, skipping keys that already signed.
func signRoot(ctx context.Context, md *rootMeta, signers []Signer) error {
	payload, err := cjson.EncodeCanonical(md.Signed)
	if err != nil {
		return fmt.Errorf("canonical root: %w", err)
	}
	for _, s := range signers {
		if slices.ContainsFunc(md.Signatures, func(x metadata.Signature) bool { return x.KeyID == s.KeyID() }) {
			continue
		}
		sig, err := s.Sign(ctx, payload)
		if err != nil {
			return fmt.Errorf("sign root with key %s: %w", s.KeyID(), err)
		}
		md.Signatures = append(md.Signatures, metadata.Signature{KeyID: s.KeyID(), Signature: sig})
	}
	return nil
}
