package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/internal/codec"
)

// CreateToken stores a bootstrap token for an existing vehicle (else
// store.ErrNotFound) with the hash of its secret; t.Token and t.Used are
// not stored. A taken ID is store.ErrExists.
func (s *Store) CreateToken(ctx context.Context, t hubv1.BootstrapToken, secretHash []byte) error {
	if err := codec.CheckToken(secretHash); err != nil {
		return fmt.Errorf("sqlite: create token %s: %w", t.ID, err)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO bootstrap_tokens (id, vehicle, secret_hash, expires, created_by, created)
		VALUES (?, ?, ?, ?, ?, ?)`, t.ID, t.VehicleID, secretHash, micros(t.Expires), t.CreatedBy, micros(t.Created))
	if err != nil {
		return fmt.Errorf("sqlite: create token %s for vehicle %s: %w", t.ID, t.VehicleID, constraint(err))
	}
	return nil
}

// UseToken spends the token in one statement; see store.Store. The hash
// comparison is SQLite's, not constant-time: it compares hashes of
// secrets, which tell a timing attacker nothing about the secret.
func (s *Store) UseToken(ctx context.Context, id string, secretHash []byte, now time.Time) (string, error) {
	var vehicle string
	err := s.w.QueryRowContext(ctx, `UPDATE bootstrap_tokens SET used = ?
		WHERE id = ? AND used IS NULL AND expires > ? AND secret_hash = ? RETURNING vehicle`,
		micros(now), id, micros(now), secretHash).Scan(&vehicle)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("sqlite: use token %s: %w", id, store.ErrTokenInvalid)
	}
	if err != nil {
		return "", fmt.Errorf("sqlite: use token %s: %w", id, err)
	}
	return vehicle, nil
}

// ListTokens lists the vehicle's bootstrap tokens by ID (every vehicle's
// when vehicleID is ""), without secrets.
func (s *Store) ListTokens(ctx context.Context, vehicleID string) ([]hubv1.BootstrapToken, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, vehicle, expires, used, created_by, created FROM bootstrap_tokens
		WHERE ? = '' OR vehicle = ? ORDER BY id`, vehicleID, vehicleID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list tokens of %q: %w", vehicleID, err)
	}
	defer rows.Close()
	out := []hubv1.BootstrapToken{}
	for rows.Next() {
		var (
			t                hubv1.BootstrapToken
			expires, created int64
			used             sql.NullInt64
		)
		if err := rows.Scan(&t.ID, &t.VehicleID, &expires, &used, &t.CreatedBy, &created); err != nil {
			return nil, fmt.Errorf("sqlite: list tokens of %q: %w", vehicleID, err)
		}
		t.Expires, t.Used, t.Created = fromMicros(expires), fromNullMicros(used), fromMicros(created)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list tokens of %q: %w", vehicleID, err)
	}
	return out, nil
}

// CreateOperatorToken stores t, or returns store.ErrExists if its name or
// hash is taken.
func (s *Store) CreateOperatorToken(ctx context.Context, t store.OperatorToken) error {
	if err := codec.CheckOperatorToken(t); err != nil {
		return fmt.Errorf("sqlite: create operator token %s: %w", t.Name, err)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO operator_tokens (name, scope, hash, created) VALUES (?, ?, ?, ?)`,
		t.Name, t.Scope, t.Hash, micros(t.Created))
	if err != nil {
		return fmt.Errorf("sqlite: create operator token %s: %w", t.Name, constraint(err))
	}
	return nil
}

const operatorCols = `name, scope, hash, created`

func scanOperator(sc interface{ Scan(...any) error }) (store.OperatorToken, error) {
	var (
		t       store.OperatorToken
		created int64
	)
	err := sc.Scan(&t.Name, &t.Scope, &t.Hash, &created)
	t.Created = fromMicros(created)
	return t, err
}

// OperatorTokenByHash returns the token whose secret hashes to h, or
// store.ErrNotFound.
func (s *Store) OperatorTokenByHash(ctx context.Context, h []byte) (store.OperatorToken, error) {
	t, err := scanOperator(s.r.QueryRowContext(ctx, `SELECT `+operatorCols+` FROM operator_tokens WHERE hash = ?`, h))
	if err != nil {
		return store.OperatorToken{}, fmt.Errorf("sqlite: operator token by hash: %w", notFound(err))
	}
	return t, nil
}

// ListOperatorTokens lists operator tokens by name.
func (s *Store) ListOperatorTokens(ctx context.Context) ([]store.OperatorToken, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+operatorCols+` FROM operator_tokens ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list operator tokens: %w", err)
	}
	defer rows.Close()
	out := []store.OperatorToken{}
	for rows.Next() {
		t, err := scanOperator(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list operator tokens: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list operator tokens: %w", err)
	}
	return out, nil
}

// DeleteOperatorToken deletes the named token, or returns
// store.ErrNotFound.
func (s *Store) DeleteOperatorToken(ctx context.Context, name string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM operator_tokens WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("sqlite: delete operator token %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sqlite: delete operator token %s: %w", name, store.ErrNotFound)
	}
	return nil
}
