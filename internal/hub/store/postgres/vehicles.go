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

const vehicleCols = `id, labels, capacity, allocatable, facts, enrolled, cert_expires, last_seen, created, resource_version`

func scanVehicle(row pgx.Row) (hubv1.Vehicle, error) {
	var (
		v hubv1.Vehicle
		j codec.VehicleJSON
	)
	if err := row.Scan(&v.ID, &j.Labels, &j.Capacity, &j.Allocatable, &j.Facts, &v.Enrolled, &v.CertificateExpires, &v.LastSeen,
		&v.Created, &v.ResourceVersion); err != nil {
		return v, err
	}
	if err := j.Decode(&v); err != nil {
		return v, err
	}
	v.Enrolled, v.CertificateExpires, v.LastSeen = utcPtr(v.Enrolled), utcPtr(v.CertificateExpires), utcPtr(v.LastSeen)
	v.Created = utc(v.Created)
	return v, nil
}

// CreateVehicle stores v with ResourceVersion 1 (Online is not stored), or
// returns store.ErrExists.
func (s *Store) CreateVehicle(ctx context.Context, v hubv1.Vehicle) error {
	j, err := codec.EncodeVehicle(v)
	if err != nil {
		return fmt.Errorf("postgres: create vehicle %s: %w", v.ID, err)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO vehicles (`+vehicleCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1)`,
		v.ID, j.Labels, j.Capacity, j.Allocatable, j.Facts, v.Enrolled, v.CertificateExpires, v.LastSeen, v.Created)
	if err != nil {
		return fmt.Errorf("postgres: create vehicle %s: %w", v.ID, constraint(err))
	}
	return nil
}

// GetVehicle returns the vehicle, or store.ErrNotFound.
func (s *Store) GetVehicle(ctx context.Context, id string) (hubv1.Vehicle, error) {
	v, err := scanVehicle(s.pool.QueryRow(ctx, `SELECT `+vehicleCols+` FROM vehicles WHERE id = $1`, id))
	if err != nil {
		return hubv1.Vehicle{}, fmt.Errorf("postgres: get vehicle %s: %w", id, notFound(err))
	}
	return v, nil
}

// ListVehicles pages vehicles by ID; see store.Store and
// codec.ListVehicles.
func (s *Store) ListVehicles(ctx context.Context, p store.Page, match func(map[string]string) bool) ([]hubv1.Vehicle, string, error) {
	out, next, err := codec.ListVehicles(p, match, func(after string, n int) ([]hubv1.Vehicle, error) {
		rows, _ := s.pool.Query(ctx, `SELECT `+vehicleCols+` FROM vehicles WHERE id > $1 ORDER BY id LIMIT $2`, after, n)
		return collect(rows, scanVehicle)
	})
	if err != nil {
		return nil, "", fmt.Errorf("postgres: list vehicles %w", err)
	}
	return out, next, nil
}

// UpdateVehicle replaces labels, and capacity and allocatable when not
// nil, if v.ResourceVersion is the stored one; see store.Store.
func (s *Store) UpdateVehicle(ctx context.Context, v hubv1.Vehicle) (hubv1.Vehicle, error) {
	u, err := codec.EncodeUpdate(v)
	if err != nil {
		return hubv1.Vehicle{}, fmt.Errorf("postgres: update vehicle %s: %w", v.ID, err)
	}
	out, err := scanVehicle(s.pool.QueryRow(ctx, `UPDATE vehicles SET labels = $1, capacity = coalesce($2, capacity),
		allocatable = coalesce($3, allocatable), resource_version = resource_version + 1
		WHERE id = $4 AND resource_version = $5 RETURNING `+vehicleCols,
		u.Labels, u.Capacity, u.Allocatable, v.ID, v.ResourceVersion))
	if errors.Is(err, pgx.ErrNoRows) {
		var ok bool
		if ok, err = vehicleExists(ctx, s.pool, v.ID); err == nil {
			err = codec.Missed(ok, "resource version", v.ResourceVersion)
		}
	}
	if err != nil {
		return hubv1.Vehicle{}, fmt.Errorf("postgres: update vehicle %s: %w", v.ID, err)
	}
	return out, nil
}

// DeleteVehicle deletes the vehicle with its tokens, reports and desired
// state, or returns store.ErrNotFound.
func (s *Store) DeleteVehicle(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM vehicles WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("postgres: delete vehicle %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: delete vehicle %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// SetEnrolled sets the certificate expiry, and the enrolment time if the
// vehicle has none yet.
func (s *Store) SetEnrolled(ctx context.Context, id string, at, certExpires time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE vehicles SET enrolled = coalesce(enrolled, $1), cert_expires = $2,
		resource_version = resource_version + 1 WHERE id = $3`, at, certExpires, id)
	if err != nil {
		return fmt.Errorf("postgres: set enrolled %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: set enrolled %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// Seen moves the vehicle's last-seen time forward to at (never back).
func (s *Store) Seen(ctx context.Context, id string, at time.Time) error {
	at = codec.Norm(at)
	tag, err := s.pool.Exec(ctx, `UPDATE vehicles SET last_seen = $1, resource_version = resource_version + 1
		WHERE id = $2 AND (last_seen IS NULL OR last_seen < $1)`, at, id)
	if err == nil && tag.RowsAffected() == 0 {
		var ok bool
		if ok, err = vehicleExists(ctx, s.pool, id); err == nil && !ok {
			err = store.ErrNotFound
		}
	}
	if err != nil {
		return fmt.Errorf("postgres: seen %s: %w", id, err)
	}
	return nil
}

// PutReported stores the report of r.Half and merges the facts, capacity
// and allocatable it carries (each when not nil) into the vehicle.
func (s *Store) PutReported(ctx context.Context, id string, r hubv1.Reported) (bool, error) {
	body, err := codec.ReportBody(r)
	if err != nil {
		return false, fmt.Errorf("postgres: put reported %s/%s: %w", id, r.Half, err)
	}
	var changed bool
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var j codec.ReportedJSON
		err := tx.QueryRow(ctx, `SELECT facts, capacity, allocatable FROM vehicles WHERE id = $1 FOR UPDATE`, id).Scan(&j.Facts, &j.Capacity, &j.Allocatable)
		if err != nil {
			return notFound(err)
		}
		if j, changed, err = j.Merge(r); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO reports (vehicle, half, applied_revision, body) VALUES ($1, $2, $3, $4)
			ON CONFLICT (vehicle, half) DO UPDATE SET applied_revision = excluded.applied_revision, body = excluded.body`,
			id, r.Half, r.AppliedRevision, body); err != nil {
			return err
		}
		if !changed {
			return nil
		}
		_, err = tx.Exec(ctx, `UPDATE vehicles SET facts = $1, capacity = $2, allocatable = $3,
			resource_version = resource_version + 1 WHERE id = $4`, j.Facts, j.Capacity, j.Allocatable, id)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("postgres: put reported %s/%s: %w", id, r.Half, err)
	}
	return changed, nil
}

// ListReported returns the reports of many vehicles; see store.Store.
func (s *Store) ListReported(ctx context.Context, ids []string) (map[string][]hubv1.Reported, error) {
	out := map[string][]hubv1.Reported{}
	if len(ids) == 0 {
		return out, nil
	}
	rows, _ := s.pool.Query(ctx, `SELECT vehicle, body FROM reports WHERE vehicle = ANY ($1) ORDER BY vehicle, half`, ids)
	_, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (struct{}, error) {
		var id, body string
		if err := row.Scan(&id, &body); err != nil {
			return struct{}{}, err
		}
		r, err := codec.DecodeReport(body)
		if err != nil {
			return struct{}{}, fmt.Errorf("%s: %w", id, err)
		}
		out[id] = append(out[id], r)
		return struct{}{}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list reported: %w", err)
	}
	return out, nil
}

// GetReported returns the vehicle's reports by half, or store.ErrNotFound
// if there is no such vehicle.
func (s *Store) GetReported(ctx context.Context, id string) ([]hubv1.Reported, error) {
	rows, _ := s.pool.Query(ctx, `SELECT body FROM reports WHERE vehicle = $1 ORDER BY half`, id)
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (hubv1.Reported, error) {
		var body string
		if err := row.Scan(&body); err != nil {
			return hubv1.Reported{}, err
		}
		return codec.DecodeReport(body)
	})
	if err == nil && len(out) == 0 {
		var ok bool
		if ok, err = vehicleExists(ctx, s.pool, id); err == nil && !ok {
			err = store.ErrNotFound
		}
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get reported %s: %w", id, err)
	}
	return codec.NonNil(out), nil
}
