package trust

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"sync"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// MaxClockSkew is how far in the future (by the verifier's clock) a
// document's issuedAt may be. A vehicle's clock may lag the hub's; a
// document from much further ahead was made with a wrong clock, or to
// outlive its intended expiry.
const MaxClockSkew = 5 * time.Minute

// Expect is what the agent expects of the next document.
type Expect struct {
	Vehicle string // the agent's own vehicle ID
	Half    string // hubv1.HalfVehicle or hubv1.HalfCloud
	// After is the last revision applied (0 before the first); a document
	// must carry a higher one.
	After int64
}

// Verifier checks desired-state documents on the vehicle. Its state is the
// trusted root's JSON (Root), which the agent persists after every
// UpdateRoot and passes to NewVerifier on start. A Verifier is safe for
// concurrent use.
type Verifier struct {
	mu  sync.Mutex // guards cur
	cur *trusted   // never modified; UpdateRoot replaces it
}

// NewVerifier trusts rootJSON, a TUF root (any version: the one the vehicle
// was provisioned with, or the last one it persisted). The root must be
// well formed and signed by a threshold of its own root keys. A root that
// has expired by now is accepted here, so an agent that was off for longer
// than the root's lifetime can still walk the chain forward with
// UpdateRoot; Verify refuses every document until it has. (now refuses
// nothing; it is there so the agent's start-up reads like its other calls
// and so a later check, such as a warning for a root about to expire, needs
// no new signature.)
func NewVerifier(rootJSON []byte, now time.Time) (*Verifier, error) {
	t, err := parseRoot(bytes.Clone(rootJSON))
	if err != nil {
		return nil, err
	}
	if err := t.verifySelf(); err != nil {
		return nil, err
	}
	return &Verifier{cur: t}, nil
}

func (v *Verifier) current() *trusted {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.cur
}

// Root returns the trusted root's version and its JSON, as the agent should
// persist it.
func (v *Verifier) Root() (version int64, rootJSON []byte) {
	t := v.current()
	return t.version, bytes.Clone(t.json)
}

// RootExpires is the trusted root's expiry.
func (v *Verifier) RootExpires() time.Time { return v.current().expires }

// UpdateRoot moves trust to next, the root version after the trusted one,
// by TUF's rules: next's version is exactly the trusted version plus one,
// and next is signed by a threshold of the trusted root's root keys and by
// a threshold of its own. To catch up several versions, apply each in
// order (GET /v1/trust/root/{n}.json for n = version+1 up to the hub's
// newest), persisting Root after each.
//
// next may have expired by now. As in TUF's client workflow (spec 5.3.10:
// the freeze check comes after the loop over versions), an intermediate
// root's expiry does not matter: a vehicle offline for longer than a root's
// life must walk through roots that have expired since, or it would be
// stranded at the old one forever. Only the root in force when a document
// is verified must be unexpired, and Verify checks that
// (ReasonRootExpired). Refusals are *RefusalError with ReasonRootInvalid,
// ReasonRootVersion or ReasonRootSignature.
func (v *Verifier) UpdateRoot(next []byte, now time.Time) error {
	n, err := parseRoot(bytes.Clone(next))
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.cur.verifyNext(n); err != nil {
		return err
	}
	v.cur = n
	return nil
}

// Verify checks a signed document and returns its payload. It checks, in
// this order, and refuses with a *RefusalError carrying the reason of the
// first check that fails:
//
//  1. the envelope's payload type is hubv1.PayloadTypeDesired (ReasonPayloadType);
//  2. a threshold of distinct keys of the trusted root's targets role signed
//     the DSSE PAE (ReasonSignature);
//  3. d.Digest is "sha256:<hex>" of the payload (ReasonDigest);
//  4. the payload decodes as one DesiredState, with no unknown field or
//     trailing data (ReasonDecode), and the unsigned fields beside the
//     envelope agree with it (ReasonMismatch);
//  5. it is for want.Vehicle (ReasonVehicle) and want.Half (ReasonHalf);
//  6. its revision is above want.After (ReasonRollback);
//  7. it expires after now (ReasonExpired);
//  8. it was issued no later than now + MaxClockSkew (ReasonFuture);
//  9. the trusted root has not expired at now (ReasonRootExpired).
//
// The caller applies the returned state, not d's unsigned fields, and
// records its revision as the next want.After only once it has applied it.
func (v *Verifier) Verify(d hubv1.Desired, want Expect, now time.Time) (*hubv1.DesiredState, error) {
	t := v.current()
	env := &d.Envelope
	if env.PayloadType != hubv1.PayloadTypeDesired {
		return nil, refuse(ReasonPayloadType, "payload type %q, want %q", env.PayloadType, hubv1.PayloadTypeDesired)
	}
	if r := t.verifyEnvelope(env); r != nil {
		if d.RootVersion > t.version {
			r.Detail += "; the hub has root version " + strconv.FormatInt(d.RootVersion, 10) + ": update the trusted root first"
		}
		return nil, r
	}
	if got, want := d.Digest, Digest(env.Payload); got != want {
		return nil, refuse(ReasonDigest, "digest %q, payload's is %q", got, want)
	}
	s, err := decodeState(env.Payload)
	if err != nil {
		return nil, refuse(ReasonDecode, "%v", err)
	}
	if d.Vehicle != s.Vehicle || d.Half != s.Half || d.Revision != s.Revision || !d.IssuedAt.Equal(s.IssuedAt) || !d.Expires.Equal(s.Expires) {
		return nil, refuse(ReasonMismatch, "envelope says %s/%s revision %d, payload %s/%s revision %d",
			d.Vehicle, d.Half, d.Revision, s.Vehicle, s.Half, s.Revision)
	}
	switch {
	case want.Vehicle == "" || s.Vehicle != want.Vehicle:
		return nil, refuse(ReasonVehicle, "document is for vehicle %q, this is %q", s.Vehicle, want.Vehicle)
	case s.Half != want.Half:
		return nil, refuse(ReasonHalf, "document is for the %q half, want %q", s.Half, want.Half)
	case s.Revision <= want.After:
		return nil, refuse(ReasonRollback, "revision %d is not above %d, the last applied", s.Revision, want.After)
	case !s.Expires.After(now):
		return nil, refuse(ReasonExpired, "revision %d expired at %s, now is %s", s.Revision, s.Expires.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case s.IssuedAt.After(now.Add(MaxClockSkew)):
		return nil, refuse(ReasonFuture, "revision %d issued at %s, more than %s after now (%s)", s.Revision, s.IssuedAt.UTC().Format(time.RFC3339), MaxClockSkew, now.UTC().Format(time.RFC3339))
	case now.After(t.expires):
		return nil, refuse(ReasonRootExpired, "trusted root version %d expired at %s; fetch newer root versions", t.version, t.expires.UTC().Format(time.RFC3339))
	}
	return s, nil
}

// Digest is "sha256:<hex>" of b, the form of hubv1.Desired.Digest.
func Digest(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

func decodeState(b []byte) (*hubv1.DesiredState, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s hubv1.DesiredState
	if err := dec.Decode(&s); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("data after the desired state")
	}
	return &s, nil
}
