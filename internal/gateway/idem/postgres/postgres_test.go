package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/gateway/idem"
	"github.com/misaki-io/misaki/internal/gateway/idem/idemtest"
	"github.com/misaki-io/misaki/internal/pgtest"
)

// server is one PostgreSQL server for the package's tests; each test gets
// its own database on it.
type server struct {
	admin string // DSN of the postgres database
	n     atomic.Int64
}

// TestPostgres starts one real server (slow) and runs everything on it.
func TestPostgres(t *testing.T) {
	srv := &server{admin: pgtest.Start(t)}
	t.Run("Suite", func(t *testing.T) {
		idemtest.Run(t, func(t *testing.T) idemtest.Backend { return &backend{srv: srv, dsn: srv.createDB(t)} })
	})
	t.Run("RenewalKeepsLiveClaims", func(t *testing.T) { testRenewalKeepsLiveClaims(t, srv) })
	t.Run("RenewerRuns", func(t *testing.T) { testRenewerRuns(t, srv) })
	t.Run("SweepLapsedClaims", func(t *testing.T) { testSweepLapsedClaims(t, srv) })
	t.Run("ConcurrentOpen", func(t *testing.T) { testConcurrentOpen(t, srv) })
	t.Run("BadDSN", testBadDSN)
	t.Run("CommitSettings", func(t *testing.T) { testCommitSettings(t, srv) })
}

// Answers are committed as the server or the DSN says (pgtest's server
// says off; a production server's default is on), claims without waiting
// for the disk whatever they say.
func testCommitSettings(t *testing.T, srv *server) {
	dsn := srv.createDB(t)
	s := srv.open(t, dsn, Options{Window: time.Hour, ClaimTTL: ttl})
	s2 := srv.open(t, dsn+"&options=-c%20synchronous_commit%3Dremote_write", Options{Window: time.Hour, ClaimTTL: ttl})
	for _, tc := range []struct {
		name string
		pool interface {
			QueryRow(context.Context, string, ...any) pgx.Row
		}
		want string
	}{
		{"answers, the server's setting", s.pool, "off"},
		{"claims", s.claims, "off"},
		{"answers, the DSN's setting", s2.pool, "remote_write"},
		{"claims, whatever the DSN says", s2.claims, "off"},
	} {
		var got string
		if err := tc.pool.QueryRow(t.Context(), `SHOW synchronous_commit`).Scan(&got); err != nil || got != tc.want {
			t.Errorf("%s: synchronous_commit %q %v, want %q", tc.name, got, err, tc.want)
		}
	}
}

// createDB creates a fresh database and returns its DSN.
func (srv *server) createDB(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("gw_%d", srv.n.Add(1))
	conn, err := pgx.Connect(t.Context(), srv.admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), `CREATE DATABASE `+name); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(srv.admin)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// open opens a store on dsn, replica name fresh; renew < 0: no renewals.
func (srv *server) open(t testing.TB, dsn string, o Options) *Store {
	t.Helper()
	o.DSN = dsn
	if o.Replica == "" {
		o.Replica = fmt.Sprint("replica-", srv.n.Add(1))
	}
	s, err := Open(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// backend is one test's database; its stores are replicas.
type backend struct {
	srv *server
	dsn string
}

func (b *backend) Open(t *testing.T, o idemtest.Options) idem.Store {
	t.Helper()
	return b.srv.open(t, b.dsn, Options{Window: o.Window, ClaimTTL: o.ClaimTTL, Clock: o.Clock, RenewEvery: -1})
}

// Kill stops the store as kill -9 would: its connections close, and its
// claims are neither released nor renewed.
func (b *backend) Kill(t *testing.T, st idem.Store) {
	s := st.(*Store)
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		s.pool.Close()
		s.claims.Close()
	})
}

func (b *backend) Shared() bool { return true }

const ttl = 30 * time.Second

// A live replica's renewal keeps its claim past the first lease, and only
// its own claims: one it released is not brought back. A claim it no
// longer holds (its lease ended before the renewal and another replica
// took it) is counted lost.
func testRenewalKeepsLiveClaims(t *testing.T, srv *server) {
	dsn := srv.createDB(t)
	c := clock.NewFake(time.Date(2026, 12, 10, 12, 0, 0, 0, time.UTC))
	a := srv.open(t, dsn, Options{Window: time.Hour, ClaimTTL: ttl, Clock: c, RenewEvery: -1})
	b := srv.open(t, dsn, Options{Window: time.Hour, ClaimTTL: ttl, Clock: c, RenewEvery: -1})
	k, released, lapsed := idem.Scope("vin", "long"), idem.Scope("vin", "released"), idem.Scope("vin", "lapsed")
	for _, key := range [][]byte{k, released, lapsed} {
		if e, err := a.Claim(t.Context(), key); e != nil || err != nil {
			t.Fatal(e, err)
		}
	}
	if err := a.Release(t.Context(), released); err != nil {
		t.Fatal(err)
	}
	c.Advance(ttl)
	if e, err := b.Claim(t.Context(), lapsed); e != nil || err != nil { // a's lease ended
		t.Fatalf("lapsed claim: %+v %v", e, err)
	}
	if err := a.renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := a.Stats(); st.Renewals != 1 || st.ClaimsLost != 1 {
		t.Fatalf("stats after the renewal: %+v, want 1 renewal and 1 claim lost", st)
	}
	c.Advance(ttl - time.Nanosecond)
	if e, err := b.Claim(t.Context(), k); err != nil || e == nil || e.State != idem.InFlight {
		t.Fatalf("a renewed claim, within its new lease: %+v %v", e, err)
	}
	if e, err := b.Claim(t.Context(), released); e != nil || err != nil {
		t.Fatalf("a released key: %+v %v", e, err)
	}
	if err := a.Complete(t.Context(), k, &idem.Entry{Status: 200}); err != nil {
		t.Fatal(err)
	}
}

// The renewer renews every RenewEvery of the clock: after each tick the
// claim's lease reaches ClaimTTL past it.
func testRenewerRuns(t *testing.T, srv *server) {
	dsn := srv.createDB(t)
	c := clock.NewFake(time.Date(2026, 12, 10, 12, 0, 0, 0, time.UTC))
	a := srv.open(t, dsn, Options{Window: time.Hour, ClaimTTL: ttl, Clock: c})
	k := idem.Scope("vin", "k")
	if e, err := a.Claim(t.Context(), k); e != nil || err != nil {
		t.Fatal(e, err)
	}
	for i := range 4 {
		waitTimer(t, c) // the renewer waits for its next tick
		c.Advance(ttl / 3)
		waitTimer(t, c) // it re-arms once the renewal is done
		if st := a.Stats(); st.Renewals != int64(i+1) {
			t.Fatalf("tick %d: %+v", i, st)
		}
	}
	var until int64
	if err := a.pool.QueryRow(t.Context(), `SELECT claimed_until FROM gateway_idempotency_keys WHERE key = $1`, k).Scan(&until); err != nil {
		t.Fatal(err)
	}
	if want := c.Now().Add(ttl).UnixNano(); until != want {
		t.Fatalf("lease until %v, want %v", time.Unix(0, until).UTC(), time.Unix(0, want).UTC())
	}
}

// waitTimer waits until the store's renewer has armed its timer.
func waitTimer(t *testing.T, c *clock.Fake) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); c.Timers() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the renewer armed no timer")
		}
		time.Sleep(time.Millisecond)
	}
}

// Sweep removes the claims whose lease ended (a dead replica's), not
// live ones.
func testSweepLapsedClaims(t *testing.T, srv *server) {
	dsn := srv.createDB(t)
	c := clock.NewFake(time.Date(2026, 12, 10, 12, 0, 0, 0, time.UTC))
	a := srv.open(t, dsn, Options{Window: time.Hour, ClaimTTL: ttl, Clock: c, RenewEvery: -1})
	dead, live := idem.Scope("vin", "dead"), idem.Scope("vin", "live")
	a.Claim(t.Context(), dead)
	c.Advance(ttl / 2)
	a.Claim(t.Context(), live)
	c.Advance(ttl / 2)
	if n, err := a.Sweep(t.Context()); err != nil || n != 1 {
		t.Fatalf("swept %d, %v; want the lapsed claim", n, err)
	}
	rows, _ := a.pool.Query(t.Context(), `SELECT key FROM gateway_idempotency_keys`)
	keys, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil || len(keys) != 1 || string(keys[0]) != string(live) {
		t.Fatalf("left: %q %v", keys, err)
	}
}

// Replicas that start at once migrate the schema once; the others wait
// for the lock, then find nothing to do.
func testConcurrentOpen(t *testing.T, srv *server) {
	dsn := srv.createDB(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, err := Open(context.Background(), Options{DSN: dsn, Replica: "r" + fmt.Sprint(srv.n.Add(1)), Window: time.Hour, ClaimTTL: ttl})
			if err != nil {
				t.Error(err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
}

// A DSN that does not parse is an error that does not quote it: it may
// hold a password.
func testBadDSN(t *testing.T) {
	_, err := Open(t.Context(), Options{DSN: "postgres://u:s3cret@host:notaport/db", Replica: "r", Window: time.Hour, ClaimTTL: ttl})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error %v", err)
	}
}

// BenchmarkClaimComplete claims and answers new keys from 16 goroutines
// (the edge's default replay concurrency), then repeats each once, on a
// real server with fsync on: the store's cost without HTTP, beside the
// local store's BenchmarkComplete.
func BenchmarkClaimComplete(b *testing.B) {
	pg, err := pgtest.StartServer(b.Context(), pgtest.Options{Settings: map[string]string{"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}})
	if errors.Is(err, pgtest.ErrNotInstalled) {
		b.Skip(err)
	}
	if err != nil {
		b.Fatal(err)
	}
	defer pg.Stop()
	srv := &server{admin: pg.DSN}
	s := srv.open(b, srv.createDB(b), Options{Window: time.Hour, ClaimTTL: ttl})
	body := []byte(`{"stored":true}`)
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/16 + 1
	for g := range 16 {
		wg.Go(func() {
			for i := range per {
				key := idem.Scope("spiffe://misaki/vehicle/bench-car", fmt.Sprint(g, "-", i))
				if e, err := s.Claim(context.Background(), key); e != nil || err != nil {
					b.Error(e, err)
					return
				}
				if err := s.Complete(context.Background(), key, &idem.Entry{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: body, Fingerprint: key}); err != nil {
					b.Error(err)
					return
				}
				if e, err := s.Claim(context.Background(), key); e == nil || e.State != idem.Done || err != nil {
					b.Error(e, err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(16*per)/b.Elapsed().Seconds(), "keys/s")
}
