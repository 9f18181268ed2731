package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/internal/codec"
)

// Desired state keeps one row per vehicle half: its newest revision and the
// sequence of the write that stored it. A newer revision replaces the row
// and its sequence, so DesiredSince lists each half at most once, at its
// latest write: intermediate revisions coalesce, which is what a long-poll
// wants (only the newest revision is ever served).
//
// The sequence is one row in change_seq, advanced inside the same
// transaction as the rows it numbers, so sequences become visible in the
// order they were handed out: a reader that has seen sequence n has seen
// every write numbered below n.

// upsertDesired stores a revision if it is above the stored one and
// returns the row's revision; no row means stale.
const upsertDesired = `INSERT INTO desired (vehicle, half, revision, seq, digest, issued_at, expires, root_version,
		content_hash, envelope, placement, objects)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (vehicle, half) DO UPDATE SET revision = excluded.revision, seq = excluded.seq,
		digest = excluded.digest, issued_at = excluded.issued_at, expires = excluded.expires,
		root_version = excluded.root_version, content_hash = excluded.content_hash,
		envelope = excluded.envelope, placement = excluded.placement, objects = excluded.objects
	WHERE desired.revision < excluded.revision
	RETURNING revision`

// PutDesired stores one revision; see store.Store.
func (s *Store) PutDesired(ctx context.Context, d store.Desired) error {
	if err := s.putDesired(ctx, []store.Desired{d}); err != nil {
		return fmt.Errorf("sqlite: put desired: %w", err)
	}
	return nil
}

// PutDesiredBatch stores revisions in one transaction; see store.Store.
func (s *Store) PutDesiredBatch(ctx context.Context, ds []store.Desired) error {
	if err := s.putDesired(ctx, ds); err != nil {
		return fmt.Errorf("sqlite: put desired batch of %d: %w", len(ds), err)
	}
	return nil
}

func (s *Store) putDesired(ctx context.Context, ds []store.Desired) error {
	if len(ds) == 0 {
		return nil
	}
	js := make([]codec.DesiredJSON, len(ds))
	for i, d := range ds {
		var err error
		if js[i], err = codec.EncodeDesired(d); err != nil {
			return err
		}
	}
	var last int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `UPDATE change_seq SET value = value + ? WHERE id = 1 RETURNING value`,
			len(ds)).Scan(&last); err != nil {
			return fmt.Errorf("advance sequence: %w", err)
		}
		first := last - int64(len(ds)) + 1
		stmt, err := tx.PrepareContext(ctx, upsertDesired)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i, d := range ds {
			var rev int64
			err := stmt.QueryRowContext(ctx, d.Vehicle, d.Half, d.Revision, first+int64(i), d.Digest,
				micros(d.IssuedAt), micros(d.Expires), d.RootVersion, d.ContentHash,
				js[i].Envelope, js[i].Placement, js[i].Objects).Scan(&rev)
			if errors.Is(err, sql.ErrNoRows) {
				var stored int64
				if err := tx.QueryRowContext(ctx, `SELECT revision FROM desired WHERE vehicle = ? AND half = ?`,
					d.Vehicle, d.Half).Scan(&stored); err != nil {
					return codec.EntryError(d, err)
				}
				return codec.Stale(d, stored)
			}
			if err != nil {
				if c := constraint(err); errors.Is(c, store.ErrNotFound) {
					err = c
				}
				return codec.EntryError(d, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.fan.Publish(last)
	return nil
}

const desiredCols = `vehicle, half, revision, seq, digest, issued_at, expires, root_version, content_hash, envelope, placement, objects`

// GetDesired returns a vehicle half's newest revision, or
// store.ErrNotFound.
func (s *Store) GetDesired(ctx context.Context, vehicle, half string) (store.Desired, error) {
	var (
		d               store.Desired
		issued, expires int64
		j               codec.DesiredJSON
	)
	err := s.r.QueryRowContext(ctx, `SELECT `+desiredCols+` FROM desired WHERE vehicle = ? AND half = ?`, vehicle, half).Scan(
		&d.Vehicle, &d.Half, &d.Revision, &d.Seq, &d.Digest, &issued, &expires, &d.RootVersion, &d.ContentHash,
		&j.Envelope, &j.Placement, &j.Objects)
	if err != nil {
		return store.Desired{}, fmt.Errorf("sqlite: get desired %s/%s: %w", vehicle, half, notFound(err))
	}
	d.IssuedAt, d.Expires = fromMicros(issued), fromMicros(expires)
	if err := j.Decode(&d); err != nil {
		return store.Desired{}, fmt.Errorf("sqlite: get desired %s/%s: %w", vehicle, half, err)
	}
	return d, nil
}

// DesiredSince lists the vehicle halves whose newest revision was written
// after seq, in sequence order, at most limit (0: 100).
func (s *Store) DesiredSince(ctx context.Context, seq int64, limit int) ([]store.Change, error) {
	limit = codec.Limit(limit)
	rows, err := s.r.QueryContext(ctx, `SELECT seq, vehicle, half, revision FROM desired WHERE seq > ? ORDER BY seq LIMIT ?`, seq, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: desired since %d: %w", seq, err)
	}
	defer rows.Close()
	out := []store.Change{}
	for rows.Next() {
		var c store.Change
		if err := rows.Scan(&c.Seq, &c.Vehicle, &c.Half, &c.Revision); err != nil {
			return nil, fmt.Errorf("sqlite: desired since %d: %w", seq, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: desired since %d: %w", seq, err)
	}
	return out, nil
}

// Sequence returns the newest change sequence (0 before the first write).
func (s *Store) Sequence(ctx context.Context) (int64, error) {
	var v int64
	if err := s.r.QueryRowContext(ctx, `SELECT value FROM change_seq WHERE id = 1`).Scan(&v); err != nil {
		return 0, fmt.Errorf("sqlite: sequence: %w", err)
	}
	return v, nil
}

// Changes delivers the newest sequence after each PutDesired or
// PutDesiredBatch through this *Store, coalescing; see store.Store. It is
// in-process only (see the package doc). A caller that also wants the
// state before subscribing calls Changes first, then Sequence, so no write
// falls between the two.
func (s *Store) Changes(ctx context.Context) (<-chan int64, error) {
	return s.fan.Subscribe(ctx), nil
}
