package sqlite

import (
	"context"
	"fmt"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/internal/codec"
)

// AppendAudit appends e; the store assigns its ID (e.ID is ignored).
func (s *Store) AppendAudit(ctx context.Context, e hubv1.AuditEntry) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO audit (time, actor, action, object, detail) VALUES (?, ?, ?, ?, ?)`,
		micros(e.Time), e.Actor, e.Action, e.Object, e.Detail)
	if err != nil {
		return fmt.Errorf("sqlite: append audit %s %s: %w", e.Action, e.Object, err)
	}
	return nil
}

// ListAudit pages entries newest first; p.After is the ID of the last
// entry of the previous page.
func (s *Store) ListAudit(ctx context.Context, p store.Page) ([]hubv1.AuditEntry, string, error) {
	before, lim, err := codec.AuditRange(p)
	if err != nil {
		return nil, "", fmt.Errorf("sqlite: list audit: %w", err)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT id, time, actor, action, object, detail FROM audit
		WHERE id < ? ORDER BY id DESC LIMIT ?`, before, lim+1)
	if err != nil {
		return nil, "", fmt.Errorf("sqlite: list audit: %w", err)
	}
	defer rows.Close()
	var out []hubv1.AuditEntry
	for rows.Next() {
		var (
			e  hubv1.AuditEntry
			at int64
		)
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.Object, &e.Detail); err != nil {
			return nil, "", fmt.Errorf("sqlite: list audit: %w", err)
		}
		e.Time = fromMicros(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("sqlite: list audit: %w", err)
	}
	out, next := codec.PageAudit(out, lim)
	return out, next, nil
}

// TryLease takes or renews name for holder until now+ttl if it is free,
// expired at now, or holder's; it reports whether holder has it.
func (s *Store) TryLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	if err := codec.CheckLease(holder, ttl); err != nil {
		return false, fmt.Errorf("sqlite: lease %s: %w", name, err)
	}
	rows, err := s.w.QueryContext(ctx, `INSERT INTO leases (name, holder, expires) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
		WHERE leases.holder = excluded.holder OR leases.expires <= ?
		RETURNING holder`, name, holder, micros(now.Add(ttl)), micros(now))
	if err != nil {
		return false, fmt.Errorf("sqlite: lease %s for %s: %w", name, holder, err)
	}
	defer rows.Close()
	got := rows.Next()
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("sqlite: lease %s for %s: %w", name, holder, err)
	}
	return got, nil
}
