// Package postgres is the gateway's idempotency store shared by its
// replicas: idem.Store on PostgreSQL through pgx/v5 and a pgxpool, so
// that N gateway replicas behind a load balancer never deliver a key
// twice while they live.
//
// A key is one row (migrations/, applied by Open under a session advisory
// lock, so replicas that start together migrate once). A claim is a row
// with the claiming replica's name (Options.Replica) and a lease
// (claimed_until = now + Options.ClaimTTL). Claim is one statement
// (claimSQL): it reads the key and, when the key holds a live claim or an
// answer within the window, writes nothing, so a repeat costs a read;
// otherwise it inserts the claim, or takes the row over on a conflict only
// when its claim's lease has ended or its answer is past the window. So of
// any number of replicas claiming a key at once exactly one wins; the
// others get the answer, or InFlight (409 at the gateway) while the
// winner's claim lives.
//
// Claims, their renewals and releases are committed with
// synchronous_commit off (a second pool, whose sessions set it), and
// answers with the server's setting: every replica sees a claim once
// committed, but its commit does not wait for the disk. The
// commit does not wait for the disk. A crash of the PostgreSQL server may
// forget the last of them (up to 3 × wal_writer_delay, 600 ms by
// default): a claim so forgotten lets a repeat reach the service while the
// first request is still being answered, as the local store's claims,
// which live in memory, do when its gateway crashes. Waiting for the disk
// on each claim would double the syncs of every new key.
//
// A live replica renews the leases of the claims it holds every
// Options.RenewEvery (a third of the lease by default), in one statement
// for all of them, so a request that takes longer than the lease keeps its
// claim. A replica that dies (kill -9, a lost node) stops renewing: its
// claims stay until their leases end, and until then every repeat of those
// keys gets InFlight and the service is not reached. After that, a repeat
// claims the key afresh and reaches the service again: if the dead
// replica's delivery had reached the service, the service sees the
// request twice. Only the service can rule that out. A replica that cannot
// reach the database for a whole lease loses its claims the same way
// (counted in Stats.ClaimsLost when it sees it).
//
// Complete writes the answer over the claim in one statement, committed
// before it returns: durable under the server's synchronous_commit (on by
// default; off, a server crash may lose the last 3 × wal_writer_delay of
// answers, whose repeats then reach the service again). The first answer
// stored wins: a replica whose lapsed claim was taken over still stores
// its answer if the other has not yet, and otherwise gets
// idem.ErrClaimLost. Release deletes the replica's own claim; Close
// releases the claims still held.
//
// Leases compare the replicas' clocks (Options.Clock): they must agree to
// well within the lease (NTP does).
package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/gateway/idem"
)

// Options configure a Store.
type Options struct {
	// DSN names the database: a postgres:// URL or a key=value string, as
	// pgx parses it. pool_max_conns sets the size of each of the two pools
	// (claims, answers): by default pgx's, 4 or the number of CPUs if more.
	// More connections wait on the server's CPU rather than do more: with
	// 16 per pool, three replicas on a 2-CPU server answered no faster and
	// with stalls of seconds (bench/gatewaybench).
	DSN string
	// Replica names this replica in the claims it holds; unique among the
	// replicas that share the database, and new at each start. Required.
	Replica string
	// Window is how long an answer is kept. Required.
	Window time.Duration
	// ClaimTTL is a claim's lease. Required.
	ClaimTTL time.Duration
	// RenewEvery is how often the leases of the claims held are renewed:
	// default ClaimTTL/3; negative, never (tests that play a replica that
	// stopped).
	RenewEvery time.Duration
	// Timeout bounds each statement. Default 10s, and no longer than
	// RenewEvery for a renewal.
	Timeout time.Duration
	// Clock tells the time for leases and windows, and times renewals.
	// Default the wall clock.
	Clock clock.Clock
	// Log gets the renewals' failures and lost claims. Default none.
	Log *slog.Logger
}

// DefaultTimeout bounds a statement unless Options.Timeout says.
const DefaultTimeout = 10 * time.Second

// ApplicationName is the application_name of a replica's connections,
// which pg_stat_activity shows: "misaki-gateway/" and the replica's name,
// cut to the 63 bytes PostgreSQL keeps.
func ApplicationName(replica string) string {
	name := "misaki-gateway/" + replica
	if len(name) > 63 {
		name = name[:63]
	}
	return name
}

// Store is idem.Store on PostgreSQL. Its methods are safe for concurrent
// use.
type Store struct {
	// pool commits with the server's synchronous_commit (answers);
	// claims, with synchronous_commit off (claims, renewals, releases).
	pool, claims *pgxpool.Pool
	o            Options

	mu   sync.Mutex          // guards held
	held map[string]struct{} // keys this replica holds a claim on (renewed)

	stop chan struct{} // closed by Close: the renewer stops
	done chan struct{} // closed when the renewer has stopped
	once sync.Once     // Close's

	statsMu sync.Mutex // guards stats
	stats   idem.Stats
}

var (
	_ idem.Store    = (*Store)(nil)
	_ idem.Reporter = (*Store)(nil)
)

// Open connects to the database, migrates its schema to the newest
// version and starts renewing leases.
func Open(ctx context.Context, o Options) (*Store, error) {
	switch {
	case o.Replica == "":
		return nil, errors.New("postgres: Options.Replica is required")
	case o.Window <= 0 || o.ClaimTTL <= 0:
		return nil, errors.New("postgres: Options.Window and ClaimTTL must be positive")
	}
	if o.RenewEvery == 0 {
		o.RenewEvery = o.ClaimTTL / 3
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Log = o.Log.With("component", "idempotency-store", "replica", o.Replica)
	cfg, err := pgxpool.ParseConfig(o.DSN)
	if err != nil {
		// pgx's parse errors can quote the DSN, password included.
		return nil, errors.New("postgres: the DSN does not parse")
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = ApplicationName(o.Replica)
	claimsCfg := cfg.Copy()
	claimsCfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	claims, err := pgxpool.NewWithConfig(ctx, claimsCfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	fail := func(err error) (*Store, error) {
		pool.Close()
		claims.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		return fail(fmt.Errorf("%s@%s/%s: %w", cfg.ConnConfig.User, cfg.ConnConfig.Host, cfg.ConnConfig.Database, err))
	}
	if err := migrate(ctx, pool, o.Log); err != nil {
		return fail(err)
	}
	s := &Store{
		pool: pool, claims: claims, o: o, held: map[string]struct{}{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	go s.renewer()
	return s, nil
}

// claimSQL claims $1 for replica $2 at $3 (lease until $4), unless the
// key holds a live claim or an answer newer than $5. cur is the key's row
// as the statement began. When cur shows the key taken, nothing is
// written (no row lock, no transaction id: a repeat costs a read).
// Otherwise the INSERT claims it, or, on a conflict, takes the row over
// only when its claim's lease has ended or its answer is past the window,
// judged on the row as it is then. A row with won true means the key is
// the caller's; otherwise the row is cur, and no row means the key was
// free as the statement began and another replica's claim came in
// meanwhile. xmax is 0 in an inserted row, set in a row taken over.
const claimSQL = `
WITH cur AS (
    SELECT status, header, body, fingerprint, truncated, body_unknown, created, claimed_until
        FROM gateway_idempotency_keys WHERE key = $1
), won AS (
    INSERT INTO gateway_idempotency_keys AS k (key, owner, claimed_until, created)
    SELECT $1::bytea, $2::text, $4::bigint, $3::bigint
        WHERE NOT EXISTS (SELECT 1 FROM cur
            WHERE (status IS NULL AND claimed_until > $3) OR (status IS NOT NULL AND created >= $5))
    ON CONFLICT (key) DO UPDATE
        SET owner = excluded.owner, claimed_until = excluded.claimed_until, created = excluded.created,
            status = NULL, header = NULL, body = NULL, fingerprint = NULL, truncated = false, body_unknown = false
        WHERE (k.status IS NULL AND k.claimed_until <= $3) OR (k.status IS NOT NULL AND k.created < $5)
    RETURNING k.xmax <> 0 AS reclaimed
)
SELECT true, reclaimed, NULL::integer, NULL::jsonb, NULL::bytea, NULL::bytea, false, false, 0::bigint, NULL::bigint FROM won
UNION ALL
SELECT false, false, * FROM cur WHERE NOT EXISTS (SELECT 1 FROM won)`

// row is a key's row as claimSQL reads it.
type row struct {
	status                    *int32
	header, body, fingerprint []byte
	truncated, bodyUnknown    bool
	created                   int64
	claimedUntil              *int64
}

// entry is what a claimant that did not win is told of the row: the
// answer, if it is one within the window at now, else InFlight (a live
// claim; or a row free as the statement began, which another replica
// claimed meanwhile).
func (s *Store) entry(r *row, now time.Time) (*idem.Entry, error) {
	if r.status == nil || r.created < now.Add(-s.o.Window).UnixNano() {
		return &idem.Entry{State: idem.InFlight}, nil
	}
	e := &idem.Entry{
		State: idem.Done, Status: int(*r.status), Body: r.body, Fingerprint: r.fingerprint,
		Truncated: r.truncated, BodyUnknown: r.bodyUnknown, Created: r.created,
	}
	if r.header != nil {
		if err := json.Unmarshal(r.header, &e.Header); err != nil {
			return nil, fmt.Errorf("idempotency store: key's headers: %w", err)
		}
	}
	return e, nil
}

// Claim claims key (idem.Store) in one statement, committed
// asynchronously if it writes (see the package doc).
func (s *Store) Claim(ctx context.Context, key []byte) (*idem.Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	now := s.o.Clock.Now()
	var won, reclaimed bool
	var r row
	err := s.claims.QueryRow(ctx, claimSQL, key, s.o.Replica, now.UnixNano(), now.Add(s.o.ClaimTTL).UnixNano(), now.Add(-s.o.Window).UnixNano()).
		Scan(&won, &reclaimed, &r.status, &r.header, &r.body, &r.fingerprint, &r.truncated, &r.bodyUnknown, &r.created, &r.claimedUntil)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return &idem.Entry{State: idem.InFlight}, nil
	case err != nil:
		return nil, fmt.Errorf("idempotency store: claim: %w", err)
	case !won:
		return s.entry(&r, now)
	}
	s.mu.Lock()
	s.held[string(key)] = struct{}{}
	s.mu.Unlock()
	if reclaimed {
		s.count(func(st *idem.Stats) { st.Reclaimed++ })
	}
	return nil, nil
}

// completeSQL stores an answer over a claim, the caller's or another
// replica's that took the key over after the caller's lease ended: the
// first answer stored wins. It stores nothing over an answer.
const completeSQL = `
INSERT INTO gateway_idempotency_keys AS k (key, created, status, header, body, fingerprint, truncated, body_unknown)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (key) DO UPDATE
    SET owner = NULL, claimed_until = NULL, created = excluded.created, status = excluded.status,
        header = excluded.header, body = excluded.body, fingerprint = excluded.fingerprint,
        truncated = excluded.truncated, body_unknown = excluded.body_unknown
    WHERE k.status IS NULL`

// Complete stores the answer and ends the claim (idem.Store).
func (s *Store) Complete(ctx context.Context, key []byte, e *idem.Entry) error {
	s.forget(key)
	e.State, e.Created = idem.Done, s.o.Clock.Now().UnixNano()
	var header []byte
	if e.Header != nil {
		var err error
		if header, err = json.Marshal(e.Header); err != nil {
			return fmt.Errorf("idempotency store: complete: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	start := time.Now()
	tag, err := s.pool.Exec(ctx, completeSQL, key, e.Created, e.Status, header, e.Body, e.Fingerprint, e.Truncated, e.BodyUnknown)
	s.count(func(st *idem.Stats) {
		st.Commits++
		st.CommitTime += time.Since(start)
		switch {
		case err != nil:
			st.CommitError++
		case tag.RowsAffected() == 1:
			st.Answers++
		default:
			st.ClaimsLost++
		}
	})
	switch {
	case err != nil:
		return fmt.Errorf("idempotency store: complete: %w", err)
	case tag.RowsAffected() == 0:
		return idem.ErrClaimLost
	}
	return nil
}

// Release deletes the replica's own claim of key (idem.Store). A claim
// that another replica took over is left to it.
func (s *Store) Release(ctx context.Context, key []byte) error {
	s.forget(key)
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	if _, err := s.claims.Exec(ctx, `DELETE FROM gateway_idempotency_keys WHERE key = $1 AND owner = $2 AND status IS NULL`, key, s.o.Replica); err != nil {
		return fmt.Errorf("idempotency store: release: %w", err)
	}
	return nil
}

// forget stops renewing key's claim.
func (s *Store) forget(key []byte) {
	s.mu.Lock()
	delete(s.held, string(key))
	s.mu.Unlock()
}

// sweepBatch is how many rows one statement of Sweep deletes, so that no
// transaction holds many locks or runs long; SKIP LOCKED lets the replicas'
// sweeps run at once without waiting on each other.
const sweepBatch = 5000

// Sweep removes the answers past the window and the claims whose lease
// ended (idem.Store): a key whose claim's lease ended is claimed afresh by
// its next request anyway.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	now := s.o.Clock.Now()
	n := 0
	for _, q := range []struct {
		sql    string
		cutoff int64
	}{
		{`DELETE FROM gateway_idempotency_keys WHERE key IN (
		    SELECT key FROM gateway_idempotency_keys WHERE status IS NOT NULL AND created < $1
		    ORDER BY created LIMIT $2 FOR UPDATE SKIP LOCKED)`, now.Add(-s.o.Window).UnixNano()},
		{`DELETE FROM gateway_idempotency_keys WHERE key IN (
		    SELECT key FROM gateway_idempotency_keys WHERE status IS NULL AND claimed_until <= $1
		    ORDER BY claimed_until LIMIT $2 FOR UPDATE SKIP LOCKED)`, now.UnixNano()},
	} {
		for {
			tag, err := s.pool.Exec(ctx, q.sql, q.cutoff, sweepBatch)
			if err != nil {
				return n, fmt.Errorf("idempotency store: sweep: %w", err)
			}
			n += int(tag.RowsAffected())
			if tag.RowsAffected() < sweepBatch {
				break
			}
		}
	}
	return n, nil
}

// renewer renews the leases of the claims held every RenewEvery until
// Close.
func (s *Store) renewer() {
	defer close(s.done)
	if s.o.RenewEvery < 0 {
		<-s.stop
		return
	}
	timeout := min(s.o.Timeout, s.o.RenewEvery)
	for {
		t := s.o.Clock.NewTimer(s.o.RenewEvery)
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-t.C():
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := s.renew(ctx)
		cancel()
		if err != nil {
			s.o.Log.Warn("renewing the leases of the claims held", "err", err)
		}
	}
}

// renew extends the lease of every claim the replica holds, in one
// statement, and counts those it no longer holds.
func (s *Store) renew(ctx context.Context) error {
	s.mu.Lock()
	keys := make([][]byte, 0, len(s.held))
	for k := range s.held {
		keys = append(keys, []byte(k))
	}
	s.mu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	until := s.o.Clock.Now().Add(s.o.ClaimTTL).UnixNano()
	rows, err := s.claims.Query(ctx, `UPDATE gateway_idempotency_keys SET claimed_until = $1
	    WHERE key = ANY($2) AND owner = $3 AND status IS NULL RETURNING key`, until, keys, s.o.Replica)
	if err != nil {
		s.count(func(st *idem.Stats) { st.RenewErrors++ })
		return fmt.Errorf("idempotency store: renew: %w", err)
	}
	renewed, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		s.count(func(st *idem.Stats) { st.RenewErrors++ })
		return fmt.Errorf("idempotency store: renew: %w", err)
	}
	held := make(map[string]bool, len(renewed))
	for _, k := range renewed {
		held[string(k)] = true
	}
	// A key not renewed and still listed is lost: its lease ended and
	// another replica took it over, or a sweep removed it. One completed
	// or released meanwhile is no longer listed.
	var lost []string
	s.mu.Lock()
	for _, k := range keys {
		if _, ok := s.held[string(k)]; ok && !held[string(k)] {
			delete(s.held, string(k))
			lost = append(lost, string(k))
		}
	}
	s.mu.Unlock()
	s.count(func(st *idem.Stats) {
		st.Renewals++
		st.ClaimsLost += int64(len(lost))
	})
	if len(lost) > 0 {
		s.o.Log.Warn("claims lost: their leases ended before they were renewed (was the database out of reach for a whole claimTTL?); another replica may deliver those keys again", "claims", len(lost))
	}
	return nil
}

// Close stops renewing, releases the claims still held and closes the
// pool (idem.Store).
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		s.mu.Lock()
		keys := slices.Collect(maps.Keys(s.held))
		clear(s.held)
		s.mu.Unlock()
		if len(keys) > 0 {
			b := make([][]byte, len(keys))
			for i, k := range keys {
				b[i] = []byte(k)
			}
			ctx, cancel := context.WithTimeout(context.Background(), s.o.Timeout)
			_, err = s.claims.Exec(ctx, `DELETE FROM gateway_idempotency_keys WHERE key = ANY($1) AND owner = $2 AND status IS NULL`, b, s.o.Replica)
			cancel()
			if err != nil {
				err = fmt.Errorf("idempotency store: close: releasing %d claims: %w", len(keys), err)
			}
		}
		s.pool.Close()
		s.claims.Close()
	})
	return err
}

// Stats returns the counters so far (idem.Reporter).
func (s *Store) Stats() idem.Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats
}

func (s *Store) count(f func(*idem.Stats)) {
	s.statsMu.Lock()
	f(&s.stats)
	s.statsMu.Unlock()
}
