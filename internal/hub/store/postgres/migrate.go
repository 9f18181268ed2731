package postgres

import (
	"context"
	"embed"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/misaki-io/misaki/internal/sqlmigrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// versionTable records the applied migrations (goose's table, named for
// the hub so that it cannot meet another goose user's in a shared
// database).
const versionTable = "hub_schema_version"

// schemaLockID is the session advisory lock held while migrating
// (the ASCII bytes of "misakihu").
const schemaLockID int64 = 0x6d69_7361_6b69_6875

// migrate brings the schema to the newest version, one replica at a time.
func migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	return sqlmigrate.Set{FS: migrations, Dir: "migrations", Table: versionTable}.UpPostgres(ctx, db, schemaLockID, log)
}
