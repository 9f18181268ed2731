package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/internal/codec"
)

// dirtyLockID serialises MarkDirty transactions (the ASCII bytes of
// "misakidq"): two marks of overlapping IDs in different orders would
// otherwise deadlock on the unique index.
const dirtyLockID int64 = 0x6d69_7361_6b69_6471

// MarkDirty queues the vehicles in one transaction; an ID already queued
// keeps its place, with Force if either mark asked for it.
func (s *Store) MarkDirty(ctx context.Context, ds []store.Dirty) error {
	if len(ds) == 0 {
		return nil
	}
	// One statement cannot upsert a row twice: merge repeats first.
	ids, force := codec.MergeDirty(ds)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, dirtyLockID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO dirty (id, force)
			SELECT id, force FROM unnest($1::text[], $2::boolean[]) WITH ORDINALITY AS m (id, force, n) ORDER BY n
			ON CONFLICT (id) DO UPDATE SET force = dirty.force OR excluded.force`, ids, force)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: mark %d dirty: %w", len(ds), err)
	}
	return nil
}

// TakeDirty removes and returns up to limit entries (0: all), oldest
// first. Concurrent takers skip each other's rows, so each entry goes to
// one taker.
func (s *Store) TakeDirty(ctx context.Context, limit int) ([]store.Dirty, error) {
	var lim *int
	if limit > 0 {
		lim = &limit
	}
	rows, _ := s.pool.Query(ctx, `DELETE FROM dirty WHERE ord IN
		(SELECT ord FROM dirty ORDER BY ord LIMIT $1 FOR UPDATE SKIP LOCKED)
		RETURNING ord, id, force`, lim)
	got, err := collect(rows, func(row pgx.Row) (codec.Taken, error) {
		var e codec.Taken
		err := row.Scan(&e.Ord, &e.ID, &e.Force)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: take dirty: %w", err)
	}
	return codec.InOrder(got), nil
}

// Counts returns the fleet-wide numbers for /metrics.
func (s *Store) Counts(ctx context.Context, onlineSince time.Time) (store.Counts, error) {
	var c store.Counts
	err := s.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM vehicles),
		(SELECT count(*) FROM vehicles WHERE last_seen >= $1),
		(SELECT count(*) FROM desired d LEFT JOIN reports r ON r.vehicle = d.vehicle AND r.half = d.half
			WHERE r.vehicle IS NULL OR d.revision > r.applied_revision)`, onlineSince).Scan(&c.Vehicles, &c.Online, &c.Pending)
	if err != nil {
		return store.Counts{}, fmt.Errorf("postgres: counts: %w", err)
	}
	return c, nil
}
