package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"log/slog"

	"github.com/misaki-io/misaki/internal/sqlmigrate"
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
	return sqlmigrate.Set{FS: migrations, Dir: "migrations", Table: versionTable}.UpSQLite(ctx, db, log)
}
