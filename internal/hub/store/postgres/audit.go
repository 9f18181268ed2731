package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/internal/codec"
)

// AppendAudit appends e; the store assigns its ID (e.ID is ignored).
func (s *Store) AppendAudit(ctx context.Context, e hubv1.AuditEntry) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO audit (time, actor, action, object, detail) VALUES ($1, $2, $3, $4, $5)`,
		e.Time, e.Actor, e.Action, e.Object, e.Detail)
	if err != nil {
		return fmt.Errorf("postgres: append audit %s %s: %w", e.Action, e.Object, err)
	}
	return nil
}

// ListAudit pages entries newest first; p.After is the ID of the last
// entry of the previous page.
func (s *Store) ListAudit(ctx context.Context, p store.Page) ([]hubv1.AuditEntry, string, error) {
	before, lim, err := codec.AuditRange(p)
	if err != nil {
		return nil, "", fmt.Errorf("postgres: list audit: %w", err)
	}
	rows, _ := s.pool.Query(ctx, `SELECT id, time, actor, action, object, detail FROM audit
		WHERE id < $1 ORDER BY id DESC LIMIT $2`, before, lim+1)
	out, err := collect(rows, func(row pgx.Row) (hubv1.AuditEntry, error) {
		var e hubv1.AuditEntry
		err := row.Scan(&e.ID, &e.Time, &e.Actor, &e.Action, &e.Object, &e.Detail)
		e.Time = utc(e.Time)
		return e, err
	})
	if err != nil {
		return nil, "", fmt.Errorf("postgres: list audit: %w", err)
	}
	out, next := codec.PageAudit(out, lim)
	return out, next, nil
}

// TryLease takes or renews name for holder until now+ttl if it is free,
// expired at now, or holder's; it reports whether holder has it. Two
// concurrent takers of a free lease: the second's insert waits for the
// first's and then finds it held.
func (s *Store) TryLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	if err := codec.CheckLease(holder, ttl); err != nil {
		return false, fmt.Errorf("postgres: lease %s: %w", name, err)
	}
	var got string
	err := s.pool.QueryRow(ctx, `INSERT INTO leases (name, holder, expires) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
		WHERE leases.holder = excluded.holder OR leases.expires <= $4
		RETURNING holder`, name, holder, now.Add(ttl), now).Scan(&got)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("postgres: lease %s for %s: %w", name, holder, err)
	}
	return true, nil
}
