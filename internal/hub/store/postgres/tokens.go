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

// CreateToken stores a bootstrap token for an existing vehicle (else
// store.ErrNotFound) with the hash of its secret; t.Token and t.Used are
// not stored. A taken ID is store.ErrExists.
func (s *Store) CreateToken(ctx context.Context, t hubv1.BootstrapToken, secretHash []byte) error {
	if err := codec.CheckToken(secretHash); err != nil {
		return fmt.Errorf("postgres: create token %s: %w", t.ID, err)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO bootstrap_tokens (id, vehicle, secret_hash, expires, created_by, created)
		VALUES ($1, $2, $3, $4, $5, $6)`, t.ID, t.VehicleID, secretHash, t.Expires, t.CreatedBy, t.Created)
	if err != nil {
		return fmt.Errorf("postgres: create token %s for vehicle %s: %w", t.ID, t.VehicleID, constraint(err))
	}
	return nil
}

// UseToken spends the token in one statement; see store.Store. A second
// concurrent UPDATE waits for the first's row lock and then finds the
// token used. The hash comparison is not constant-time: it compares hashes
// of secrets, which tell a timing attacker nothing about the secret.
func (s *Store) UseToken(ctx context.Context, id string, secretHash []byte, now time.Time) (string, error) {
	now = codec.Norm(now)
	var vehicle string
	err := s.pool.QueryRow(ctx, `UPDATE bootstrap_tokens SET used = $1
		WHERE id = $2 AND used IS NULL AND expires > $1 AND secret_hash = $3 RETURNING vehicle`,
		now, id, secretHash).Scan(&vehicle)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("postgres: use token %s: %w", id, store.ErrTokenInvalid)
	}
	if err != nil {
		return "", fmt.Errorf("postgres: use token %s: %w", id, err)
	}
	return vehicle, nil
}

// ListTokens lists the vehicle's bootstrap tokens by ID (every vehicle's
// when vehicleID is ""), without secrets.
func (s *Store) ListTokens(ctx context.Context, vehicleID string) ([]hubv1.BootstrapToken, error) {
	rows, _ := s.pool.Query(ctx, `SELECT id, vehicle, expires, used, created_by, created FROM bootstrap_tokens
		WHERE $1 = '' OR vehicle = $1 ORDER BY id`, vehicleID)
	out, err := collect(rows, func(row pgx.Row) (hubv1.BootstrapToken, error) {
		var t hubv1.BootstrapToken
		err := row.Scan(&t.ID, &t.VehicleID, &t.Expires, &t.Used, &t.CreatedBy, &t.Created)
		t.Expires, t.Used, t.Created = utc(t.Expires), utcPtr(t.Used), utc(t.Created)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list tokens of %q: %w", vehicleID, err)
	}
	return codec.NonNil(out), nil
}

// CreateOperatorToken stores t, or returns store.ErrExists if its name or
// hash is taken.
func (s *Store) CreateOperatorToken(ctx context.Context, t store.OperatorToken) error {
	if err := codec.CheckOperatorToken(t); err != nil {
		return fmt.Errorf("postgres: create operator token %s: %w", t.Name, err)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO operator_tokens (name, scope, hash, created) VALUES ($1, $2, $3, $4)`,
		t.Name, t.Scope, t.Hash, t.Created)
	if err != nil {
		return fmt.Errorf("postgres: create operator token %s: %w", t.Name, constraint(err))
	}
	return nil
}

const operatorCols = `name, scope, hash, created`

func scanOperator(row pgx.Row) (store.OperatorToken, error) {
	var t store.OperatorToken
	err := row.Scan(&t.Name, &t.Scope, &t.Hash, &t.Created)
	t.Created = utc(t.Created)
	return t, err
}

// OperatorTokenByHash returns the token whose secret hashes to h, or
// store.ErrNotFound.
func (s *Store) OperatorTokenByHash(ctx context.Context, h []byte) (store.OperatorToken, error) {
	t, err := scanOperator(s.pool.QueryRow(ctx, `SELECT `+operatorCols+` FROM operator_tokens WHERE hash = $1`, h))
	if err != nil {
		return store.OperatorToken{}, fmt.Errorf("postgres: operator token by hash: %w", notFound(err))
	}
	return t, nil
}

// ListOperatorTokens lists operator tokens by name.
func (s *Store) ListOperatorTokens(ctx context.Context) ([]store.OperatorToken, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+operatorCols+` FROM operator_tokens ORDER BY name`)
	out, err := collect(rows, scanOperator)
	if err != nil {
		return nil, fmt.Errorf("postgres: list operator tokens: %w", err)
	}
	return codec.NonNil(out), nil
}

// DeleteOperatorToken deletes the named token, or returns
// store.ErrNotFound.
func (s *Store) DeleteOperatorToken(ctx context.Context, name string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM operator_tokens WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("postgres: delete operator token %s: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: delete operator token %s: %w", name, store.ErrNotFound)
	}
	return nil
}
