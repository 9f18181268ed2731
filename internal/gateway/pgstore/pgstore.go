// Package pgstore links the gateway's shared idempotency store on
// PostgreSQL (internal/gateway/idem/postgres) into a binary: importing it
// for its side effect makes gateway.idempotency.postgres work. misaki-gateway
// imports it; misaki-proxy, which the edge runs too, does not, so the
// sidecar carries no SQL driver.
package pgstore

import (
	"context"

	"github.com/misaki-io/misaki/internal/gateway"
	"github.com/misaki-io/misaki/internal/gateway/idem"
	"github.com/misaki-io/misaki/internal/gateway/idem/postgres"
)

func init() { gateway.UseSharedStore(open) }

func open(ctx context.Context, o gateway.SharedStore) (idem.Store, error) {
	return postgres.Open(ctx, postgres.Options{
		DSN: o.DSN, Replica: o.Replica, Window: o.Window, ClaimTTL: o.ClaimTTL, Clock: o.Clock, Log: o.Log,
	})
}
