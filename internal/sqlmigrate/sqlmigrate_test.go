package sqlmigrate

import (
	"database/sql"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"testing/fstest"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/misaki-io/misaki/internal/pgtest"
)

// set is two migrations in a directory "m", as a store embeds them.
func set(table string) Set {
	return Set{
		FS: fstest.MapFS{
			"m/00001_a.sql": {Data: []byte("-- +goose Up\nCREATE TABLE " + table + "_a (k text PRIMARY KEY);\n")},
			"m/00002_b.sql": {Data: []byte("-- +goose Up\nALTER TABLE " + table + "_a ADD COLUMN v text;\n")},
		},
		Dir:   "m",
		Table: table,
	}
}

// applied counts the migrations recorded in table.
func applied(t *testing.T, db *sql.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(t.Context(), `SELECT count(*) FROM `+table+` WHERE version_id > 0`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestUpSQLite(t *testing.T) {
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	log := slog.New(slog.DiscardHandler)
	for range 2 { // the second finds nothing to do
		if err := set("one_version").UpSQLite(t.Context(), db, log); err != nil {
			t.Fatal(err)
		}
	}
	if n := applied(t, db, "one_version"); n != 2 {
		t.Errorf("%d migrations recorded, want 2", n)
	}
}

// Replicas that start at once migrate once; a second store's set, with its
// own table and lock, shares the database without meeting the first's.
func TestUpPostgres(t *testing.T) {
	db, err := sql.Open("pgx", pgtest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	log := slog.New(slog.DiscardHandler)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	start := make(chan struct{})
	for i := range errs {
		wg.Go(func() {
			<-start
			errs[i] = set("one_version").UpPostgres(t.Context(), db, 1, log)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("replica %d: %v", i, err)
		}
	}
	if err := set("two_version").UpPostgres(t.Context(), db, 2, log); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"one_version", "two_version"} {
		if n := applied(t, db, table); n != 2 {
			t.Errorf("%s: %d migrations recorded, want 2", table, n)
		}
	}
}

func TestUpMissingDir(t *testing.T) {
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := set("v")
	s.Dir = "../m"
	if err := s.UpSQLite(t.Context(), db, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("no error for a directory fs.Sub refuses")
	}
}
