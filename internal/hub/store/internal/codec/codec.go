// Package codec is the half of the hub's two stores that is not SQL: how
// the wire types (api/hub/v1) and store.Desired become column values and
// back, and the rules both stores apply to them (input checks, paging,
// PutReported's change detection, the dirty queue's merging).
//
// It exists so that internal/hub/store/sqlite and
// internal/hub/store/postgres hold only what is their dialect's (SQL text,
// placeholders, transactions and locking, error codes, time columns,
// LISTEN/NOTIFY) and cannot drift apart on the rest: a column written by
// one store's code is the same JSON the other's would write, and a rule
// the storetest suite checks is written once. Nothing here does I/O.
//
// Structured values that are not queried (labels, resources, facts,
// specs, placement, objects, reports, the envelope) are JSON text. The
// spec types carry no omitempty, so nil and empty maps and lists come back
// as they went. Errors come back without the store's name; the caller adds
// it with what it was doing.
package codec

import (
	"encoding/json"
	"fmt"
	"time"
)

// Encode is v as JSON text.
func Encode(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode %T: %w", v, err)
	}
	return string(b), nil
}

// Decode reads the JSON text s into v.
func Decode(s string, v any) error {
	if err := json.Unmarshal([]byte(s), v); err != nil {
		return fmt.Errorf("decode %T: %w", v, err)
	}
	return nil
}

// Norm is how a time comes back from either store: UTC, truncated to the
// microsecond.
func Norm(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }
