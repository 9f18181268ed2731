package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/internal/codec"
)

const deploymentCols = `name, generation, spec, created_by, created, updated`

func scanDeployment(sc interface{ Scan(...any) error }) (hubv1.Deployment, error) {
	var (
		d                hubv1.Deployment
		spec             string
		created, updated int64
	)
	if err := sc.Scan(&d.Name, &d.Generation, &spec, &d.CreatedBy, &created, &updated); err != nil {
		return d, err
	}
	if err := codec.DecodeDeploymentSpec(spec, &d); err != nil {
		return d, err
	}
	d.Created, d.Updated = fromMicros(created), fromMicros(updated)
	return d, nil
}

// CreateDeployment stores d, its first version and its rollout, or
// returns store.ErrExists. A zero Generation is stored as 1, a zero
// Updated as Created.
func (s *Store) CreateDeployment(ctx context.Context, d hubv1.Deployment) error {
	spec, err := codec.DeploymentSpec(d)
	if err != nil {
		return fmt.Errorf("sqlite: create deployment %s: %w", d.Name, err)
	}
	d = codec.NewDeployment(d)
	err = s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO deployments (`+deploymentCols+`) VALUES (?, ?, ?, ?, ?, ?)`,
			d.Name, d.Generation, spec, d.CreatedBy, micros(d.Created), micros(d.Updated))
		if err != nil {
			return constraint(err)
		}
		return startRollout(ctx, tx, d, spec, d.CreatedBy, 0)
	})
	if err != nil {
		return fmt.Errorf("sqlite: create deployment %s: %w", d.Name, err)
	}
	return nil
}

// startRollout keeps d's generation and starts its rollout; older
// rollouts still going are superseded.
func startRollout(ctx context.Context, tx *sql.Tx, d hubv1.Deployment, spec, actor string, from int64) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO deployment_versions (name, generation, spec, created_by, created, updated) VALUES (?, ?, ?, ?, ?, ?)`,
		d.Name, d.Generation, spec, actor, micros(d.Created), micros(d.Updated)); err != nil {
		return fmt.Errorf("keep generation %d: %w", d.Generation, err)
	}
	older, err := activeRollouts(ctx, tx, d.Name)
	if err != nil {
		return err
	}
	for _, r := range older {
		r.Phase, r.Reason = hubv1.RolloutSuperseded, codec.SupersededReason(d.Generation)
		doc, err := codec.RolloutDoc(r)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE rollouts SET phase = ?, doc = ?, updated = ?, resource_version = resource_version + 1 WHERE deployment = ? AND generation = ?`,
			r.Phase, doc, micros(d.Updated), r.Deployment, r.Generation); err != nil {
			return fmt.Errorf("supersede rollout %d: %w", r.Generation, err)
		}
	}
	r := codec.NewRollout(d, from)
	r.CreatedBy = actor
	doc, err := codec.RolloutDoc(r)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO rollouts (deployment, generation, phase, doc, created_by, created, updated, resource_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		r.Deployment, r.Generation, r.Phase, doc, r.CreatedBy, micros(r.Created), micros(r.Updated), r.ResourceVersion); err != nil {
		return fmt.Errorf("start rollout %d: %w", r.Generation, err)
	}
	return nil
}

// activeRollouts reads the deployment's rollouts still going (Progressing
// or Paused), their rows closed before it returns so that tx can go on.
func activeRollouts(ctx context.Context, tx *sql.Tx, deployment string) ([]hubv1.Rollout, error) {
	rows, err := tx.QueryContext(ctx, `SELECT `+rolloutCols+` FROM rollouts WHERE deployment = ? AND phase IN (?, ?)`,
		deployment, hubv1.RolloutProgressing, hubv1.RolloutPaused)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []hubv1.Rollout
	for rows.Next() {
		r, _, err := scanRollout(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// GetDeployment returns the named deployment, or store.ErrNotFound.
func (s *Store) GetDeployment(ctx context.Context, name string) (hubv1.Deployment, error) {
	d, err := scanDeployment(s.r.QueryRowContext(ctx, `SELECT `+deploymentCols+` FROM deployments WHERE name = ?`, name))
	if err != nil {
		return hubv1.Deployment{}, fmt.Errorf("sqlite: get deployment %s: %w", name, notFound(err))
	}
	return d, nil
}

// ListDeployments pages deployments by name.
func (s *Store) ListDeployments(ctx context.Context, p store.Page) ([]hubv1.Deployment, string, error) {
	lim := codec.Limit(p.Limit)
	rows, err := s.r.QueryContext(ctx, `SELECT `+deploymentCols+` FROM deployments WHERE name > ? ORDER BY name LIMIT ?`, p.After, lim+1)
	if err != nil {
		return nil, "", fmt.Errorf("sqlite: list deployments: %w", err)
	}
	defer rows.Close()
	var out []hubv1.Deployment
	for rows.Next() {
		d, err := scanDeployment(rows)
		if err != nil {
			return nil, "", fmt.Errorf("sqlite: list deployments: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("sqlite: list deployments: %w", err)
	}
	out, next := codec.PageDeployments(out, lim)
	return out, next, nil
}

// UpdateDeployment stores d's spec and Updated time (Created and
// CreatedBy stay) if d.Generation is the stored one; see store.Store. The
// new version and its rollout are by d.CreatedBy when given (the actor of
// this change), else by the deployment's creator.
func (s *Store) UpdateDeployment(ctx context.Context, d hubv1.Deployment) (hubv1.Deployment, error) {
	spec, err := codec.DeploymentSpec(d)
	if err != nil {
		return hubv1.Deployment{}, fmt.Errorf("sqlite: update deployment %s: %w", d.Name, err)
	}
	var out hubv1.Deployment
	err = s.write(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = scanDeployment(tx.QueryRowContext(ctx, `UPDATE deployments SET spec = ?, generation = generation + 1,
			updated = CASE WHEN ? THEN updated ELSE ? END
			WHERE name = ? AND generation = ? RETURNING `+deploymentCols,
			spec, d.Updated.IsZero(), micros(d.Updated), d.Name, d.Generation))
		if err == nil {
			actor := d.CreatedBy
			if actor == "" {
				actor = out.CreatedBy
			}
			return startRollout(ctx, tx, out, spec, actor, d.Generation)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var one int
		err = tx.QueryRowContext(ctx, `SELECT 1 FROM deployments WHERE name = ?`, d.Name).Scan(&one)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return codec.Missed(err == nil, "generation", d.Generation)
	})
	if err != nil {
		return hubv1.Deployment{}, fmt.Errorf("sqlite: update deployment %s: %w", d.Name, err)
	}
	return out, nil
}

// DeleteDeployment deletes the named deployment, or returns
// store.ErrNotFound.
func (s *Store) DeleteDeployment(ctx context.Context, name string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM deployments WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("sqlite: delete deployment %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sqlite: delete deployment %s: %w", name, store.ErrNotFound)
	}
	return nil
}
