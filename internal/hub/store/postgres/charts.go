package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/internal/codec"
)

// CreateSource stores src, or returns store.ErrExists.
func (s *Store) CreateSource(ctx context.Context, src hubv1.ChartSource) error {
	spec, err := codec.SourceSpec(src)
	if err != nil {
		return fmt.Errorf("postgres: create source %s: %w", src.Name, err)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO chart_sources (name, type, url, spec, created) VALUES ($1, $2, $3, $4, $5)`,
		src.Name, src.Type, src.URL, spec, src.Created)
	if err != nil {
		return fmt.Errorf("postgres: create source %s: %w", src.Name, constraint(err))
	}
	return nil
}

const sourceCols = `name, type, url, spec, created`

func scanSource(row pgx.Row) (hubv1.ChartSource, error) {
	var (
		src  hubv1.ChartSource
		spec string
	)
	if err := row.Scan(&src.Name, &src.Type, &src.URL, &spec, &src.Created); err != nil {
		return src, err
	}
	if err := codec.DecodeSourceSpec(spec, &src); err != nil {
		return src, err
	}
	src.Created = utc(src.Created)
	return src, nil
}

// GetSource returns the named source, or store.ErrNotFound.
func (s *Store) GetSource(ctx context.Context, name string) (hubv1.ChartSource, error) {
	src, err := scanSource(s.pool.QueryRow(ctx, `SELECT `+sourceCols+` FROM chart_sources WHERE name = $1`, name))
	if err != nil {
		return hubv1.ChartSource{}, fmt.Errorf("postgres: get source %s: %w", name, notFound(err))
	}
	return src, nil
}

// ListSources returns every source by name.
func (s *Store) ListSources(ctx context.Context) ([]hubv1.ChartSource, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+sourceCols+` FROM chart_sources ORDER BY name`)
	out, err := collect(rows, scanSource)
	if err != nil {
		return nil, fmt.Errorf("postgres: list sources: %w", err)
	}
	return codec.NonNil(out), nil
}

// DeleteSource deletes the named source (its pins stay), or returns
// store.ErrNotFound.
func (s *Store) DeleteSource(ctx context.Context, name string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM chart_sources WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("postgres: delete source %s: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: delete source %s: %w", name, store.ErrNotFound)
	}
	return nil
}

// PinChart pins ref to ref.Digest; see store.Store.
func (s *Store) PinChart(ctx context.Context, ref hubv1.ChartRef) error {
	what := codec.PinName(ref)
	if err := codec.CheckPin(ref); err != nil {
		return fmt.Errorf("postgres: pin %s: %w", what, err)
	}
	// A pin never changes once written, so the insert and the read need
	// no transaction: whoever inserted first, the read sees the pin.
	_, err := s.pool.Exec(ctx, `INSERT INTO chart_pins (source, name, version, digest) VALUES ($1, $2, $3, $4)
		ON CONFLICT (source, name, version) DO NOTHING`, ref.Source, ref.Name, ref.Version, ref.Digest)
	if err != nil {
		return fmt.Errorf("postgres: pin %s: %w", what, err)
	}
	pinned, err := s.GetPin(ctx, ref.Source, ref.Name, ref.Version)
	if err != nil {
		return err
	}
	if err := codec.Pinned(ref, pinned); err != nil {
		return fmt.Errorf("postgres: pin %s: %w", what, err)
	}
	return nil
}

// GetPin returns the digest (source, name, version) is pinned to.
func (s *Store) GetPin(ctx context.Context, source, name, version string) (string, error) {
	var d string
	err := s.pool.QueryRow(ctx, `SELECT digest FROM chart_pins WHERE source = $1 AND name = $2 AND version = $3`,
		source, name, version).Scan(&d)
	if err != nil {
		return "", fmt.Errorf("postgres: get pin %s/%s@%s: %w", source, name, version, notFound(err))
	}
	return d, nil
}

// PutBlob stores data under digest, which must be "sha256:<hex>" of data
// (else an error wrapping store.ErrDigestMismatch naming both).
func (s *Store) PutBlob(ctx context.Context, digest string, data []byte) error {
	data, err := codec.Blob(digest, data)
	if err != nil {
		return fmt.Errorf("postgres: put blob: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO blobs (digest, data) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING`, digest, data); err != nil {
		return fmt.Errorf("postgres: put blob %s: %w", digest, err)
	}
	return nil
}

// GetBlob returns the bytes stored under digest, or store.ErrNotFound.
func (s *Store) GetBlob(ctx context.Context, digest string) ([]byte, error) {
	var b []byte
	if err := s.pool.QueryRow(ctx, `SELECT data FROM blobs WHERE digest = $1`, digest).Scan(&b); err != nil {
		return nil, fmt.Errorf("postgres: get blob %s: %w", digest, notFound(err))
	}
	return b, nil
}
