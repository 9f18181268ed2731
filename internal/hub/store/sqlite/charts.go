package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/internal/codec"
)

// CreateSource stores s, or returns store.ErrExists.
func (s *Store) CreateSource(ctx context.Context, src hubv1.ChartSource) error {
	spec, err := codec.SourceSpec(src)
	if err != nil {
		return fmt.Errorf("sqlite: create source %s: %w", src.Name, err)
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO chart_sources (name, type, url, spec, created) VALUES (?, ?, ?, ?, ?)`,
		src.Name, src.Type, src.URL, spec, micros(src.Created))
	if err != nil {
		return fmt.Errorf("sqlite: create source %s: %w", src.Name, constraint(err))
	}
	return nil
}

const sourceCols = `name, type, url, spec, created`

func scanSource(sc interface{ Scan(...any) error }) (hubv1.ChartSource, error) {
	var (
		src     hubv1.ChartSource
		spec    string
		created int64
	)
	if err := sc.Scan(&src.Name, &src.Type, &src.URL, &spec, &created); err != nil {
		return src, err
	}
	if err := codec.DecodeSourceSpec(spec, &src); err != nil {
		return src, err
	}
	src.Created = fromMicros(created)
	return src, nil
}

// GetSource returns the named source, or store.ErrNotFound.
func (s *Store) GetSource(ctx context.Context, name string) (hubv1.ChartSource, error) {
	src, err := scanSource(s.r.QueryRowContext(ctx, `SELECT `+sourceCols+` FROM chart_sources WHERE name = ?`, name))
	if err != nil {
		return hubv1.ChartSource{}, fmt.Errorf("sqlite: get source %s: %w", name, notFound(err))
	}
	return src, nil
}

// ListSources returns every source by name.
func (s *Store) ListSources(ctx context.Context) ([]hubv1.ChartSource, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+sourceCols+` FROM chart_sources ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list sources: %w", err)
	}
	defer rows.Close()
	out := []hubv1.ChartSource{}
	for rows.Next() {
		src, err := scanSource(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list sources: %w", err)
		}
		out = append(out, src)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list sources: %w", err)
	}
	return out, nil
}

// DeleteSource deletes the named source (its pins stay), or returns
// store.ErrNotFound.
func (s *Store) DeleteSource(ctx context.Context, name string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM chart_sources WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("sqlite: delete source %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sqlite: delete source %s: %w", name, store.ErrNotFound)
	}
	return nil
}

// PinChart pins ref to ref.Digest; see store.Store.
func (s *Store) PinChart(ctx context.Context, ref hubv1.ChartRef) error {
	what := codec.PinName(ref)
	if err := codec.CheckPin(ref); err != nil {
		return fmt.Errorf("sqlite: pin %s: %w", what, err)
	}
	var pinned string
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO chart_pins (source, name, version, digest) VALUES (?, ?, ?, ?)
			ON CONFLICT (source, name, version) DO NOTHING`, ref.Source, ref.Name, ref.Version, ref.Digest); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT digest FROM chart_pins WHERE source = ? AND name = ? AND version = ?`,
			ref.Source, ref.Name, ref.Version).Scan(&pinned)
	})
	if err != nil {
		return fmt.Errorf("sqlite: pin %s: %w", what, err)
	}
	if err := codec.Pinned(ref, pinned); err != nil {
		return fmt.Errorf("sqlite: pin %s: %w", what, err)
	}
	return nil
}

// GetPin returns the digest (source, name, version) is pinned to.
func (s *Store) GetPin(ctx context.Context, source, name, version string) (string, error) {
	var d string
	err := s.r.QueryRowContext(ctx, `SELECT digest FROM chart_pins WHERE source = ? AND name = ? AND version = ?`,
		source, name, version).Scan(&d)
	if err != nil {
		return "", fmt.Errorf("sqlite: get pin %s/%s@%s: %w", source, name, version, notFound(err))
	}
	return d, nil
}

// PutBlob stores data under digest, which must be "sha256:<hex>" of data
// (else an error wrapping store.ErrDigestMismatch naming both).
func (s *Store) PutBlob(ctx context.Context, digest string, data []byte) error {
	data, err := codec.Blob(digest, data)
	if err != nil {
		return fmt.Errorf("sqlite: put blob: %w", err)
	}
	if _, err := s.w.ExecContext(ctx, `INSERT INTO blobs (digest, data) VALUES (?, ?) ON CONFLICT (digest) DO NOTHING`, digest, data); err != nil {
		return fmt.Errorf("sqlite: put blob %s: %w", digest, err)
	}
	return nil
}

// GetBlob returns the bytes stored under digest, or store.ErrNotFound.
func (s *Store) GetBlob(ctx context.Context, digest string) ([]byte, error) {
	var b []byte
	if err := s.r.QueryRowContext(ctx, `SELECT data FROM blobs WHERE digest = ?`, digest).Scan(&b); err != nil {
		return nil, fmt.Errorf("sqlite: get blob %s: %w", digest, notFound(err))
	}
	return b, nil
}
