package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/pressly/goose/v3"
)

//go:embed migrations/*.sql
var migrations embed.FS

// versionTable records the applied migrations (goose's table, named for
// the hub so that it cannot meet another goose user's in a shared
// database).
const versionTable = "hub_schema_version"

// migrate brings the schema to the newest version. One hub process owns a
// SQLite file, so there is no lock beyond SQLite's own: goose runs each
// migration in a transaction on the writer connection.
func migrate(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	dir, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, dir,
		goose.WithDisableGlobalRegistry(true), goose.WithSlog(log), goose.WithTableName(versionTable))
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	res, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, r := range res {
		log.Info("schema migrated", "version", r.Source.Version, "duration", r.Duration)
	}
	return nil
}
