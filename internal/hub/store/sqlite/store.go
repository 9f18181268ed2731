// Package sqlite is the hub's embedded store: store.Store on one SQLite
// file in the hub's data directory, through modernc.org/sqlite (pure Go, no
// cgo; driver name "sqlite").
//
// Dialect choices. The database runs in WAL mode, so readers never wait
// for the writer. Every write goes through one connection (a database/sql
// pool of size 1 whose transactions BEGIN IMMEDIATE): writes from any
// number of goroutines queue in the process instead of racing for SQLite's
// lock, so they never fail with SQLITE_BUSY. Reads use a separate pool of
// read-only connections. busy_timeout (10 s) covers what is left: a
// checkpoint, or another process opening the same file. Foreign keys are
// on; deleting a vehicle deletes its tokens, reports and desired rows.
// Times are INTEGER microseconds since the Unix epoch, UTC; structured
// values that are not queried (labels, resources, facts, values,
// customizations, placement, the envelope) are JSON text, encoded as on
// PostgreSQL by internal/hub/store/internal/codec, which also holds the
// rules both stores share; this package holds what is SQLite's.
// The schema is versioned with goose (migrations/, embedded) and migrated
// by Open.
//
// Semantics the interface leaves open, the same on both stores: bootstrap
// tokens, reports and desired revisions belong to an existing vehicle (else
// store.ErrNotFound) and go when it is deleted; pins outlive their source;
// PutBlob refuses bytes that are not its digest's (store.ErrDigestMismatch);
// ListTokens("") lists every vehicle's; a new deployment's zero Generation
// is stored as 1; every list is non-nil.
//
// Durability. The file runs with synchronous=NORMAL: a commit is appended
// to the WAL without an fsync; the WAL is fsynced when it is checkpointed,
// which the Store does every second (and SQLite when the WAL passes 1000
// pages, about 4 MB, and at Close). A crash of the hub process loses
// nothing (committed pages are in the operating system's cache; tested
// with kill -9), and the file is never corrupted. A power loss or kernel
// crash rolls back the transactions committed since the last checkpoint
// began: about the last second of writes. What that can undo: desired
// revisions (a vehicle may have applied a revision the store no longer
// has, so the hub must issue revisions above the vehicle's reported
// applied revision, not only above the stored one), spent bootstrap tokens
// (one may work once more), reports and audit entries.
//
// Changes is in-process: every subscriber of one *Store is woken by every
// write through that *Store. Two *Store values, or two processes, on one
// file do not wake each other; one hub process owns a SQLite store (use
// PostgreSQL for replicas).
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/internal/fanout"
	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// busyTimeout is how long a statement waits for a lock held by another
// process, or by a checkpoint, before failing with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// maxReaders caps the read-only connections.
const maxReaders = 4

// checkpointEvery bounds the time a commit waits for its fsync: the
// checkpoint fsyncs the WAL (see the package doc).
const checkpointEvery = time.Second

// Store is store.Store on a SQLite file. Its methods are safe for
// concurrent use.
type Store struct {
	w     *sql.DB // the one writer connection; every write goes through it
	r     *sql.DB // read-only connections
	log   *slog.Logger
	clock clock.Clock
	fan   fanout.Fanout // Changes subscribers
	stop  func()        // stops the checkpointer
	done  chan struct{} // closed when the checkpointer has stopped
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database file at path and migrates
// its schema to the newest version. path is a file name; ":memory:" and
// names with a '?' are refused (the writer and the readers must share
// one file).
func Open(ctx context.Context, path string, log *slog.Logger) (*Store, error) {
	return open(ctx, path, log, clock.Real{})
}

func open(ctx context.Context, path string, log *slog.Logger, clk clock.Clock) (*Store, error) {
	if path == "" || strings.ContainsRune(path, '?') || strings.HasPrefix(path, ":memory:") || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("sqlite: open %q: want a plain file name", path)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	common := fmt.Sprintf("_busy_timeout=%d&_foreign_keys=1", busyTimeout.Milliseconds())
	w, err := sql.Open("sqlite", path+"?"+common+"&_journal_mode=WAL&_synchronous=NORMAL&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxIdleTime(0)
	w.SetConnMaxLifetime(0)
	s := &Store{w: w, log: log.With("component", "hub-store", "dialect", "sqlite"), clock: clk}
	var mode string
	if err := w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: journal mode is %q, not wal (a file system without shared memory?)", path, mode)
	}
	if err := migrate(ctx, w, s.log); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	// Readers open after the writer has made the file WAL (a persistent
	// property of the file), so they need not set it.
	r, err := sql.Open("sqlite", path+"?"+common+"&_synchronous=NORMAL&_query_only=1")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	r.SetMaxOpenConns(maxReaders)
	r.SetMaxIdleConns(maxReaders)
	s.r = r
	cctx, stop := context.WithCancel(context.Background())
	s.stop, s.done = stop, make(chan struct{})
	go s.checkpoints(cctx)
	return s, nil
}

// checkpoints checkpoints the WAL every checkpointEvery until ctx ends.
// A PASSIVE checkpoint waits for no reader; with nothing new in the WAL it
// costs nothing.
func (s *Store) checkpoints(ctx context.Context) {
	defer close(s.done)
	for {
		t := s.clock.NewTimer(checkpointEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		var busy, frames, copied int
		err := s.w.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("checkpoint", "err", err)
		}
	}
}

// Ping checks both pools answer.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.r.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping readers: %w", err)
	}
	if err := s.w.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping writer: %w", err)
	}
	return nil
}

// Close closes Changes channels and the database; the last connection to
// close checkpoints the WAL into the main file.
func (s *Store) Close() error {
	s.stop()
	<-s.done
	s.fan.Close()
	return errors.Join(s.r.Close(), s.w.Close())
}

// write runs fn in one transaction on the writer connection.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// constraint maps a constraint violation to its sentinel: a taken key to
// store.ErrExists, a missing referenced row to store.ErrNotFound. Other
// errors come back unchanged.
func constraint(err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
		return store.ErrExists
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return store.ErrNotFound
	}
	return err
}

// notFound maps sql.ErrNoRows to store.ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

// exists reports whether the vehicle row exists, inside tx.
func vehicleExists(ctx context.Context, q querier, id string) (bool, error) {
	var one int
	err := q.QueryRowContext(ctx, "SELECT 1 FROM vehicles WHERE id = ?", id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// querier is what *sql.DB and *sql.Tx share.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Times are stored as microseconds since the Unix epoch.

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func nullMicros(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

func fromNullMicros(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMicros(v.Int64)
	return &t
}
