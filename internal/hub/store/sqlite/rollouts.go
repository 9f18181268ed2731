package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/internal/codec"
)

const rolloutCols = `id, deployment, generation, phase, doc, created_by, created, updated, resource_version`

func scanRollout(sc interface{ Scan(...any) error }) (hubv1.Rollout, int64, error) {
	var (
		r                hubv1.Rollout
		id               int64
		doc              string
		created, updated int64
	)
	if err := sc.Scan(&id, &r.Deployment, &r.Generation, &r.Phase, &doc, &r.CreatedBy, &created, &updated, &r.ResourceVersion); err != nil {
		return r, 0, err
	}
	if err := codec.DecodeRolloutDoc(doc, &r); err != nil {
		return r, 0, err
	}
	r.Created, r.Updated = fromMicros(created), fromMicros(updated)
	return r, id, nil
}

// GetDeploymentVersion returns one kept generation of a deployment.
func (s *Store) GetDeploymentVersion(ctx context.Context, name string, generation int64) (hubv1.Deployment, error) {
	d, err := scanDeployment(s.r.QueryRowContext(ctx, `SELECT `+deploymentCols+` FROM deployment_versions WHERE name = ? AND generation = ?`, name, generation))
	if err != nil {
		return hubv1.Deployment{}, fmt.Errorf("sqlite: get deployment %s generation %d: %w", name, generation, notFound(err))
	}
	return d, nil
}

// ListDeploymentVersions returns a deployment's kept generations, newest
// first.
func (s *Store) ListDeploymentVersions(ctx context.Context, name string) ([]hubv1.Deployment, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+deploymentCols+` FROM deployment_versions WHERE name = ? ORDER BY generation DESC`, name)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list deployment %s versions: %w", name, err)
	}
	defer rows.Close()
	var out []hubv1.Deployment
	for rows.Next() {
		d, err := scanDeployment(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list deployment %s versions: %w", name, err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list deployment %s versions: %w", name, err)
	}
	if len(out) == 0 {
		var one int
		if err := s.r.QueryRowContext(ctx, `SELECT 1 FROM deployments WHERE name = ?`, name).Scan(&one); err != nil {
			return nil, fmt.Errorf("sqlite: list deployment %s versions: %w", name, notFound(err))
		}
	}
	return codec.NonNil(out), nil
}

// GetRollout returns the rollout of one generation.
func (s *Store) GetRollout(ctx context.Context, name string, generation int64) (hubv1.Rollout, error) {
	r, _, err := scanRollout(s.r.QueryRowContext(ctx, `SELECT `+rolloutCols+` FROM rollouts WHERE deployment = ? AND generation = ?`, name, generation))
	if err != nil {
		return hubv1.Rollout{}, fmt.Errorf("sqlite: get rollout %s/%d: %w", name, generation, notFound(err))
	}
	return r, nil
}

// ListRollouts pages rollouts newest first.
func (s *Store) ListRollouts(ctx context.Context, f store.RolloutFilter, p store.Page) ([]hubv1.Rollout, string, error) {
	before, err := codec.RolloutCursor(p)
	if err != nil {
		return nil, "", fmt.Errorf("sqlite: list rollouts: %w", err)
	}
	lim := codec.Limit(p.Limit)
	q := `SELECT ` + rolloutCols + ` FROM rollouts WHERE id < ?`
	args := []any{before}
	if f.Deployment != "" {
		q += ` AND deployment = ?`
		args = append(args, f.Deployment)
	}
	if f.Active {
		q += ` AND phase IN (?, ?)`
		args = append(args, hubv1.RolloutProgressing, hubv1.RolloutPaused)
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY id DESC LIMIT ?`, append(args, lim+1)...)
	if err != nil {
		return nil, "", fmt.Errorf("sqlite: list rollouts: %w", err)
	}
	defer rows.Close()
	var (
		out []hubv1.Rollout
		ids []int64
	)
	for rows.Next() {
		r, id, err := scanRollout(rows)
		if err != nil {
			return nil, "", fmt.Errorf("sqlite: list rollouts: %w", err)
		}
		out, ids = append(out, r), append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("sqlite: list rollouts: %w", err)
	}
	out, next := codec.PageRollouts(out, ids, lim)
	return out, next, nil
}

// UpdateRollout stores r and upserts the vehicle records; see store.Store.
func (s *Store) UpdateRollout(ctx context.Context, r hubv1.Rollout, vehicles []hubv1.RolloutVehicle) (hubv1.Rollout, error) {
	doc, err := codec.RolloutDoc(r)
	if err != nil {
		return hubv1.Rollout{}, fmt.Errorf("sqlite: update rollout %s/%d: %w", r.Deployment, r.Generation, err)
	}
	var out hubv1.Rollout
	err = s.write(ctx, func(tx *sql.Tx) error {
		var id int64
		var err error
		out, id, err = scanRollout(tx.QueryRowContext(ctx, `UPDATE rollouts SET phase = ?, doc = ?, updated = ?, resource_version = resource_version + 1
			WHERE deployment = ? AND generation = ? AND resource_version = ? RETURNING `+rolloutCols,
			r.Phase, doc, micros(r.Updated), r.Deployment, r.Generation, r.ResourceVersion))
		if errors.Is(err, sql.ErrNoRows) {
			var one int
			err := tx.QueryRowContext(ctx, `SELECT 1 FROM rollouts WHERE deployment = ? AND generation = ?`, r.Deployment, r.Generation).Scan(&one)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			return codec.Missed(err == nil, "resourceVersion", r.ResourceVersion)
		}
		if err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO rollout_vehicles (rollout, vehicle, wave, released, state, reason) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (rollout, vehicle) DO UPDATE SET wave = excluded.wave, released = excluded.released, state = excluded.state, reason = excluded.reason`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, v := range vehicles {
			if _, err := stmt.ExecContext(ctx, id, v.Vehicle, v.Wave, v.Released, v.State, v.Reason); err != nil {
				return fmt.Errorf("vehicle %s: %w", v.Vehicle, err)
			}
		}
		return nil
	})
	if err != nil {
		return hubv1.Rollout{}, fmt.Errorf("sqlite: update rollout %s/%d: %w", r.Deployment, r.Generation, err)
	}
	return out, nil
}

// ListRolloutVehicles pages a rollout's vehicle records by vehicle ID.
func (s *Store) ListRolloutVehicles(ctx context.Context, name string, generation int64, f store.RolloutVehicleFilter, p store.Page) ([]hubv1.RolloutVehicle, string, error) {
	var id int64
	if err := s.r.QueryRowContext(ctx, `SELECT id FROM rollouts WHERE deployment = ? AND generation = ?`, name, generation).Scan(&id); err != nil {
		return nil, "", fmt.Errorf("sqlite: list rollout %s/%d vehicles: %w", name, generation, notFound(err))
	}
	lim := codec.Limit(p.Limit)
	var where strings.Builder
	args := []any{id, p.After}
	if f.State != "" {
		where.WriteString(` AND state = ?`)
		args = append(args, f.State)
	}
	if f.Wave != nil {
		where.WriteString(` AND wave = ?`)
		args = append(args, *f.Wave)
	}
	if f.Released {
		where.WriteString(` AND released`)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT vehicle, wave, released, state, reason FROM rollout_vehicles WHERE rollout = ? AND vehicle > ?`+where.String()+` ORDER BY vehicle LIMIT ?`, append(args, lim+1)...)
	if err != nil {
		return nil, "", fmt.Errorf("sqlite: list rollout %s/%d vehicles: %w", name, generation, err)
	}
	defer rows.Close()
	var out []hubv1.RolloutVehicle
	for rows.Next() {
		var v hubv1.RolloutVehicle
		if err := rows.Scan(&v.Vehicle, &v.Wave, &v.Released, &v.State, &v.Reason); err != nil {
			return nil, "", fmt.Errorf("sqlite: list rollout %s/%d vehicles: %w", name, generation, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("sqlite: list rollout %s/%d vehicles: %w", name, generation, err)
	}
	out, next := codec.PageRolloutVehicles(out, lim)
	return out, next, nil
}
