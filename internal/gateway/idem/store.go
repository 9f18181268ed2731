package idem

import (
	"context"
	"errors"
)

// Store is what the gateway asks of its memory of keys. Keys are scoped
// (Scope). Its methods are safe for concurrent use.
//
// It is declared here rather than in the gateway, which uses it, so that
// each implementation can carry its own compile-time guard without
// importing the gateway: the gateway must not import idem/postgres in the
// edge's build (see internal/gateway's postgres.go).
type Store interface {
	// Claim claims key for a new request. It returns nil when the caller
	// now owns the key and must Complete or Release it. Otherwise it
	// returns what the store holds: a Done entry (answer the repeat from
	// it) or an InFlight one (the first request is still being answered,
	// here or by another replica). An answer older than the window is
	// forgotten: its key is claimed afresh.
	Claim(ctx context.Context, key []byte) (*Entry, error)
	// Complete stores the service's answer to the request that claimed
	// key, durably before it returns, and ends the claim. It sets e's
	// State and Created.
	Complete(ctx context.Context, key []byte, e *Entry) error
	// Release gives up a claim: the service gave no final answer (it
	// failed, or could not be reached), so a retry must reach it again.
	Release(ctx context.Context, key []byte) error
	// Sweep removes answers older than the window and returns how many.
	Sweep(ctx context.Context) (int, error)
	// Close ends the store's work; claims still held are given up.
	Close() error
}

// Optional abilities of a Store, which the gateway turns into metrics.
type (
	// Sizer tells how many keys the store holds (misaki_gateway_keys).
	Sizer interface{ Len() int }
	// Reporter tells the store's counters (misaki_gateway_store_*).
	Reporter interface{ Stats() Stats }
)

var (
	_ Store    = (*FileStore)(nil)
	_ Sizer    = (*FileStore)(nil)
	_ Reporter = (*FileStore)(nil)
)

// ErrClaimLost is returned by Complete when the key's claim was no longer
// the caller's and another replica had already stored an answer: the
// caller's answer is not stored, and repeats get the other one. Only a
// shared store, whose claims have a lease, returns it.
var ErrClaimLost = errors.New("idempotency store: the claim was lost and another replica's answer is stored")
