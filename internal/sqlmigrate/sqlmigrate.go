// Package sqlmigrate brings a store's SQL schema to its newest version with
// goose: the store's migrations from an fs.FS, recorded in a version table
// named for the store, and on PostgreSQL a session advisory lock held while
// migrating, so that replicas starting together migrate one at a time. The
// hub's stores (SQLite and PostgreSQL) and the gateway's idempotency store
// use it; each keeps its own migrations, table and lock key.
package sqlmigrate

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// Set is one store's migrations and the table that records which of them a
// database has applied.
type Set struct {
	// FS holds the migrations, goose .sql files, in the directory Dir.
	FS  fs.FS
	Dir string
	// Table is goose's version table. Name it for the store, so that it
	// cannot meet another goose user's in a shared database.
	Table string
}

// UpPostgres applies the migrations db has not had yet, holding the session
// advisory lock lockID (pg_advisory_lock) while it does, so that a replica
// starting beside another waits for it and then finds nothing to do.
func (s Set) UpPostgres(ctx context.Context, db *sql.DB, lockID int64, log *slog.Logger) error {
	return s.up(ctx, goose.DialectPostgres, db, log, goose.WithSessionLocker(advisoryLock{lockID}))
}

// UpSQLite applies the migrations db has not had yet. It takes no lock
// beyond SQLite's own: one process owns a SQLite file, and goose runs each
// migration in a transaction, so db should be the writer connection.
func (s Set) UpSQLite(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	return s.up(ctx, goose.DialectSQLite3, db, log)
}

func (s Set) up(ctx context.Context, dialect goose.Dialect, db *sql.DB, log *slog.Logger, opts ...goose.ProviderOption) error {
	dir, err := fs.Sub(s.FS, s.Dir)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	opts = append([]goose.ProviderOption{
		goose.WithDisableGlobalRegistry(true), goose.WithSlog(log), goose.WithTableName(s.Table),
	}, opts...)
	p, err := goose.NewProvider(dialect, db, dir, opts...)
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
// (goose's own polls every 5 s, which a replica starting beside another
// would feel). A session lock ends with its connection, so a replica that
// dies while migrating frees it.
type advisoryLock struct{ id int64 }

var _ lock.SessionLocker = advisoryLock{}

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
