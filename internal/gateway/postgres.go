//go:build misaki_postgres

package gateway

import (
	"context"

	"github.com/misaki-io/misaki/internal/gateway/idem"
	"github.com/misaki-io/misaki/internal/gateway/idem/postgres"
)

// The shared store, linked only into a build with the misaki_postgres tag
// (store.go says why).
func init() { openPostgres = openPostgresStore }

func openPostgresStore(ctx context.Context, o sharedStore) (idem.Store, error) {
	return postgres.Open(ctx, postgres.Options{
		DSN: o.DSN, Replica: o.Replica, Window: o.Window, ClaimTTL: o.ClaimTTL, Clock: o.Clock, Log: o.Log,
	})
}
