package spool

import "github.com/misaki-io/misaki/internal/uuidv7"

// NewKey returns an Idempotency-Key for a request stored without one: a
// UUID version 7 (RFC 9562), whose first 48 bits are the Unix time in
// milliseconds and the rest random, increasing within this process.
//
// Time-ordered rather than random (version 4) for the gateway's sake: its
// store is a B+tree (bbolt) of vehicle identity and key, so one vehicle's
// new keys land at the end of its range, on pages a checkpoint is writing
// anyway, instead of one page each across the whole tree.
// BenchmarkCheckpoint in internal/gateway/idem measures the two.
func NewKey() string { return uuidv7.New() }
