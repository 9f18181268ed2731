package trust

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// t0 is the tests' "now": when the key directories are created.
var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func newDir(t testing.TB, opts InitOptions) string {
	t.Helper()
	dir := t.TempDir()
	if err := Init(dir, t0, opts); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustLoad(t testing.TB, dir string) *Keys {
	t.Helper()
	k, err := LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustVerifier(t testing.TB, root []byte) *Verifier {
	t.Helper()
	v, err := NewVerifier(root, t0)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func rootOf(t testing.TB, k *Keys, n int64) []byte {
	t.Helper()
	b, err := k.RootVersion(n)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// state is revision rev of car-1's vehicle half, issued at t0 and valid
// for a week.
func state(rev int64) hubv1.DesiredState {
	return hubv1.DesiredState{
		Vehicle:  "car-1",
		Half:     hubv1.HalfVehicle,
		Revision: rev,
		IssuedAt: t0,
		Expires:  t0.Add(7 * 24 * time.Hour),
		Deployments: []hubv1.DeploymentRevision{{
			Name: "shuttle", Generation: 3,
			Chart: hubv1.ChartRef{Source: "fleet", Name: "shuttle", Version: "1.2.0", Digest: "sha256:00"},
		}},
		Placement: []hubv1.ComponentPlacement{{Deployment: "shuttle", Component: "nav", Policy: "auto", Place: "vehicle", Reason: "fits"}},
		Objects:   []json.RawMessage{json.RawMessage(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"nav","namespace":"default"},"data":{"a":"b"}}`)},
	}
}

func mustSign(t testing.TB, k *Keys, s hubv1.DesiredState) hubv1.Desired {
	t.Helper()
	d, err := k.Sign(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// signRaw signs any payload with k's targets signers, as a compromised or
// buggy hub could.
func signRaw(t testing.TB, k *Keys, payloadType string, payload []byte, outer hubv1.DesiredState) hubv1.Desired {
	t.Helper()
	d := mustSign(t, k, outer)
	d.Envelope = hubv1.Envelope{PayloadType: payloadType, Payload: payload}
	d.Digest = Digest(payload)
	for _, s := range k.signers {
		sig, err := s.Sign(context.Background(), paeOf(payloadType, payload))
		if err != nil {
			t.Fatal(err)
		}
		d.Envelope.Signatures = append(d.Envelope.Signatures, hubv1.Signature{KeyID: s.KeyID(), Sig: sig})
	}
	return d
}

func paeOf(typ string, payload []byte) []byte {
	return fmt.Appendf(nil, "DSSEv1 %d %s %d %s", len(typ), typ, len(payload), payload)
}

// wantRefusal fails t unless err is a *RefusalError with reason r that
// also matches r's sentinel with errors.Is.
func wantRefusal(t testing.TB, err error, r Reason) {
	t.Helper()
	var re *RefusalError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T), want a refusal with reason %s", err, err, r)
	}
	if re.Reason != r {
		t.Fatalf("reason %s (%v), want %s", re.Reason, err, r)
	}
	if !errors.Is(err, sentinels[r]) {
		t.Fatalf("errors.Is(%v, %v) is false", err, sentinels[r])
	}
}

// ecdsaSigner is a Signer with an in-memory ECDSA P-256 key: a stand-in for
// a KMS, to run the suite on a second implementation of the port.
type ecdsaSigner struct {
	key *ecdsa.PrivateKey
	id  string
}

var _ Signer = (*ecdsaSigner)(nil)

func newECDSASigner(t testing.TB) *ecdsaSigner {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := KeyID(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &ecdsaSigner{key: key, id: id}
}

func (s *ecdsaSigner) KeyID() string            { return s.id }
func (s *ecdsaSigner) Public() crypto.PublicKey { return &s.key.PublicKey }
func (s *ecdsaSigner) Sign(_ context.Context, data []byte) ([]byte, error) {
	h := sha256.Sum256(data)
	return ecdsa.SignASN1(rand.Reader, s.key, h[:])
}

func newEd25519Signer(t testing.TB) *FileSigner {
	t.Helper()
	s, err := generateKey()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rootSpec describes a root built by hand, for roots Init and Rotate would
// never write.
type rootSpec struct {
	version          int64
	expires          time.Time
	root             []Signer
	rootThreshold    int
	targets          []Signer
	targetsThreshold int
	signers          []Signer // who signs it
	// edit changes the root before it is signed.
	edit func(*rootMeta)
}

func buildRoot(t testing.TB, s rootSpec) []byte {
	t.Helper()
	if s.expires.IsZero() {
		s.expires = t0.Add(DefaultRootExpiry)
	}
	md := metadata.Root(s.expires)
	md.Signed.Version = s.version
	add := func(signers []Signer, roles ...string) {
		for _, sg := range signers {
			key, err := metadata.KeyFromPublicKey(sg.Public())
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range roles {
				if err := md.Signed.AddKey(key, r); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	add(s.root, metadata.ROOT)
	add(s.targets, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP)
	md.Signed.Roles[metadata.ROOT].Threshold = max(s.rootThreshold, 1)
	for _, r := range []string{metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		md.Signed.Roles[r].Threshold = max(s.targetsThreshold, 1)
	}
	if s.edit != nil {
		s.edit(md)
	}
	if err := signRoot(context.Background(), md, s.signers); err != nil {
		t.Fatal(err)
	}
	b, err := md.ToBytes(true)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// keyFiles lists dir/sub's file names.
func keyFiles(t testing.TB, dir, sub string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, sub))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
