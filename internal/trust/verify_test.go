package trust

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

var want1 = Expect{Vehicle: "car-1", Half: hubv1.HalfVehicle}

// TestRoundTrip signs and verifies with each Signer implementation: the
// file signer (Ed25519) and an in-memory ECDSA P-256 signer standing in for
// a KMS.
func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name    string
		targets func(t *testing.T) []Signer
	}{
		{"ed25519 file signer", func(t *testing.T) []Signer { return []Signer{newEd25519Signer(t)} }},
		{"ecdsa p256 signer", func(t *testing.T) []Signer { return []Signer{newECDSASigner(t)} }},
		{"threshold 2 of ed25519 and ecdsa", func(t *testing.T) []Signer {
			return []Signer{newEd25519Signer(t), newECDSASigner(t)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rootKey := newEd25519Signer(t)
			targets := tc.targets(t)
			root := buildRoot(t, rootSpec{version: 1, root: []Signer{rootKey}, targets: targets, targetsThreshold: len(targets), signers: []Signer{rootKey}})
			k, err := NewKeys([][]byte{root}, targets...)
			if err != nil {
				t.Fatal(err)
			}
			s := state(1)
			d := mustSign(t, k, s)
			if d.Vehicle != s.Vehicle || d.Half != s.Half || d.Revision != 1 || d.RootVersion != 1 ||
				!d.IssuedAt.Equal(s.IssuedAt) || !d.Expires.Equal(s.Expires) || !strings.HasPrefix(d.Digest, "sha256:") ||
				d.Envelope.PayloadType != hubv1.PayloadTypeDesired || len(d.Envelope.Signatures) != len(targets) {
				t.Fatalf("signed document's fields: %+v", d)
			}
			// Through JSON, as the agent gets it.
			wire, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			var got hubv1.Desired
			if err := json.Unmarshal(wire, &got); err != nil {
				t.Fatal(err)
			}
			v := mustVerifier(t, root)
			out, err := v.Verify(got, want1, t0.Add(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(&s, out); diff != "" {
				t.Errorf("verified state (-signed +verified):\n%s", diff)
			}
		})
	}
}

// TestVerifyRefuses covers every refusal, each with the reason the agent
// reports.
func TestVerifyRefuses(t *testing.T) {
	k := mustLoad(t, newDir(t, InitOptions{}))
	root1 := rootOf(t, k, 1)
	other := mustLoad(t, newDir(t, InitOptions{}))
	k2 := mustLoad(t, newDir(t, InitOptions{TargetsKeys: 2, TargetsThreshold: 2}))

	now := t0.Add(time.Hour)
	rootExpired := k.RootExpires().Add(time.Hour)
	lateState := state(1)
	lateState.IssuedAt = k.RootExpires().Add(-time.Hour)
	lateState.Expires = k.RootExpires().Add(30 * 24 * time.Hour)

	for _, tc := range []struct {
		name   string
		keys   *Keys // whose root the verifier trusts; k if nil
		doc    func() hubv1.Desired
		expect Expect
		now    time.Time
		reason Reason // "" means accepted
	}{
		{name: "accepted", doc: func() hubv1.Desired { return mustSign(t, k, state(1)) }},
		{name: "accepted issued 5 min ahead", doc: func() hubv1.Desired {
			s := state(1)
			s.IssuedAt = now.Add(MaxClockSkew)
			return mustSign(t, k, s)
		}},
		{name: "accepted with threshold 2", keys: k2, doc: func() hubv1.Desired { return mustSign(t, k2, state(1)) }},
		{name: "wrong payload type", doc: func() hubv1.Desired {
			d := mustSign(t, k, state(1))
			d.Envelope.PayloadType = "application/vnd.in-toto+json"
			return d
		}, reason: ReasonPayloadType},
		{name: "payload type changed and signed", doc: func() hubv1.Desired {
			b, _ := json.Marshal(state(1))
			return signRaw(t, k, "application/json", b, state(1))
		}, reason: ReasonPayloadType},
		{name: "wrong key", doc: func() hubv1.Desired { return mustSign(t, other, state(1)) }, reason: ReasonSignature},
		{name: "wrong key under a targets key id", doc: func() hubv1.Desired {
			d := mustSign(t, other, state(1))
			d.Envelope.Signatures[0].KeyID = k.signers[0].KeyID()
			return d
		}, reason: ReasonSignature},
		{name: "no signatures", doc: func() hubv1.Desired {
			d := mustSign(t, k, state(1))
			d.Envelope.Signatures = nil
			return d
		}, reason: ReasonSignature},
		{name: "too few signatures for threshold 2", keys: k2, doc: func() hubv1.Desired {
			d := mustSign(t, k2, state(1))
			d.Envelope.Signatures = d.Envelope.Signatures[:1]
			return d
		}, reason: ReasonSignature},
		{name: "one key twice for threshold 2", keys: k2, doc: func() hubv1.Desired {
			d := mustSign(t, k2, state(1))
			d.Envelope.Signatures[1] = d.Envelope.Signatures[0]
			return d
		}, reason: ReasonSignature},
		{name: "tampered payload", doc: func() hubv1.Desired {
			d := mustSign(t, k, state(1))
			d.Envelope.Payload = bytes.Replace(d.Envelope.Payload, []byte(`"a":"b"`), []byte(`"a":"c"`), 1)
			return d
		}, reason: ReasonSignature},
		{name: "tampered payload and digest", doc: func() hubv1.Desired {
			d := mustSign(t, k, state(1))
			d.Envelope.Payload = bytes.Replace(d.Envelope.Payload, []byte(`"revision":1`), []byte(`"revision":9`), 1)
			d.Digest = Digest(d.Envelope.Payload)
			return d
		}, reason: ReasonSignature},
		{name: "tampered signature", doc: func() hubv1.Desired {
			d := mustSign(t, k, state(1))
			d.Envelope.Signatures[0].Sig[3] ^= 1
			return d
		}, reason: ReasonSignature},
		{name: "tampered digest", doc: func() hubv1.Desired {
			d := mustSign(t, k, state(1))
			d.Digest = Digest([]byte("something else"))
			return d
		}, reason: ReasonDigest},
		{name: "payload not JSON", doc: func() hubv1.Desired {
			return signRaw(t, k, hubv1.PayloadTypeDesired, []byte("not json"), state(1))
		}, reason: ReasonDecode},
		{name: "payload with unknown field", doc: func() hubv1.Desired {
			b, _ := json.Marshal(state(1))
			b = append([]byte(`{"install":"everything",`), b[1:]...)
			return signRaw(t, k, hubv1.PayloadTypeDesired, b, state(1))
		}, reason: ReasonDecode},
		{name: "payload with trailing data", doc: func() hubv1.Desired {
			b, _ := json.Marshal(state(1))
			return signRaw(t, k, hubv1.PayloadTypeDesired, append(b, []byte(`{}`)...), state(1))
		}, reason: ReasonDecode},
		{name: "unsigned revision differs", doc: func() hubv1.Desired {
			d := mustSign(t, k, state(1))
			d.Revision = 7
			return d
		}, reason: ReasonMismatch},
		{name: "other vehicle", doc: func() hubv1.Desired {
			s := state(1)
			s.Vehicle = "car-2"
			return mustSign(t, k, s)
		}, reason: ReasonVehicle},
		{name: "no expected vehicle", doc: func() hubv1.Desired { return mustSign(t, k, state(1)) },
			expect: Expect{Half: hubv1.HalfVehicle}, reason: ReasonVehicle},
		{name: "other half", doc: func() hubv1.Desired {
			s := state(1)
			s.Half = hubv1.HalfCloud
			return mustSign(t, k, s)
		}, reason: ReasonHalf},
		{name: "old revision", doc: func() hubv1.Desired { return mustSign(t, k, state(3)) },
			expect: Expect{Vehicle: "car-1", Half: hubv1.HalfVehicle, After: 5}, reason: ReasonRollback},
		{name: "same revision", doc: func() hubv1.Desired { return mustSign(t, k, state(5)) },
			expect: Expect{Vehicle: "car-1", Half: hubv1.HalfVehicle, After: 5}, reason: ReasonRollback},
		{name: "next revision", doc: func() hubv1.Desired { return mustSign(t, k, state(6)) },
			expect: Expect{Vehicle: "car-1", Half: hubv1.HalfVehicle, After: 5}},
		{name: "expired", doc: func() hubv1.Desired { return mustSign(t, k, state(1)) },
			now: t0.Add(8 * 24 * time.Hour), reason: ReasonExpired},
		{name: "expires now", doc: func() hubv1.Desired { return mustSign(t, k, state(1)) },
			now: state(1).Expires, reason: ReasonExpired},
		{name: "issued in the future", doc: func() hubv1.Desired {
			s := state(1)
			s.IssuedAt = now.Add(MaxClockSkew + time.Second)
			return mustSign(t, k, s)
		}, reason: ReasonFuture},
		{name: "expired root", doc: func() hubv1.Desired { return mustSign(t, k, lateState) },
			now: rootExpired, reason: ReasonRootExpired},
		{name: "same document before the root expired", doc: func() hubv1.Desired { return mustSign(t, k, lateState) },
			now: lateState.IssuedAt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := root1
			if tc.keys != nil {
				_, root = tc.keys.Root()
			}
			if tc.expect == (Expect{}) {
				tc.expect = want1
			}
			if tc.now.IsZero() {
				tc.now = now
			}
			v := mustVerifier(t, root)
			out, err := v.Verify(tc.doc(), tc.expect, tc.now)
			if tc.reason == "" {
				if err != nil || out == nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if out != nil {
				t.Errorf("returned a state with the error")
			}
			wantRefusal(t, err, tc.reason)
		})
	}
}

// TestDuplicateKeyCountsOnce: a root may name one public key under two key
// IDs (here the hex of the Ed25519 key in lower and upper case); it counts
// once towards the threshold, as in go-tuf.
func TestDuplicateKeyCountsOnce(t *testing.T) {
	rootKey, target := newEd25519Signer(t), newEd25519Signer(t)
	var upperID string
	root := buildRoot(t, rootSpec{
		version: 1, root: []Signer{rootKey}, targets: []Signer{target}, targetsThreshold: 2, signers: []Signer{rootKey},
		edit: func(md *rootMeta) {
			orig := md.Signed.Keys[target.KeyID()]
			k := &metadata.Key{Type: orig.Type, Scheme: orig.Scheme, Value: metadata.KeyVal{PublicKey: strings.ToUpper(orig.Value.PublicKey)}}
			id, err := k.ID()
			if err != nil {
				t.Fatal(err)
			}
			upperID = id
			md.Signed.Keys[id] = k
			for _, r := range []string{RoleTargets, "snapshot", "timestamp"} {
				md.Signed.Roles[r].KeyIDs = append(md.Signed.Roles[r].KeyIDs, id)
			}
		},
	})
	v := mustVerifier(t, root)
	if upperID == target.KeyID() {
		t.Fatal("test root did not get a second key id")
	}
	k, err := NewKeys([][]byte{root}, target)
	if err == nil {
		t.Fatalf("NewKeys accepted one signer for threshold 2: %v", k)
	}
	payload, _ := json.Marshal(state(1))
	sig, _ := target.Sign(context.Background(), paeOf(hubv1.PayloadTypeDesired, payload))
	d := hubv1.Desired{Vehicle: "car-1", Half: hubv1.HalfVehicle, Revision: 1, IssuedAt: t0, Expires: state(1).Expires,
		Digest: Digest(payload), Envelope: hubv1.Envelope{PayloadType: hubv1.PayloadTypeDesired, Payload: payload,
			Signatures: []hubv1.Signature{{KeyID: target.KeyID(), Sig: sig}, {KeyID: upperID, Sig: sig}}}}
	_, err = v.Verify(d, want1, t0)
	wantRefusal(t, err, ReasonSignature)
}

func TestSignRefuses(t *testing.T) {
	k := mustLoad(t, newDir(t, InitOptions{}))
	for _, tc := range []struct {
		name string
		edit func(*hubv1.DesiredState)
		want string
	}{
		{"no vehicle", func(s *hubv1.DesiredState) { s.Vehicle = "" }, "no vehicle"},
		{"bad half", func(s *hubv1.DesiredState) { s.Half = "both" }, `half "both"`},
		{"revision 0", func(s *hubv1.DesiredState) { s.Revision = 0 }, "revision 0"},
		{"expires before issued", func(s *hubv1.DesiredState) { s.Expires = s.IssuedAt }, "is not after issuedAt"},
		{"issued after the root expires", func(s *hubv1.DesiredState) {
			s.IssuedAt = k.RootExpires().Add(time.Second)
			s.Expires = s.IssuedAt.Add(time.Hour)
		}, "rotate a key to renew it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := state(1)
			tc.edit(&s)
			_, err := k.Sign(context.Background(), s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestNewVerifierRefuses(t *testing.T) {
	rootKey, target, stranger := newEd25519Signer(t), newEd25519Signer(t), newEd25519Signer(t)
	good := rootSpec{version: 1, root: []Signer{rootKey}, targets: []Signer{target}, signers: []Signer{rootKey}}
	for _, tc := range []struct {
		name   string
		root   func() []byte
		reason Reason
	}{
		{"garbage", func() []byte { return []byte("{") }, ReasonRootInvalid},
		{"not a root", func() []byte { return []byte(`{"signed":{"_type":"targets"},"signatures":[]}`) }, ReasonRootInvalid},
		{"version 0", func() []byte {
			s := good
			s.version = 0
			return buildRoot(t, s)
		}, ReasonRootInvalid},
		{"threshold above keys", func() []byte {
			s := good
			s.targetsThreshold = 2
			return buildRoot(t, s)
		}, ReasonRootInvalid},
		{"no targets role", func() []byte {
			s := good
			s.edit = func(md *rootMeta) { delete(md.Signed.Roles, RoleTargets) }
			return buildRoot(t, s)
		}, ReasonRootInvalid},
		{"unknown key id", func() []byte {
			s := good
			s.edit = func(md *rootMeta) { md.Signed.Roles[RoleTargets].KeyIDs = []string{"abc"} }
			return buildRoot(t, s)
		}, ReasonRootInvalid},
		{"unsigned", func() []byte {
			s := good
			s.signers = nil
			return buildRoot(t, s)
		}, ReasonRootSignature},
		{"signed by a stranger", func() []byte {
			s := good
			s.signers = []Signer{stranger}
			return buildRoot(t, s)
		}, ReasonRootSignature},
		{"signed by the targets key", func() []byte {
			s := good
			s.signers = []Signer{target}
			return buildRoot(t, s)
		}, ReasonRootSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVerifier(tc.root(), t0)
			if v != nil {
				t.Error("returned a verifier with the error")
			}
			wantRefusal(t, err, tc.reason)
		})
	}
	t.Run("expired root is accepted", func(t *testing.T) {
		s := good
		s.expires = t0.Add(-time.Hour)
		v := mustVerifier(t, buildRoot(t, s))
		if !v.RootExpires().Equal(t0.Add(-time.Hour)) {
			t.Errorf("RootExpires %s", v.RootExpires())
		}
	})
}
