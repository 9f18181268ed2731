package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/internal/codec"
)

const rolloutCols = `id, deployment, generation, phase, doc, created_by, created, updated, resource_version`

func scanRollout(row pgx.Row) (hubv1.Rollout, int64, error) {
	var (
		r   hubv1.Rollout
		id  int64
		doc string
	)
	if err := row.Scan(&id, &r.Deployment, &r.Generation, &r.Phase, &doc, &r.CreatedBy, &r.Created, &r.Updated, &r.ResourceVersion); err != nil {
		return r, 0, err
	}
	if err := codec.DecodeRolloutDoc(doc, &r); err != nil {
		return r, 0, err
	}
	r.Created, r.Updated = utc(r.Created), utc(r.Updated)
	return r, id, nil
}

// GetDeploymentVersion returns one kept generation of a deployment.
func (s *Store) GetDeploymentVersion(ctx context.Context, name string, generation int64) (hubv1.Deployment, error) {
	d, err := scanDeployment(s.pool.QueryRow(ctx, `SELECT `+deploymentCols+` FROM deployment_versions WHERE name = $1 AND generation = $2`, name, generation))
	if err != nil {
		return hubv1.Deployment{}, fmt.Errorf("postgres: get deployment %s generation %d: %w", name, generation, notFound(err))
	}
	return d, nil
}

// ListDeploymentVersions returns a deployment's kept generations, newest
// first.
func (s *Store) ListDeploymentVersions(ctx context.Context, name string) ([]hubv1.Deployment, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+deploymentCols+` FROM deployment_versions WHERE name = $1 ORDER BY generation DESC`, name)
	out, err := collect(rows, scanDeployment)
	if err != nil {
		return nil, fmt.Errorf("postgres: list deployment %s versions: %w", name, err)
	}
	if len(out) == 0 {
		var ok bool
		err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM deployments WHERE name = $1)`, name).Scan(&ok)
		if err == nil && !ok {
			err = store.ErrNotFound
		}
		if err != nil {
			return nil, fmt.Errorf("postgres: list deployment %s versions: %w", name, err)
		}
	}
	return codec.NonNil(out), nil
}

// GetRollout returns the rollout of one generation.
func (s *Store) GetRollout(ctx context.Context, name string, generation int64) (hubv1.Rollout, error) {
	r, _, err := scanRollout(s.pool.QueryRow(ctx, `SELECT `+rolloutCols+` FROM rollouts WHERE deployment = $1 AND generation = $2`, name, generation))
	if err != nil {
		return hubv1.Rollout{}, fmt.Errorf("postgres: get rollout %s/%d: %w", name, generation, notFound(err))
	}
	return r, nil
}

// ListRollouts pages rollouts newest first.
func (s *Store) ListRollouts(ctx context.Context, f store.RolloutFilter, p store.Page) ([]hubv1.Rollout, string, error) {
	before, err := codec.RolloutCursor(p)
	if err != nil {
		return nil, "", fmt.Errorf("postgres: list rollouts: %w", err)
	}
	lim := codec.Limit(p.Limit)
	q := `SELECT ` + rolloutCols + ` FROM rollouts WHERE id < $1`
	args := []any{before}
	if f.Deployment != "" {
		args = append(args, f.Deployment)
		q += ` AND deployment = $` + strconv.Itoa(len(args))
	}
	if f.Active {
		args = append(args, []string{hubv1.RolloutProgressing, hubv1.RolloutPaused})
		q += ` AND phase = ANY ($` + strconv.Itoa(len(args)) + `)`
	}
	args = append(args, lim+1)
	rows, _ := s.pool.Query(ctx, q+` ORDER BY id DESC LIMIT $`+strconv.Itoa(len(args)), args...)
	var ids []int64
	out, err := collect(rows, func(row pgx.Row) (hubv1.Rollout, error) {
		r, id, err := scanRollout(row)
		ids = append(ids, id)
		return r, err
	})
	if err != nil {
		return nil, "", fmt.Errorf("postgres: list rollouts: %w", err)
	}
	out, next := codec.PageRollouts(out, ids, lim)
	return out, next, nil
}

// UpdateRollout stores r and upserts the vehicle records; see store.Store.
func (s *Store) UpdateRollout(ctx context.Context, r hubv1.Rollout, vehicles []hubv1.RolloutVehicle) (hubv1.Rollout, error) {
	doc, err := codec.RolloutDoc(r)
	if err != nil {
		return hubv1.Rollout{}, fmt.Errorf("postgres: update rollout %s/%d: %w", r.Deployment, r.Generation, err)
	}
	var out hubv1.Rollout
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var (
			id  int64
			err error
		)
		out, id, err = scanRollout(tx.QueryRow(ctx, `UPDATE rollouts SET phase = $1, doc = $2, updated = $3, resource_version = resource_version + 1
			WHERE deployment = $4 AND generation = $5 AND resource_version = $6 RETURNING `+rolloutCols,
			r.Phase, doc, r.Updated, r.Deployment, r.Generation, r.ResourceVersion))
		if errors.Is(err, pgx.ErrNoRows) {
			var ok bool
			if err = tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM rollouts WHERE deployment = $1 AND generation = $2)`, r.Deployment, r.Generation).Scan(&ok); err == nil {
				err = codec.Missed(ok, "resourceVersion", r.ResourceVersion)
			}
			return err
		}
		if err != nil || len(vehicles) == 0 {
			return err
		}
		names := make([]string, len(vehicles))
		waves := make([]int64, len(vehicles))
		released := make([]bool, len(vehicles))
		states := make([]string, len(vehicles))
		reasons := make([]string, len(vehicles))
		for i, v := range vehicles {
			names[i], waves[i], released[i], states[i], reasons[i] = v.Vehicle, int64(v.Wave), v.Released, v.State, v.Reason
		}
		_, err = tx.Exec(ctx, `INSERT INTO rollout_vehicles (rollout, vehicle, wave, released, state, reason)
			SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::boolean[], $5::text[], $6::text[])
			ON CONFLICT (rollout, vehicle) DO UPDATE SET wave = excluded.wave, released = excluded.released, state = excluded.state, reason = excluded.reason`,
			id, names, waves, released, states, reasons)
		return err
	})
	if err != nil {
		return hubv1.Rollout{}, fmt.Errorf("postgres: update rollout %s/%d: %w", r.Deployment, r.Generation, err)
	}
	return out, nil
}

// ListRolloutVehicles pages a rollout's vehicle records by vehicle ID.
func (s *Store) ListRolloutVehicles(ctx context.Context, name string, generation int64, f store.RolloutVehicleFilter, p store.Page) ([]hubv1.RolloutVehicle, string, error) {
	var id int64
	if err := s.pool.QueryRow(ctx, `SELECT id FROM rollouts WHERE deployment = $1 AND generation = $2`, name, generation).Scan(&id); err != nil {
		return nil, "", fmt.Errorf("postgres: list rollout %s/%d vehicles: %w", name, generation, notFound(err))
	}
	lim := codec.Limit(p.Limit)
	q := `SELECT vehicle, wave, released, state, reason FROM rollout_vehicles WHERE rollout = $1 AND vehicle > $2`
	args := []any{id, p.After}
	if f.State != "" {
		args = append(args, f.State)
		q += ` AND state = $` + strconv.Itoa(len(args))
	}
	if f.Wave != nil {
		args = append(args, *f.Wave)
		q += ` AND wave = $` + strconv.Itoa(len(args))
	}
	if f.Released {
		q += ` AND released`
	}
	args = append(args, lim+1)
	rows, _ := s.pool.Query(ctx, q+` ORDER BY vehicle LIMIT $`+strconv.Itoa(len(args)), args...)
	out, err := collect(rows, func(row pgx.Row) (hubv1.RolloutVehicle, error) {
		var (
			v    hubv1.RolloutVehicle
			wave int64
		)
		err := row.Scan(&v.Vehicle, &wave, &v.Released, &v.State, &v.Reason)
		v.Wave = int(wave)
		return v, err
	})
	if err != nil {
		return nil, "", fmt.Errorf("postgres: list rollout %s/%d vehicles: %w", name, generation, err)
	}
	out, next := codec.PageRolloutVehicles(out, lim)
	return out, next, nil
}
