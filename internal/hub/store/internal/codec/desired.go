package codec

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/misaki-io/misaki/internal/hub/store"
)

// DesiredJSON is a desired row's JSON columns. The envelope is bytes, as
// it is signed.
type DesiredJSON struct {
	Envelope           []byte
	Placement, Objects string
}

// EncodeDesired is d's JSON columns; an error names d (see EntryError).
func EncodeDesired(d store.Desired) (DesiredJSON, error) {
	var j DesiredJSON
	var err error
	if j.Envelope, err = json.Marshal(d.Envelope); err == nil {
		if j.Placement, err = Encode(d.Placement); err == nil {
			j.Objects, err = Encode(d.Objects)
		}
	}
	if err != nil {
		return DesiredJSON{}, EntryError(d, err)
	}
	return j, nil
}

// Decode sets d's envelope, placement and objects from the columns.
func (j DesiredJSON) Decode(d *store.Desired) error {
	for _, f := range []struct {
		s string
		v any
	}{{string(j.Envelope), &d.Envelope}, {j.Placement, &d.Placement}, {j.Objects, &d.Objects}} {
		if err := Decode(f.s, f.v); err != nil {
			return err
		}
	}
	return nil
}

// EntryError names the PutDesiredBatch entry d in err. An err wrapping
// store.ErrNotFound (a dialect's foreign-key violation: the row's vehicle
// is missing) says so.
func EntryError(d store.Desired, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		err = fmt.Errorf("vehicle %w", err)
	}
	return fmt.Errorf("%s/%s revision %d: %w", d.Vehicle, d.Half, d.Revision, err)
}

// Stale is the error for entry d when its vehicle half already has
// revision stored, not below d's.
func Stale(d store.Desired, stored int64) error {
	return fmt.Errorf("%s/%s revision %d, stored %d: %w", d.Vehicle, d.Half, d.Revision, stored, store.ErrStale)
}
