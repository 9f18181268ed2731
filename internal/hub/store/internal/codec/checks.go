package codec

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

// The checks on input both stores make before they write. Each error is
// said without the store's name or the operation: the caller adds them.

// Blob is what PutBlob stores for data under digest: data, never nil (the
// column is NOT NULL), if digest is "sha256:<64 hex digits>" and is
// data's. A well-formed digest of other bytes is an error wrapping
// store.ErrDigestMismatch that names both digests.
func Blob(digest string, data []byte) ([]byte, error) {
	if err := checkDigest(digest, data); err != nil {
		return nil, err
	}
	if data == nil {
		data = []byte{}
	}
	return data, nil
}

func checkDigest(digest string, data []byte) error {
	const prefix = "sha256:"
	if len(digest) != len(prefix)+2*sha256.Size || digest[:len(prefix)] != prefix {
		return fmt.Errorf("digest %q is not sha256:<64 hex digits>", digest)
	}
	sum := sha256.Sum256(data)
	if got := prefix + hex.EncodeToString(sum[:]); got != digest {
		return fmt.Errorf("data is %s, not %s: %w", got, digest, store.ErrDigestMismatch)
	}
	return nil
}

// PinName is how errors name the chart ref pins: source/name@version.
func PinName(ref hubv1.ChartRef) string { return ref.Source + "/" + ref.Name + "@" + ref.Version }

// CheckPin checks that ref names the digest to pin.
func CheckPin(ref hubv1.ChartRef) error {
	if ref.Digest == "" {
		return errors.New("no digest")
	}
	return nil
}

// Pinned is PinChart's verdict once the pin is stored: nil if ref's
// digest is the pinned one, else an error wrapping store.ErrDigestMismatch
// that names both.
func Pinned(ref hubv1.ChartRef, pinned string) error {
	if pinned != ref.Digest {
		return fmt.Errorf("pinned to %s, offered %s: %w", pinned, ref.Digest, store.ErrDigestMismatch)
	}
	return nil
}

// CheckToken checks a bootstrap token's secret hash before CreateToken
// stores it.
func CheckToken(secretHash []byte) error {
	if len(secretHash) == 0 {
		return errors.New("empty secret hash")
	}
	return nil
}

// CheckOperatorToken checks t before CreateOperatorToken stores it.
func CheckOperatorToken(t store.OperatorToken) error {
	if len(t.Hash) == 0 {
		return errors.New("empty hash")
	}
	return nil
}

// CheckLease checks TryLease's holder and ttl.
func CheckLease(holder string, ttl time.Duration) error {
	if holder == "" || ttl <= 0 {
		return errors.New("want a holder and a positive ttl")
	}
	return nil
}

// Missed is the error for a conditional update (UpdateVehicle,
// UpdateDeployment) that matched no row: store.ErrNotFound if the row
// does not exist, else store.ErrConflict naming the field the caller
// read ("resource version", "generation") and its value.
func Missed(exists bool, field string, read int64) error {
	if !exists {
		return store.ErrNotFound
	}
	return fmt.Errorf("%s %d: %w", field, read, store.ErrConflict)
}
