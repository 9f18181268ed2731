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

// CreateDeployment stores d, or returns store.ErrExists. A zero
// Generation is stored as 1, a zero Updated as Created.
func (s *Store) CreateDeployment(ctx context.Context, d hubv1.Deployment) error {
	spec, err := codec.DeploymentSpec(d)
	if err != nil {
		return fmt.Errorf("sqlite: create deployment %s: %w", d.Name, err)
	}
	d = codec.NewDeployment(d)
	_, err = s.w.ExecContext(ctx, `INSERT INTO deployments (`+deploymentCols+`) VALUES (?, ?, ?, ?, ?, ?)`,
		d.Name, d.Generation, spec, d.CreatedBy, micros(d.Created), micros(d.Updated))
	if err != nil {
		return fmt.Errorf("sqlite: create deployment %s: %w", d.Name, constraint(err))
	}
	return nil
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
// CreatedBy stay) if d.Generation is the stored one; see store.Store.
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
