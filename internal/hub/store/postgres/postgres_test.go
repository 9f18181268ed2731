package postgres

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/storetest"
	"github.com/misaki-io/misaki/internal/pgtest"
	"github.com/misaki-io/misaki/internal/waitfor"
)

// server is one PostgreSQL server for the package's tests; each store gets
// its own database on it.
type server struct {
	admin string // DSN of the postgres database
	n     atomic.Int64
}

// TestPostgres starts one server (slow) and runs everything on it.
func TestPostgres(t *testing.T) {
	srv := &server{admin: pgtest.Start(t)}
	t.Run("Suite", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store { return srv.open(t, srv.createDB(t)) })
	})
	t.Run("Replicas", func(t *testing.T) { testReplicas(t, srv) })
	t.Run("ReconnectCatchesUp", func(t *testing.T) { testReconnectCatchesUp(t, srv) })
	t.Run("HealthCheck", func(t *testing.T) { testHealthCheck(t, srv) })
	t.Run("ConcurrentOpen", func(t *testing.T) { testConcurrentOpen(t, srv) })
	t.Run("ChangesAfterClose", func(t *testing.T) { testChangesAfterClose(t, srv) })
}

func BenchmarkStore(b *testing.B) {
	srv := &server{admin: pgtest.Start(b)}
	storetest.Bench(b, func(b *testing.B) store.Store { return srv.open(b, srv.createDB(b)) })
}

// createDB creates a fresh database and returns its DSN.
func (srv *server) createDB(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("hub_%d", srv.n.Add(1))
	srv.exec(t, `CREATE DATABASE `+name)
	u, err := url.Parse(srv.admin)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// exec runs sql on the postgres database.
func (srv *server) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), srv.admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (srv *server) open(t testing.TB, dsn string) *Store {
	t.Helper()
	s, err := Open(t.Context(), dsn, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// listeners returns the PIDs of the change listeners on the database.
func listeners(t *testing.T, s *Store) []int32 {
	t.Helper()
	rows, _ := s.pool.Query(t.Context(), `SELECT pid FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database() ORDER BY pid`, listenerName)
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

func newVehicle(t *testing.T, s store.Store, id string) {
	t.Helper()
	if err := s.CreateVehicle(t.Context(), hubv1.Vehicle{ID: id, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

func rev(vehicle string, n int64) store.Desired {
	return store.Desired{Desired: hubv1.Desired{Vehicle: vehicle, Half: hubv1.HalfVehicle, Revision: n,
		IssuedAt: time.Now(), Expires: time.Now().Add(time.Hour)}}
}

// wake writes revision n through w and returns how long r's subscriber c
// took to see its sequence.
func wake(t *testing.T, w *Store, c <-chan int64, vehicle string, n int64) time.Duration {
	t.Helper()
	start := time.Now()
	if err := w.PutDesired(t.Context(), rev(vehicle, n)); err != nil {
		t.Fatal(err)
	}
	d, err := w.GetDesired(t.Context(), vehicle, hubv1.HalfVehicle)
	if err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case seq, ok := <-c:
			if !ok {
				t.Fatal("changes closed")
			}
			if seq >= d.Seq {
				return time.Since(start)
			}
		case <-timeout:
			t.Fatalf("revision %d (seq %d) not seen by the other replica in 10s", n, d.Seq)
		}
	}
}

// testReplicas: a write on one replica wakes a subscriber on another within
// 1 s, also after the subscriber's listener connection was killed.
func testReplicas(t *testing.T, srv *server) {
	dsn := srv.createDB(t)
	a, b := srv.open(t, dsn), srv.open(t, dsn)
	newVehicle(t, a, "car-1")
	c, err := b.Changes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for i := range 5 {
		n++
		if d := wake(t, a, c, "car-1", n); d >= time.Second {
			t.Errorf("write %d on replica a reached replica b after %v, want < 1s", i, d)
		} else {
			t.Logf("write %d: replica b woke after %v", i, d)
		}
	}

	for i := range 3 {
		pids := listeners(t, b)
		if len(pids) != 1 {
			t.Fatalf("listeners on the database: %v, want b's one", pids)
		}
		var killed bool
		if err := b.pool.QueryRow(t.Context(), `SELECT pg_terminate_backend($1)`, pids[0]).Scan(&killed); err != nil || !killed {
			t.Fatalf("terminate listener %d: %v, %v", pids[0], killed, err)
		}
		waitfor.True(t, "the killed listener gone", func() bool {
			for _, p := range listeners(t, b) {
				if p == pids[0] {
					return false
				}
			}
			return true
		})
		n++
		d := wake(t, a, c, "car-1", n)
		if d >= time.Second {
			t.Errorf("after killing b's listener (%d): the write reached b after %v, want < 1s", i, d)
		} else {
			t.Logf("after killing b's listener (%d): replica b woke after %v", i, d)
		}
		if after := listeners(t, b); len(after) != 1 || after[0] == pids[0] {
			t.Errorf("listeners after the kill: %v (killed %d)", after, pids[0])
		}
	}
}

// testReconnectCatchesUp: a change committed while the listener cannot
// reconnect is delivered once it can, from the sequence it re-reads.
func testReconnectCatchesUp(t *testing.T, srv *server) {
	dsn := srv.createDB(t)
	a, b := srv.open(t, dsn), srv.open(t, dsn)
	newVehicle(t, a, "car-1")
	c, err := b.Changes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Keep a's pool connected while the database refuses new sessions.
	if err := a.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := u.Path[1:]
	pids := listeners(t, b)
	srv.exec(t, `ALTER DATABASE `+db+` ALLOW_CONNECTIONS false`)
	reopened := false
	defer func() {
		if !reopened {
			srv.exec(t, `ALTER DATABASE `+db+` ALLOW_CONNECTIONS true`)
		}
	}()
	srv.exec(t, `SELECT pg_terminate_backend($1)`, pids[0])
	waitfor.True(t, "the killed listener gone", func() bool { return len(listeners(t, a)) == 0 }) // b's, seen from a
	if err := a.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := a.PutDesired(t.Context(), rev("car-1", 1)); err != nil {
		t.Fatal(err)
	}
	want, err := a.Sequence(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case seq := <-c:
		t.Fatalf("delivered %d while b had no listener", seq)
	default:
	}
	start := time.Now()
	srv.exec(t, `ALTER DATABASE `+db+` ALLOW_CONNECTIONS true`)
	reopened = true
	select {
	case seq := <-c:
		if seq != want {
			t.Errorf("caught up to %d, want %d", seq, want)
		}
		t.Logf("caught up %v after the database took sessions again", time.Since(start))
	case <-time.After(maxBackoff + 5*time.Second):
		t.Fatal("the change made while b's listener was away never reached b")
	}
}

// testHealthCheck: a listener that hears nothing checks its connection and
// keeps listening on it.
func testHealthCheck(t *testing.T, srv *server) {
	dsn := srv.createDB(t)
	a, b := srv.open(t, dsn), srv.open(t, dsn)
	b.health = 20 * time.Millisecond
	newVehicle(t, a, "car-1")
	c, err := b.Changes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pids := listeners(t, b)
	waitfor.True(t, "a health check on the listener", func() bool {
		var q string
		err := a.pool.QueryRow(t.Context(), `SELECT query FROM pg_stat_activity WHERE pid = $1`, pids[0]).Scan(&q)
		return err == nil && q == "SELECT 1"
	})
	if d := wake(t, a, c, "car-1", 1); d >= time.Second {
		t.Errorf("after health checks the write reached b after %v", d)
	}
	if after := listeners(t, b); len(after) != 1 || after[0] != pids[0] {
		t.Errorf("listeners %v after health checks, want the same %v", after, pids)
	}
}

// testConcurrentOpen: replicas starting at once on an empty database
// migrate it once.
func testConcurrentOpen(t *testing.T, srv *server) {
	dsn := srv.createDB(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	start := make(chan struct{})
	for i := range errs {
		wg.Go(func() {
			<-start
			s, err := Open(t.Context(), dsn, slog.New(slog.DiscardHandler))
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("replica %d: %v", i, err)
		}
	}
	s := srv.open(t, dsn)
	var applied int
	if err := s.pool.QueryRow(t.Context(), `SELECT count(*) FROM `+versionTable+` WHERE version_id > 0`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if want := len(files); applied != want {
		t.Errorf("%d migrations recorded, want %d (one per file)", applied, want)
	}
}

func testChangesAfterClose(t *testing.T, srv *server) {
	s, err := Open(t.Context(), srv.createDB(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Changes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, ok := <-c; ok {
		t.Error("a value after Close")
	}
	if _, err := s.Changes(t.Context()); err == nil {
		t.Error("Changes after Close: no error")
	}
}

func FuzzParseSeq(f *testing.F) {
	for _, s := range []string{"1", "42", "0", "-1", "", "abc", "9223372036854775807", "9223372036854775808", "+7", " 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		seq, err := parseSeq(payload)
		if err != nil {
			return
		}
		if seq <= 0 {
			t.Fatalf("parseSeq(%q) = %d, want a positive sequence or an error", payload, seq)
		}
		if again, err := parseSeq(strconv.FormatInt(seq, 10)); err != nil || again != seq {
			t.Fatalf("parseSeq(%q) = %d, which does not round-trip: %d, %v", payload, seq, again, err)
		}
	})
}
