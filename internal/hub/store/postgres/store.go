// Package postgres is the hub's store for fleets that outgrow one machine
// or run several hub replicas: store.Store on PostgreSQL through pgx/v5 and
// a pgxpool, selected by a DSN.
//
// Dialect choices. Keys are text COLLATE "C", so lists page in byte order
// whatever the database's locale; times are timestamptz (microseconds,
// read back in UTC); structured values that are not queried are JSON text,
// as on SQLite (internal/hub/store/internal/codec encodes them and holds
// the rules both stores share; this package holds what is PostgreSQL's).
// The schema is versioned with goose (migrations/, embedded) and migrated
// by Open under a session advisory lock (pg_advisory_lock(schemaLockID)),
// so replicas that start together migrate once and the others wait, then
// find nothing to do.
//
// The change sequence is one row advanced inside each PutDesired's
// transaction (not a SEQUENCE, whose numbers are not transactional): its
// row lock hands numbers out in commit order, so a reader that has seen
// sequence n has seen every write numbered below it. The same transaction
// runs pg_notify('misaki_desired', <seq>), delivered to every listener when
// it commits.
//
// Changes runs one LISTEN connection per Store (application_name
// "misaki-hub-listener"), started by the first Changes call and stopped by
// Close, and fans each notification out to every subscriber of that Store,
// coalescing. When the connection fails it reconnects with backoff (50 ms
// doubling to 5 s) and, once listening again, re-reads the sequence and
// delivers it if it moved, so a change committed while it was away is not
// missed. A connection that stays silent is checked with a query every 30
// s. A change committed by another replica reaches subscribers as fast as
// PostgreSQL delivers the notification (milliseconds on a LAN).
//
// Semantics the interface leaves open, the same on both stores: bootstrap
// tokens, reports and desired revisions belong to an existing vehicle (else
// store.ErrNotFound) and go when it is deleted; pins outlive their source;
// PutBlob refuses bytes that are not its digest's (store.ErrDigestMismatch);
// ListTokens("") lists every vehicle's; a new deployment's zero Generation
// is stored as 1; every list is non-nil.
//
// Durability is the server's: a commit returns once PostgreSQL has made it
// durable under its synchronous_commit setting (on by default: nothing
// committed is lost in a crash; off: up to 3 × wal_writer_delay, 600 ms by
// default, of commits may be lost, never corrupted).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/internal/fanout"
)

// Store is store.Store on PostgreSQL. Its methods are safe for concurrent
// use.
type Store struct {
	pool   *pgxpool.Pool
	listen *pgx.ConnConfig // the change listener's connection
	log    *slog.Logger
	clock  clock.Clock   // the listener's reconnect backoff
	health time.Duration // how long the listener waits silently before it checks its connection
	fan    fanout.Fanout // Changes subscribers

	mu     sync.Mutex    // guards fields below
	ready  chan struct{} // closed once the listener first listens; nil before it starts
	stop   func()        // stops the listener
	done   chan struct{} // closed when the listener has stopped
	closed bool
}

var _ store.Store = (*Store)(nil)

// errClosed is returned by Changes after Close.
var errClosed = errors.New("store closed")

// Open connects to the database dsn names (a postgres:// URL or key=value
// string, as pgx parses it; pool_max_conns sets the pool's size, by
// default 4 or the number of CPUs if more) and migrates its schema to the
// newest version.
func Open(ctx context.Context, dsn string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors can quote the DSN, password included.
		return nil, errors.New("postgres: open: the DSN does not parse")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: open %s@%s/%s: %w", cfg.ConnConfig.User, cfg.ConnConfig.Host, cfg.ConnConfig.Database, err)
	}
	listen := cfg.ConnConfig.Copy()
	listen.RuntimeParams["application_name"] = listenerName
	s := &Store{
		pool:   pool,
		listen: listen,
		log:    log.With("component", "hub-store", "dialect", "postgres"),
		clock:  clock.Real{},
		health: healthEvery,
	}
	if err := migrate(ctx, pool, s.log); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	return s, nil
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// Close stops the change listener, closes Changes channels and the pool.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	stop, done := s.stop, s.done
	s.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	s.fan.Close()
	s.pool.Close()
	return nil
}

// constraint maps a constraint violation to its sentinel: a taken key to
// store.ErrExists, a missing referenced row to store.ErrNotFound. Other
// errors come back unchanged.
func constraint(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505": // unique_violation
			return store.ErrExists
		case "23503": // foreign_key_violation
			return store.ErrNotFound
		}
	}
	return err
}

// notFound maps pgx.ErrNoRows to store.ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

// querier is what the pool and a transaction share.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func vehicleExists(ctx context.Context, q querier, id string) (bool, error) {
	var ok bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM vehicles WHERE id = $1)`, id).Scan(&ok)
	return ok, err
}

// utc converts what pgx reads (local time) to UTC.
func utc(t time.Time) time.Time { return t.UTC() }

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// collect reads every row with scan, which also reads single rows.
func collect[T any](rows pgx.Rows, scan func(pgx.Row) (T, error)) ([]T, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (T, error) { return scan(r) })
}
