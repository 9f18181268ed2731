package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/internal/codec"
)

const vehicleCols = `id, labels, capacity, allocatable, facts, enrolled, cert_expires, last_seen, created, resource_version`

func scanVehicle(sc interface{ Scan(...any) error }) (hubv1.Vehicle, error) {
	var (
		v                               hubv1.Vehicle
		j                               codec.VehicleJSON
		enrolled, certExpires, lastSeen sql.NullInt64
		created                         int64
	)
	if err := sc.Scan(&v.ID, &j.Labels, &j.Capacity, &j.Allocatable, &j.Facts, &enrolled, &certExpires, &lastSeen, &created, &v.ResourceVersion); err != nil {
		return v, err
	}
	if err := j.Decode(&v); err != nil {
		return v, err
	}
	v.Enrolled, v.CertificateExpires, v.LastSeen = fromNullMicros(enrolled), fromNullMicros(certExpires), fromNullMicros(lastSeen)
	v.Created = fromMicros(created)
	return v, nil
}

// CreateVehicle stores v with ResourceVersion 1 (Online is not stored), or
// returns store.ErrExists.
func (s *Store) CreateVehicle(ctx context.Context, v hubv1.Vehicle) error {
	j, err := codec.EncodeVehicle(v)
	if err != nil {
		return fmt.Errorf("sqlite: create vehicle %s: %w", v.ID, err)
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO vehicles (`+vehicleCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)`,
		v.ID, j.Labels, j.Capacity, j.Allocatable, j.Facts, nullMicros(v.Enrolled), nullMicros(v.CertificateExpires), nullMicros(v.LastSeen), micros(v.Created))
	if err != nil {
		return fmt.Errorf("sqlite: create vehicle %s: %w", v.ID, constraint(err))
	}
	return nil
}

// GetVehicle returns the vehicle, or store.ErrNotFound.
func (s *Store) GetVehicle(ctx context.Context, id string) (hubv1.Vehicle, error) {
	v, err := scanVehicle(s.r.QueryRowContext(ctx, `SELECT `+vehicleCols+` FROM vehicles WHERE id = ?`, id))
	if err != nil {
		return hubv1.Vehicle{}, fmt.Errorf("sqlite: get vehicle %s: %w", id, notFound(err))
	}
	return v, nil
}

// ListVehicles pages vehicles by ID; see store.Store and
// codec.ListVehicles.
func (s *Store) ListVehicles(ctx context.Context, p store.Page, match func(map[string]string) bool) ([]hubv1.Vehicle, string, error) {
	out, next, err := codec.ListVehicles(p, match, func(after string, n int) ([]hubv1.Vehicle, error) {
		return s.vehicles(ctx, after, n)
	})
	if err != nil {
		return nil, "", fmt.Errorf("sqlite: list vehicles %w", err)
	}
	return out, next, nil
}

// vehicles reads up to n vehicles with IDs above after, by ID.
func (s *Store) vehicles(ctx context.Context, after string, n int) ([]hubv1.Vehicle, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+vehicleCols+` FROM vehicles WHERE id > ? ORDER BY id LIMIT ?`, after, n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []hubv1.Vehicle
	for rows.Next() {
		v, err := scanVehicle(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// UpdateVehicle replaces labels, and capacity and allocatable when not
// nil, if v.ResourceVersion is the stored one; see store.Store.
func (s *Store) UpdateVehicle(ctx context.Context, v hubv1.Vehicle) (hubv1.Vehicle, error) {
	u, err := codec.EncodeUpdate(v)
	if err != nil {
		return hubv1.Vehicle{}, fmt.Errorf("sqlite: update vehicle %s: %w", v.ID, err)
	}
	var out hubv1.Vehicle
	err = s.write(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = scanVehicle(tx.QueryRowContext(ctx, `UPDATE vehicles SET labels = ?, capacity = coalesce(?, capacity),
			allocatable = coalesce(?, allocatable), resource_version = resource_version + 1
			WHERE id = ? AND resource_version = ? RETURNING `+vehicleCols,
			u.Labels, u.Capacity, u.Allocatable, v.ID, v.ResourceVersion))
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		ok, err := vehicleExists(ctx, tx, v.ID)
		if err != nil {
			return err
		}
		return codec.Missed(ok, "resource version", v.ResourceVersion)
	})
	if err != nil {
		return hubv1.Vehicle{}, fmt.Errorf("sqlite: update vehicle %s: %w", v.ID, err)
	}
	return out, nil
}

// DeleteVehicle deletes the vehicle with its tokens, reports and desired
// state, or returns store.ErrNotFound.
func (s *Store) DeleteVehicle(ctx context.Context, id string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM vehicles WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("sqlite: delete vehicle %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sqlite: delete vehicle %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// SetEnrolled sets the certificate expiry, and the enrolment time if the
// vehicle has none yet.
func (s *Store) SetEnrolled(ctx context.Context, id string, at, certExpires time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE vehicles SET enrolled = coalesce(enrolled, ?), cert_expires = ?,
		resource_version = resource_version + 1 WHERE id = ?`, micros(at), micros(certExpires), id)
	if err != nil {
		return fmt.Errorf("sqlite: set enrolled %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sqlite: set enrolled %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// Seen moves the vehicle's last-seen time forward to at (never back).
func (s *Store) Seen(ctx context.Context, id string, at time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE vehicles SET last_seen = ?, resource_version = resource_version + 1
			WHERE id = ? AND (last_seen IS NULL OR last_seen < ?)`, micros(at), id, micros(at))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			return nil
		}
		if ok, err := vehicleExists(ctx, tx, id); err != nil {
			return err
		} else if !ok {
			return store.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: seen %s: %w", id, err)
	}
	return nil
}

// PutReported stores the report of r.Half and merges the facts, capacity
// and allocatable it carries (each when not nil) into the vehicle.
func (s *Store) PutReported(ctx context.Context, id string, r hubv1.Reported) (bool, error) {
	body, err := codec.ReportBody(r)
	if err != nil {
		return false, fmt.Errorf("sqlite: put reported %s/%s: %w", id, r.Half, err)
	}
	var changed bool
	err = s.write(ctx, func(tx *sql.Tx) error {
		var j codec.ReportedJSON
		err := tx.QueryRowContext(ctx, `SELECT facts, capacity, allocatable FROM vehicles WHERE id = ?`, id).Scan(&j.Facts, &j.Capacity, &j.Allocatable)
		if err != nil {
			return notFound(err)
		}
		if j, changed, err = j.Merge(r); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO reports (vehicle, half, applied_revision, body) VALUES (?, ?, ?, ?)
			ON CONFLICT (vehicle, half) DO UPDATE SET applied_revision = excluded.applied_revision, body = excluded.body`,
			id, r.Half, r.AppliedRevision, body); err != nil {
			return err
		}
		if !changed {
			return nil
		}
		_, err = tx.ExecContext(ctx, `UPDATE vehicles SET facts = ?, capacity = ?, allocatable = ?,
			resource_version = resource_version + 1 WHERE id = ?`, j.Facts, j.Capacity, j.Allocatable, id)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("sqlite: put reported %s/%s: %w", id, r.Half, err)
	}
	return changed, nil
}

// GetReported returns the vehicle's reports by half, or store.ErrNotFound
// if there is no such vehicle.
func (s *Store) GetReported(ctx context.Context, id string) ([]hubv1.Reported, error) {
	out, err := s.reports(ctx, id)
	if err == nil && len(out) == 0 {
		var ok bool
		if ok, err = vehicleExists(ctx, s.r, id); err == nil && !ok {
			err = store.ErrNotFound
		}
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get reported %s: %w", id, err)
	}
	return out, nil
}

// ListReported returns the reports of many vehicles; see store.Store.
func (s *Store) ListReported(ctx context.Context, ids []string) (map[string][]hubv1.Reported, error) {
	out := map[string][]hubv1.Reported{}
	const chunk = 500 // well under SQLite's limit on bound parameters
	for len(ids) > 0 {
		n := min(chunk, len(ids))
		if err := s.addReports(ctx, ids[:n], out); err != nil {
			return nil, fmt.Errorf("sqlite: list reported: %w", err)
		}
		ids = ids[n:]
	}
	return out, nil
}

// addReports adds the reports of the vehicles ids, read in one query, to
// out by vehicle.
func (s *Store) addReports(ctx context.Context, ids []string, out map[string][]hubv1.Reported) error {
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	rows, err := s.r.QueryContext(ctx, `SELECT vehicle, body FROM reports WHERE vehicle IN (?`+strings.Repeat(", ?", len(ids)-1)+`) ORDER BY vehicle, half`, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, body string
		if err := rows.Scan(&id, &body); err != nil {
			return err
		}
		r, err := codec.DecodeReport(body)
		if err != nil {
			return fmt.Errorf("%s: %w", id, err)
		}
		out[id] = append(out[id], r)
	}
	return rows.Err()
}

func (s *Store) reports(ctx context.Context, id string) ([]hubv1.Reported, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT body FROM reports WHERE vehicle = ? ORDER BY half`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []hubv1.Reported{}
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			return nil, err
		}
		r, err := codec.DecodeReport(body)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
