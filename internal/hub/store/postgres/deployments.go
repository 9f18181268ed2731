package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/internal/codec"
)

const deploymentCols = `name, generation, spec, created_by, created, updated`

func scanDeployment(row pgx.Row) (hubv1.Deployment, error) {
	var (
		d    hubv1.Deployment
		spec string
	)
	if err := row.Scan(&d.Name, &d.Generation, &spec, &d.CreatedBy, &d.Created, &d.Updated); err != nil {
		return d, err
	}
	if err := codec.DecodeDeploymentSpec(spec, &d); err != nil {
		return d, err
	}
	d.Created, d.Updated = utc(d.Created), utc(d.Updated)
	return d, nil
}

// CreateDeployment stores d, its first version and its rollout, or
// returns store.ErrExists. A zero Generation is stored as 1, a zero
// Updated as Created.
func (s *Store) CreateDeployment(ctx context.Context, d hubv1.Deployment) error {
	spec, err := codec.DeploymentSpec(d)
	if err != nil {
		return fmt.Errorf("postgres: create deployment %s: %w", d.Name, err)
	}
	d = codec.NewDeployment(d)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO deployments (`+deploymentCols+`) VALUES ($1, $2, $3, $4, $5, $6)`,
			d.Name, d.Generation, spec, d.CreatedBy, d.Created, d.Updated)
		if err != nil {
			return constraint(err)
		}
		return startRollout(ctx, tx, d, spec, d.CreatedBy, 0)
	})
	if err != nil {
		return fmt.Errorf("postgres: create deployment %s: %w", d.Name, err)
	}
	return nil
}

// startRollout keeps d's generation and starts its rollout; older
// rollouts still going are superseded.
func startRollout(ctx context.Context, tx pgx.Tx, d hubv1.Deployment, spec, actor string, from int64) error {
	if _, err := tx.Exec(ctx, `INSERT INTO deployment_versions (name, generation, spec, created_by, created, updated) VALUES ($1, $2, $3, $4, $5, $6)`,
		d.Name, d.Generation, spec, actor, d.Created, d.Updated); err != nil {
		return fmt.Errorf("keep generation %d: %w", d.Generation, err)
	}
	rows, _ := tx.Query(ctx, `SELECT `+rolloutCols+` FROM rollouts WHERE deployment = $1 AND phase IN ($2, $3) FOR UPDATE`,
		d.Name, hubv1.RolloutProgressing, hubv1.RolloutPaused)
	older, err := collect(rows, func(row pgx.Row) (hubv1.Rollout, error) {
		r, _, err := scanRollout(row)
		return r, err
	})
	if err != nil {
		return err
	}
	for _, r := range older {
		r.Phase, r.Reason = hubv1.RolloutSuperseded, codec.SupersededReason(d.Generation)
		doc, err := codec.RolloutDoc(r)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE rollouts SET phase = $1, doc = $2, updated = $3, resource_version = resource_version + 1 WHERE deployment = $4 AND generation = $5`,
			r.Phase, doc, d.Updated, r.Deployment, r.Generation); err != nil {
			return fmt.Errorf("supersede rollout %d: %w", r.Generation, err)
		}
	}
	r := codec.NewRollout(d, from)
	r.CreatedBy = actor
	doc, err := codec.RolloutDoc(r)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO rollouts (deployment, generation, phase, doc, created_by, created, updated, resource_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		r.Deployment, r.Generation, r.Phase, doc, r.CreatedBy, r.Created, r.Updated, r.ResourceVersion); err != nil {
		return fmt.Errorf("start rollout %d: %w", r.Generation, err)
	}
	return nil
}

// GetDeployment returns the named deployment, or store.ErrNotFound.
func (s *Store) GetDeployment(ctx context.Context, name string) (hubv1.Deployment, error) {
	d, err := scanDeployment(s.pool.QueryRow(ctx, `SELECT `+deploymentCols+` FROM deployments WHERE name = $1`, name))
	if err != nil {
		return hubv1.Deployment{}, fmt.Errorf("postgres: get deployment %s: %w", name, notFound(err))
	}
	return d, nil
}

// ListDeployments pages deployments by name.
func (s *Store) ListDeployments(ctx context.Context, p store.Page) ([]hubv1.Deployment, string, error) {
	lim := codec.Limit(p.Limit)
	rows, _ := s.pool.Query(ctx, `SELECT `+deploymentCols+` FROM deployments WHERE name > $1 ORDER BY name LIMIT $2`, p.After, lim+1)
	out, err := collect(rows, scanDeployment)
	if err != nil {
		return nil, "", fmt.Errorf("postgres: list deployments: %w", err)
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
		return hubv1.Deployment{}, fmt.Errorf("postgres: update deployment %s: %w", d.Name, err)
	}
	var out hubv1.Deployment
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		out, err = scanDeployment(tx.QueryRow(ctx, `UPDATE deployments SET spec = $1, generation = generation + 1,
			updated = CASE WHEN $2 THEN updated ELSE $3 END
			WHERE name = $4 AND generation = $5 RETURNING `+deploymentCols,
			spec, d.Updated.IsZero(), d.Updated, d.Name, d.Generation))
		if errors.Is(err, pgx.ErrNoRows) {
			var ok bool
			if err = tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM deployments WHERE name = $1)`, d.Name).Scan(&ok); err == nil {
				err = codec.Missed(ok, "generation", d.Generation)
			}
			return err
		}
		if err != nil {
			return err
		}
		actor := d.CreatedBy
		if actor == "" {
			actor = out.CreatedBy
		}
		return startRollout(ctx, tx, out, spec, actor, d.Generation)
	})
	if err != nil {
		return hubv1.Deployment{}, fmt.Errorf("postgres: update deployment %s: %w", d.Name, err)
	}
	return out, nil
}

// DeleteDeployment deletes the named deployment, or returns
// store.ErrNotFound.
func (s *Store) DeleteDeployment(ctx context.Context, name string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM deployments WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("postgres: delete deployment %s: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: delete deployment %s: %w", name, store.ErrNotFound)
	}
	return nil
}
