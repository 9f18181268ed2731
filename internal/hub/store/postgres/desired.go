package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/internal/codec"
)

// Desired state keeps one row per vehicle half: its newest revision and the
// sequence of the write that stored it. A newer revision replaces the row
// and its sequence, so DesiredSince lists each half at most once, at its
// latest write: intermediate revisions coalesce, which is what a long-poll
// wants (only the newest revision is ever served).

// upsertDesired stores a revision if it is above the stored one and
// returns the row's revision; no row means stale. Its sequence is the one
// the transaction's change_seq update reached, minus $4.
const upsertDesired = `INSERT INTO desired (vehicle, half, revision, seq, digest, issued_at, expires, root_version,
		content_hash, envelope, placement, objects)
	VALUES ($1, $2, $3, (SELECT value FROM change_seq WHERE id = 1) - $4, $5, $6, $7, $8, $9, $10, $11, $12)
	ON CONFLICT (vehicle, half) DO UPDATE SET revision = excluded.revision, seq = excluded.seq,
		digest = excluded.digest, issued_at = excluded.issued_at, expires = excluded.expires,
		root_version = excluded.root_version, content_hash = excluded.content_hash,
		envelope = excluded.envelope, placement = excluded.placement, objects = excluded.objects
	WHERE desired.revision < excluded.revision
	RETURNING revision`

// PutDesired stores one revision; see store.Store.
func (s *Store) PutDesired(ctx context.Context, d store.Desired) error {
	if err := s.putDesired(ctx, []store.Desired{d}); err != nil {
		return fmt.Errorf("postgres: put desired: %w", err)
	}
	return nil
}

// PutDesiredBatch stores revisions in one transaction; see store.Store.
func (s *Store) PutDesiredBatch(ctx context.Context, ds []store.Desired) error {
	if err := s.putDesired(ctx, ds); err != nil {
		return fmt.Errorf("postgres: put desired batch of %d: %w", len(ds), err)
	}
	return nil
}

// putDesired sends the whole transaction as one pipelined batch: advance
// the sequence (which takes its row lock, held until commit), upsert each
// entry, notify. The lock is held for one round trip and the commit.
func (s *Store) putDesired(ctx context.Context, ds []store.Desired) error {
	if len(ds) == 0 {
		return nil
	}
	n := len(ds)
	b := &pgx.Batch{}
	b.Queue(`UPDATE change_seq SET value = value + $1 WHERE id = 1 RETURNING value`, n)
	for i, d := range ds {
		j, err := codec.EncodeDesired(d)
		if err != nil {
			return err
		}
		b.Queue(upsertDesired, d.Vehicle, d.Half, d.Revision, n-1-i, d.Digest, d.IssuedAt, d.Expires,
			d.RootVersion, d.ContentHash, j.Envelope, j.Placement, j.Objects)
	}
	b.Queue(`SELECT pg_notify('` + channel + `', value::text) FROM change_seq WHERE id = 1`)

	var last int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		stale := -1
		br := tx.SendBatch(ctx, b)
		err := func() error {
			if err := br.QueryRow().Scan(&last); err != nil {
				return fmt.Errorf("advance sequence: %w", err)
			}
			for i, d := range ds {
				var rev int64
				err := br.QueryRow().Scan(&rev)
				if errors.Is(err, pgx.ErrNoRows) {
					stale = i
					return nil
				}
				if err != nil {
					if c := constraint(err); errors.Is(c, store.ErrNotFound) {
						err = c
					}
					return codec.EntryError(d, err)
				}
			}
			_, err := br.Exec()
			return err
		}()
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err != nil || stale < 0 {
			return err
		}
		d := ds[stale]
		var stored int64
		if err := tx.QueryRow(ctx, `SELECT revision FROM desired WHERE vehicle = $1 AND half = $2`, d.Vehicle, d.Half).Scan(&stored); err != nil {
			return codec.EntryError(d, err)
		}
		return codec.Stale(d, stored)
	})
	if err != nil {
		return err
	}
	// This Store's subscribers need not wait for the notification to come
	// back; the listener drops it as already seen.
	s.fan.Publish(last)
	return nil
}

const desiredCols = `vehicle, half, revision, seq, digest, issued_at, expires, root_version, content_hash, envelope, placement, objects`

// GetDesired returns a vehicle half's newest revision, or
// store.ErrNotFound.
func (s *Store) GetDesired(ctx context.Context, vehicle, half string) (store.Desired, error) {
	var (
		d store.Desired
		j codec.DesiredJSON
	)
	err := s.pool.QueryRow(ctx, `SELECT `+desiredCols+` FROM desired WHERE vehicle = $1 AND half = $2`, vehicle, half).Scan(
		&d.Vehicle, &d.Half, &d.Revision, &d.Seq, &d.Digest, &d.IssuedAt, &d.Expires, &d.RootVersion, &d.ContentHash,
		&j.Envelope, &j.Placement, &j.Objects)
	if err != nil {
		return store.Desired{}, fmt.Errorf("postgres: get desired %s/%s: %w", vehicle, half, notFound(err))
	}
	d.IssuedAt, d.Expires = utc(d.IssuedAt), utc(d.Expires)
	if err := j.Decode(&d); err != nil {
		return store.Desired{}, fmt.Errorf("postgres: get desired %s/%s: %w", vehicle, half, err)
	}
	return d, nil
}

// DesiredSince lists the vehicle halves whose newest revision was written
// after seq, in sequence order, at most limit (0: 100).
func (s *Store) DesiredSince(ctx context.Context, seq int64, limit int) ([]store.Change, error) {
	limit = codec.Limit(limit)
	rows, _ := s.pool.Query(ctx, `SELECT seq, vehicle, half, revision FROM desired WHERE seq > $1 ORDER BY seq LIMIT $2`, seq, limit)
	out, err := collect(rows, func(row pgx.Row) (store.Change, error) {
		var c store.Change
		err := row.Scan(&c.Seq, &c.Vehicle, &c.Half, &c.Revision)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: desired since %d: %w", seq, err)
	}
	return codec.NonNil(out), nil
}

// Sequence returns the newest change sequence (0 before the first write).
func (s *Store) Sequence(ctx context.Context) (int64, error) {
	var v int64
	if err := s.pool.QueryRow(ctx, `SELECT value FROM change_seq WHERE id = 1`).Scan(&v); err != nil {
		return 0, fmt.Errorf("postgres: sequence: %w", err)
	}
	return v, nil
}
