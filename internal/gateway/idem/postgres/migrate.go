package postgres

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
)

//go:embed migrations/*.sql
var migrations embed.FS

// versionTable records the applied migrations: goose's table, named for
// the gateway so that it cannot meet another goose user's (the hub's, say)
// in a shared database.
const versionTable = "gateway_schema_version"

// schemaLockID is the session advisory lock held while migrating (the
// ASCII bytes of "misakigw").
const schemaLockID int64 = 0x6d69_7361_6b69_6777

// migrate brings the schema to the newest version, one replica at a time.
func migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	dir, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, dir,
		goose.WithDisableGlobalRegistry(true), goose.WithSlog(log), goose.WithTableName(versionTable),
		goose.WithSessionLocker(advisoryLock{schemaLockID}))
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

// advisoryLock is a goose.SessionLocker that waits in pg_advisory_lock
// (goose's own polls every 5 s, which replicas starting together would
// feel). A session lock ends with its connection, so a replica that dies
// while migrating frees it.
type advisoryLock struct{ id int64 }

func (l advisoryLock) SessionLock(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, l.id); err != nil {
		return fmt.Errorf("schema lock: %w", err)
	}
	return nil
}

func (l advisoryLock) SessionUnlock(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, l.id); err != nil {
		return fmt.Errorf("schema unlock: %w", err)
	}
	return nil
}
