package trust

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// FuzzVerify feeds arbitrary envelopes to Verify. Seeds are real documents
// (signed by the trusted targets key) that each fail one late check, and
// their mutations. Nothing the fuzzer makes may be accepted: accepting
// would need a signature the fuzzer cannot make. Verify must never panic,
// and must refuse with a known reason.
func FuzzVerify(f *testing.F) {
	k := mustLoad(f, newDir(f, InitOptions{}))
	v := mustVerifier(f, rootOf(f, k, 1))
	want := Expect{Vehicle: "car-1", Half: hubv1.HalfVehicle, After: 5}
	now := t0.Add(time.Hour)

	add := func(d hubv1.Desired) {
		var keyID string
		var sig []byte
		if len(d.Envelope.Signatures) > 0 {
			keyID, sig = d.Envelope.Signatures[0].KeyID, d.Envelope.Signatures[0].Sig
		}
		f.Add(d.Envelope.PayloadType, d.Envelope.Payload, keyID, sig, d.Digest, d.Revision)
	}
	edit := func(rev int64, fn func(*hubv1.DesiredState)) hubv1.Desired {
		s := state(rev)
		fn(&s)
		return mustSign(f, k, s)
	}
	add(mustSign(f, k, state(5)))                                                        // rollback: same revision
	add(mustSign(f, k, state(4)))                                                        // rollback: older
	add(edit(6, func(s *hubv1.DesiredState) { s.Vehicle = "car-2" }))                    // other vehicle
	add(edit(6, func(s *hubv1.DesiredState) { s.Half = hubv1.HalfCloud }))               // other half
	add(edit(6, func(s *hubv1.DesiredState) { s.Expires = t0.Add(time.Minute) }))        // expired
	add(edit(6, func(s *hubv1.DesiredState) { s.IssuedAt = now.Add(10 * time.Minute) })) // future
	add(signRaw(f, k, hubv1.PayloadTypeDesired, []byte(`{"vehicle":"car-1","x":1}`), state(6)))
	add(signRaw(f, k, "text/plain", []byte(`{}`), state(6)))
	add(hubv1.Desired{})

	f.Fuzz(func(t *testing.T, payloadType string, payload []byte, keyID string, sig []byte, digest string, revision int64) {
		d := hubv1.Desired{
			Vehicle: "car-1", Half: hubv1.HalfVehicle, Revision: revision, Digest: digest, IssuedAt: t0, Expires: state(1).Expires,
			Envelope: hubv1.Envelope{PayloadType: payloadType, Payload: payload,
				Signatures: []hubv1.Signature{{KeyID: keyID, Sig: sig}, {KeyID: keyID, Sig: sig}}},
		}
		s, err := v.Verify(d, want, now)
		if err == nil || s != nil {
			t.Fatalf("accepted a document the fuzzer made: %+v", s)
		}
		var re *RefusalError
		if !errors.As(err, &re) || sentinels[re.Reason] == nil {
			t.Fatalf("error %v is not a refusal with a known reason", err)
		}
	})
}

// FuzzUpdateRoot feeds arbitrary bytes to NewVerifier (which must not
// panic) and to UpdateRoot on a verifier trusting root 1, which must accept
// nothing: the seeds are every wrong next root, and the right one (root 2
// signed by both root keys) is not among them.
func FuzzUpdateRoot(f *testing.F) {
	dir := newDir(f, InitOptions{})
	mustRotate(f, dir, RoleRoot, t0, 2)
	mustRotate(f, dir, RoleRoot, t0, 3)
	k := mustLoad(f, dir)
	r1, r2, r3 := rootOf(f, k, 1), rootOf(f, k, 2), rootOf(f, k, 3)
	for _, id := range append(roleKeyIDs(f, r1, RoleRoot), roleKeyIDs(f, r2, RoleRoot)...) {
		md, _ := (&rootMeta{}).FromBytes(r2)
		md.Signatures = slices.DeleteFunc(md.Signatures, func(s metadata.Signature) bool { return s.KeyID != id })
		b, _ := md.ToBytes(false)
		f.Add(b) // root 2 signed by one of the two keys it needs
	}
	compact := func(b []byte) []byte {
		var out bytes.Buffer
		if err := json.Compact(&out, b); err != nil {
			f.Fatal(err)
		}
		return out.Bytes()
	}
	f.Add(compact(r3))
	f.Add(bytes.Replace(compact(r2), []byte(`"version":2`), []byte(`"version":2,"extra":true`), 1))
	attacker := newEd25519Signer(f)
	f.Add(compact(buildRoot(f, rootSpec{version: 2, root: []Signer{attacker}, targets: []Signer{attacker}, signers: []Signer{attacker}})))
	f.Add([]byte(`{"signed":{"_type":"root","version":2,"spec_version":"1.0","expires":"2030-01-01T00:00:00Z","keys":{},"roles":{}},"signatures":[]}`))
	f.Add([]byte(`{"signed":{"_type":"root"},"signatures":[{"keyid":"a","sig":"zz"}]}`))

	base := mustVerifier(f, r1)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = NewVerifier(b, t0)
		v := &Verifier{cur: base.current()}
		err := v.UpdateRoot(b, t0)
		if err == nil {
			t.Fatalf("accepted a root the fuzzer made:\n%s", b)
		}
		var re *RefusalError
		if !errors.As(err, &re) {
			t.Fatalf("error %v is not a refusal", err)
		}
		if n, _ := v.Root(); n != 1 {
			t.Fatalf("trusted version is %d after a refusal", n)
		}
	})
}

// benchState is a desired state the size of a small chart's render: 30
// objects of about 600 bytes, some 20 KB of payload.
func benchState(rev int64) hubv1.DesiredState {
	s := state(rev)
	s.Objects = nil
	for i := range 30 {
		s.Objects = append(s.Objects, json.RawMessage(fmt.Sprintf(
			`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"c%d","namespace":"default","labels":{"app.kubernetes.io/name":"c%d","app.kubernetes.io/instance":"shuttle"}},`+
				`"spec":{"replicas":1,"selector":{"matchLabels":{"app.kubernetes.io/name":"c%d"}},"template":{"metadata":{"labels":{"app.kubernetes.io/name":"c%d"}},`+
				`"spec":{"containers":[{"name":"main","image":"registry.example.com/fleet/c%d@sha256:%064d","resources":{"requests":{"cpu":"100m","memory":"128Mi"}},`+
				`"env":[{"name":"MODE","value":"vehicle"},{"name":"LOG","value":"info"}]}]}}}}`, i, i, i, i, i, i)))
	}
	return s
}

// BenchmarkSign: the hub signs one document per vehicle half; after one
// change to a deployment that targets 10,000 vehicles it signs 10,000.
func BenchmarkSign(b *testing.B) {
	k := mustLoad(b, newDir(b, InitOptions{}))
	s := benchState(1)
	d := mustSign(b, k, s)
	b.SetBytes(int64(len(d.Envelope.Payload)))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Sign(ctx, s); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Seconds())/float64(b.N)*10000, "s/10k-docs")
}

// BenchmarkVerify: what each agent spends on a document.
func BenchmarkVerify(b *testing.B) {
	k := mustLoad(b, newDir(b, InitOptions{}))
	d := mustSign(b, k, benchState(1))
	v := mustVerifier(b, rootOf(b, k, 1))
	b.SetBytes(int64(len(d.Envelope.Payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(d, want1, t0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Seconds())/float64(b.N)*10000, "s/10k-docs")
}
