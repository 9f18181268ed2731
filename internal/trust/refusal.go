// Package trust signs and verifies a vehicle's desired state.
//
// A desired state is a DSSE envelope (github.com/secure-systems-lab/dsse)
// whose payload is the JSON of one hubv1.DesiredState (payload type
// hubv1.PayloadTypeDesired), signed by the keys of the "targets" role of a
// TUF root: the real root.json format of The Update Framework, with its
// versions, expiry, thresholds, and root rotation checked the TUF way
// (root N+1 must be signed by a threshold of root N's root keys and by a
// threshold of its own). There is one root for the whole fleet and one
// signed document per vehicle half, as Uptane's director repository signs
// per-ECU targets.
//
// The hub signs with Keys (LoadKeys, Init and Rotate manage the key
// directory). The vehicle agent verifies with a Verifier, whose only state
// is the trusted root's JSON. This package imports nothing from
// internal/hub, because the agent links it too.
//
// docs/decisions/0004-signed-desired-state.md gives the reasons and the
// threat model.
package trust

import (
	"errors"
	"fmt"
)

// Reason says why a document or a root was refused, in a word an agent can
// report (hubv1.Refusal.Reason) and an operator can look up.
type Reason string

// Verify's reasons, in the order Verify checks them.
const (
	// ReasonPayloadType: the envelope's payloadType is not
	// hubv1.PayloadTypeDesired.
	ReasonPayloadType Reason = "payload-type"
	// ReasonSignature: fewer distinct keys of the trusted root's targets
	// role signed PAE(payloadType, payload) than the role's threshold.
	ReasonSignature Reason = "signature"
	// ReasonDigest: Desired.Digest is not "sha256:<hex>" of the payload.
	ReasonDigest Reason = "digest"
	// ReasonDecode: the signed payload is not one DesiredState (bad JSON,
	// unknown fields, trailing data).
	ReasonDecode Reason = "decode"
	// ReasonMismatch: a field beside the envelope (vehicle, half, revision,
	// issuedAt, expires) differs from the signed payload's.
	ReasonMismatch Reason = "mismatch"
	// ReasonVehicle: the document is for another vehicle.
	ReasonVehicle Reason = "vehicle"
	// ReasonHalf: the document is for the other half (vehicle or cloud).
	ReasonHalf Reason = "half"
	// ReasonRollback: the revision is not above the last one applied.
	ReasonRollback Reason = "rollback"
	// ReasonExpired: the document's expiry has passed (freeze protection).
	ReasonExpired Reason = "expired"
	// ReasonFuture: the document was issued more than MaxClockSkew after
	// the verifier's now.
	ReasonFuture Reason = "issued-in-future"
	// ReasonRootExpired: the trusted root has expired; the agent must fetch
	// newer root versions before it accepts anything.
	ReasonRootExpired Reason = "root-expired"
)

// NewVerifier's and UpdateRoot's reasons.
const (
	// ReasonRootInvalid: the bytes are not a usable TUF root (bad JSON, a
	// role missing, a threshold above the role's keys, a key unknown).
	ReasonRootInvalid Reason = "root-invalid"
	// ReasonRootVersion: the next root's version is not the trusted
	// version plus one.
	ReasonRootVersion Reason = "root-version"
	// ReasonRootSignature: the root is not signed by a threshold of the
	// trusted root's root keys, or not by a threshold of its own.
	ReasonRootSignature Reason = "root-signature"
)

// Sentinel errors, one per reason. A *RefusalError unwraps to its reason's
// sentinel, so errors.Is(err, trust.ErrRollback) works on what Verify and
// UpdateRoot return.
var (
	ErrPayloadType   = errors.New("trust: wrong payload type")
	ErrSignature     = errors.New("trust: not signed by the targets role's threshold")
	ErrDigest        = errors.New("trust: digest does not match the payload")
	ErrDecode        = errors.New("trust: payload does not decode")
	ErrMismatch      = errors.New("trust: unsigned fields differ from the signed payload")
	ErrVehicle       = errors.New("trust: document is for another vehicle")
	ErrHalf          = errors.New("trust: document is for the other half")
	ErrRollback      = errors.New("trust: revision is not above the last applied (rollback)")
	ErrExpired       = errors.New("trust: document expired (freeze)")
	ErrFuture        = errors.New("trust: document issued in the future")
	ErrRootExpired   = errors.New("trust: trusted root expired")
	ErrRootInvalid   = errors.New("trust: root is not a usable TUF root")
	ErrRootVersion   = errors.New("trust: root version is not the next one")
	ErrRootSignature = errors.New("trust: root signatures do not meet the thresholds")
)

var sentinels = map[Reason]error{
	ReasonPayloadType:   ErrPayloadType,
	ReasonSignature:     ErrSignature,
	ReasonDigest:        ErrDigest,
	ReasonDecode:        ErrDecode,
	ReasonMismatch:      ErrMismatch,
	ReasonVehicle:       ErrVehicle,
	ReasonHalf:          ErrHalf,
	ReasonRollback:      ErrRollback,
	ReasonExpired:       ErrExpired,
	ReasonFuture:        ErrFuture,
	ReasonRootExpired:   ErrRootExpired,
	ReasonRootInvalid:   ErrRootInvalid,
	ReasonRootVersion:   ErrRootVersion,
	ReasonRootSignature: ErrRootSignature,
}

// RefusalError is a document or root the verifier would not accept.
type RefusalError struct {
	Reason Reason
	// Detail says what was found, for a log line or hubv1.Refusal.
	Detail string
}

func (e *RefusalError) Error() string {
	return fmt.Sprintf("trust: refused (%s): %s", e.Reason, e.Detail)
}

// Unwrap returns the reason's sentinel error.
func (e *RefusalError) Unwrap() error { return sentinels[e.Reason] }

func refuse(r Reason, format string, args ...any) *RefusalError {
	return &RefusalError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}
