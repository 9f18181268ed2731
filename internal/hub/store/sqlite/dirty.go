package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/internal/codec"
)

// MarkDirty queues the vehicles in one transaction; an ID already queued
// keeps its place, with Force if either mark asked for it.
func (s *Store) MarkDirty(ctx context.Context, ds []store.Dirty) error {
	if len(ds) == 0 {
		return nil
	}
	ids, force := codec.MergeDirty(ds)
	err := s.write(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO dirty (id, force) VALUES (?, ?)
			ON CONFLICT (id) DO UPDATE SET force = force OR excluded.force`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i, id := range ids {
			if _, err := stmt.ExecContext(ctx, id, force[i]); err != nil {
				return fmt.Errorf("%s: %w", id, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: mark %d dirty: %w", len(ds), err)
	}
	return nil
}

// TakeDirty removes and returns up to limit entries (0: all), oldest
// first.
func (s *Store) TakeDirty(ctx context.Context, limit int) ([]store.Dirty, error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	var got []codec.Taken
	err := s.write(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `DELETE FROM dirty WHERE ord IN (SELECT ord FROM dirty ORDER BY ord LIMIT ?)
			RETURNING ord, id, force`, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e codec.Taken
			if err := rows.Scan(&e.Ord, &e.ID, &e.Force); err != nil {
				return err
			}
			got = append(got, e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: take dirty: %w", err)
	}
	return codec.InOrder(got), nil
}

// Counts returns the fleet-wide numbers for /metrics.
func (s *Store) Counts(ctx context.Context, onlineSince time.Time) (store.Counts, error) {
	var c store.Counts
	err := s.r.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM vehicles),
		(SELECT count(*) FROM vehicles WHERE last_seen >= ?),
		(SELECT count(*) FROM desired d LEFT JOIN reports r ON r.vehicle = d.vehicle AND r.half = d.half
			WHERE r.vehicle IS NULL OR d.revision > r.applied_revision)`, micros(onlineSince)).Scan(&c.Vehicles, &c.Online, &c.Pending)
	if err != nil {
		return store.Counts{}, fmt.Errorf("sqlite: counts: %w", err)
	}
	return c, nil
}
