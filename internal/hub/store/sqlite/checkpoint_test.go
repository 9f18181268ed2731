package sqlite

import (
	"database/sql"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/clock"
)

// TestCheckpointEverySecond: a commit reaches the main database file (its
// WAL frames fsynced and copied) within checkpointEvery, without waiting
// for the WAL to fill: the time bound of the loss window in the package
// doc.
func TestCheckpointEverySecond(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hub.db")
	clk := clock.NewFake(time.Unix(0, 0))
	s, err := open(t.Context(), path, nil, clk)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	armed := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for clk.Timers() != 1 {
			if time.Now().After(deadline) {
				t.Fatal("the checkpointer did not arm its timer")
			}
			time.Sleep(time.Millisecond)
		}
	}
	armed()
	if err := s.CreateVehicle(t.Context(), hubv1.Vehicle{ID: "car-1"}); err != nil {
		t.Fatal(err)
	}
	if mainFileHas(t, path, "car-1") {
		t.Fatal("the vehicle is in the main file before any checkpoint: the test shows nothing")
	}
	clk.Advance(checkpointEvery)
	armed() // re-armed after the checkpoint ran
	if !mainFileHas(t, path, "car-1") {
		t.Error("the vehicle is not in the main file after a checkpoint")
	}
}

// mainFileHas copies the database file alone (not its WAL) and reports
// whether the copy holds the vehicle.
func mainFileHas(t *testing.T, path, id string) bool {
	t.Helper()
	cp := filepath.Join(t.TempDir(), "copy.db")
	src, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(cp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	db, err := sql.Open("sqlite", cp)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'vehicles'`).Scan(&n); err != nil || n == 0 {
		return false // not even the schema is there yet
	}
	if err := db.QueryRow(`SELECT count(*) FROM vehicles WHERE id = ?`, id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}
