package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/gateway/idem"
	"github.com/misaki-io/misaki/internal/proxy/config"
)

// SharedStore is what the shared store (idem/postgres) is opened with.
type SharedStore struct {
	DSN              string
	Replica          string
	Window, ClaimTTL time.Duration
	Clock            clock.Clock
	Log              *slog.Logger
}

// openPostgres opens the shared store. Only a binary that links the
// PostgreSQL store sets it, by importing internal/gateway/pgstore:
// misaki-gateway does; misaki-proxy, the edge's binary, must link no SQL
// driver (test/TestEdgeImportsNoHeavyDependencies), so its gateway role
// has the local store only and refuses gateway.idempotency.postgres
// (unless built with -tags misaki_postgres, cmd/misaki-proxy/postgres.go).
var openPostgres func(ctx context.Context, o SharedStore) (idem.Store, error)

// UseSharedStore makes the gateway open gateway.idempotency.postgres with
// open. internal/gateway/pgstore calls it from init.
func UseSharedStore(open func(ctx context.Context, o SharedStore) (idem.Store, error)) {
	openPostgres = open
}

// PostgresTag is the build tag that links the shared store into
// misaki-proxy.
const PostgresTag = "misaki_postgres"

// CheckBinary reports whether this binary can run the gateway cfg asks
// for: a shared store needs one that links it. New checks it, and so does
// --check, so that a configuration misaki-proxy would refuse at start is
// not called ok.
func CheckBinary(cfg *config.Config) error {
	if cfg.Role == config.RoleGateway && cfg.Gateway.Idempotency.Postgres != nil && openPostgres == nil {
		return errNoPostgres
	}
	return nil
}

// errNoPostgres is New's error for gateway.idempotency.postgres in a
// binary without the shared store.
var errNoPostgres = errors.New("gateway.idempotency.postgres: misaki-proxy does not link PostgreSQL, which the edge must not carry; run the gateway as misaki-gateway, the same program with the shared store (docs/gateway.md#replicas-on-postgresql), or use gateway.idempotency.dir")

// newReplicaName names this run of the gateway in the shared store's
// claims: the host's name (a pod's) and a random suffix, new at each start.
func newReplicaName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "gateway"
	}
	var b [4]byte
	rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// openStore opens the key store the config selects: the shared store on
// PostgreSQL, or the local one in gateway.idempotency.dir.
func (s *Server) openStore(ctx context.Context) (idem.Store, error) {
	idc := s.cfg.Gateway.Idempotency
	if pg := idc.Postgres; pg != nil {
		dsn, field := pg.DSN, "gateway.idempotency.postgres.dsn"
		if pg.DSNEnv != "" {
			field = "gateway.idempotency.postgres.dsnEnv"
			if dsn = os.Getenv(pg.DSNEnv); dsn == "" {
				return nil, fmt.Errorf("%s: $%s is empty or not set; it must hold the DSN", field, pg.DSNEnv)
			}
		}
		st, err := openPostgres(ctx, SharedStore{
			DSN: dsn, Replica: s.replica, Window: idc.Window.D(), ClaimTTL: idc.ClaimTTL.D(),
			Clock: nowClock{s.now}, Log: s.log,
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return st, nil
	}
	if err := os.MkdirAll(idc.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("gateway.idempotency.dir: %w", err)
	}
	return idem.Open(filepath.Join(idc.Dir, "keys.db"), idc.Window.D(), s.now)
}

// storeKind names the store in the start's log line.
func (s *Server) storeKind() string {
	if s.cfg.Gateway.Idempotency.Postgres != nil {
		return "postgres"
	}
	return "local"
}

// nowClock is the wall clock's timers with the gateway's now.
type nowClock struct{ now func() time.Time }

func (c nowClock) Now() time.Time                     { return c.now() }
func (nowClock) NewTimer(d time.Duration) clock.Timer { return clock.Real{}.NewTimer(d) }

// registerStoreMetrics exports what the store tells of itself.
func (s *Server) registerStoreMetrics(store idem.Store) {
	if sz, ok := store.(idem.Sizer); ok {
		s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "misaki_gateway_keys", Help: "Idempotency keys remembered (local store only).",
		}, func() float64 { return float64(sz.Len()) }))
	}
	rep, ok := store.(idem.Reporter)
	if !ok {
		return
	}
	for _, c := range []struct {
		name, help string
		value      func(idem.Stats) float64
	}{
		{"commits_total", "Writes of answers to the idempotency store: log groups of the local store, one fdatasync each (answers completing together share one); transactions of the shared store, one per answer.", func(st idem.Stats) float64 { return float64(st.Commits) }},
		{"answers_total", "Answers written to the idempotency store.", func(st idem.Stats) float64 { return float64(st.Answers) }},
		{"commit_seconds_total", "Time spent writing and syncing answers.", func(st idem.Stats) float64 { return st.CommitTime.Seconds() }},
		{"commit_errors_total", "Writes that failed: those answers were relayed to the vehicle but not stored.", func(st idem.Stats) float64 { return float64(st.CommitError) }},
		{"checkpoints_total", "Logs moved into the key database (local store).", func(st idem.Stats) float64 { return float64(st.Checkpoints) }},
		{"checkpoint_errors_total", "Checkpoints that failed (the log is kept and applied later; local store).", func(st idem.Stats) float64 { return float64(st.CheckpointErrors) }},
		{"damaged_frames_total", "Damaged frames the last start skipped in the key logs a crash left (each costs its own stored answer; every intact one after it is kept; local store).", func(st idem.Stats) float64 { return float64(st.DamagedFrames) }},
		{"damaged_bytes_total", "Bytes of those damaged frames (local store).", func(st idem.Stats) float64 { return float64(st.DamagedBytes) }},
		{"torn_bytes_total", "Bytes of torn tails cut from the key logs at the last start (local store).", func(st idem.Stats) float64 { return float64(st.TornBytes) }},
		{"reclaimed_total", "Keys claimed over a claim whose lease had ended (a replica died with the request in flight: the service may see it again) or over an answer past the window (shared store).", func(st idem.Stats) float64 { return float64(st.Reclaimed) }},
		{"claims_lost_total", "This replica's claims that ended before it was done with them: their lease lapsed (the database was out of reach for a whole claimTTL) and another replica took the key, or its answer came second (shared store).", func(st idem.Stats) float64 { return float64(st.ClaimsLost) }},
		{"renewals_total", "Renewals of the leases of this replica's claims, one statement each (shared store).", func(st idem.Stats) float64 { return float64(st.Renewals) }},
		{"renew_errors_total", "Renewals that failed; claims not renewed for a whole claimTTL may be taken over (shared store).", func(st idem.Stats) float64 { return float64(st.RenewErrors) }},
	} {
		s.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "misaki_gateway_store_" + c.name, Help: c.help},
			func() float64 { return c.value(rep.Stats()) }))
	}
}
