// Package idemtest is the one test suite of idem.Store, run against every
// implementation (as NATS runs its store tests on its memory and file
// stores): the local FileStore (idem's tests) and the PostgreSQL store
// shared by replicas (idem/postgres's tests).
//
// Each test gets a fresh Backend: a file, or a database. A Backend that is
// Shared opens any number of stores on it at once, each a replica of one
// gateway; the others open one at a time (a reopen is a restart). Time is
// a clock.Fake that the tests advance: windows and leases expire without
// sleeping.
package idemtest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/gateway/idem"
)

// Options are what a test opens a store with.
type Options struct {
	Window   time.Duration
	ClaimTTL time.Duration // a shared store's lease; others have none
	Clock    clock.Clock
}

// Backend is where one test's stores keep their keys.
type Backend interface {
	// Open opens a store on the backend, closed when the test ends
	// (unless Kill ended it first). A shared store must not renew its
	// leases by itself: the tests decide when time passes.
	Open(t *testing.T, o Options) idem.Store
	// Kill ends s as kill -9 would: nothing released, nothing renewed, no
	// more work. A store not Shared may be opened again afterwards.
	Kill(t *testing.T, s idem.Store)
	// Shared reports whether stores opened at once on the backend are
	// replicas sharing their claims and answers.
	Shared() bool
}

// Run runs the suite; newBackend gives each test a fresh backend.
func Run(t *testing.T, newBackend func(t *testing.T) Backend) {
	tests := []struct {
		name   string
		shared bool // needs a Shared backend
		run    func(t *testing.T, b Backend)
	}{
		{"ClaimCompleteRepeat", false, testClaimCompleteRepeat},
		{"Release", false, testRelease},
		{"ConcurrentClaims", false, testConcurrentClaims},
		{"WindowExpiry", false, testWindowExpiry},
		{"RestartAndSweep", false, testRestartAndSweep},
		{"DeadOwnerClaim", false, testDeadOwnerClaim},
		{"ConcurrentCompletes", false, testConcurrentCompletes},
		{"ReplicaConflict", true, testReplicaConflict},
		{"ReplicaRace", true, testReplicaRace},
		{"LapsedClaimFirstAnswerWins", true, testLapsedClaimFirstAnswerWins},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t)
			if tc.shared && !b.Shared() {
				t.Skip("the store is not shared by replicas")
			}
			tc.run(t, b)
		})
	}
}

var start = time.Date(2026, 12, 10, 12, 0, 0, 0, time.UTC)

const (
	window = 24 * time.Hour
	ttl    = 30 * time.Second
)

func open(t *testing.T, b Backend, c clock.Clock) idem.Store {
	t.Helper()
	return b.Open(t, Options{Window: window, ClaimTTL: ttl, Clock: c})
}

// claim claims key and fails the test unless the outcome is want: "won"
// (nil), idem.InFlight or idem.Done; it returns the entry.
func claim(t *testing.T, s idem.Store, key []byte, want string) *idem.Entry {
	t.Helper()
	e, err := s.Claim(t.Context(), key)
	if err != nil {
		t.Fatalf("claim %q: %v", key, err)
	}
	got := "won"
	if e != nil {
		got = e.State
	}
	if got != want {
		t.Fatalf("claim %q: %s (%+v), want %s", key, got, e, want)
	}
	return e
}

func complete(t *testing.T, s idem.Store, key []byte, e *idem.Entry) {
	t.Helper()
	if err := s.Complete(t.Context(), key, e); err != nil {
		t.Fatalf("complete %q: %v", key, err)
	}
}

func answer(body string) *idem.Entry {
	return &idem.Entry{
		Status: 201, Header: http.Header{"Content-Type": {"application/json"}, "X-Multi": {"a", "b"}},
		Body: []byte(body), Fingerprint: []byte("fp-" + body),
	}
}

// sameAnswer compares what a repeat is answered from (claim checks the
// state; Created is checked where it matters).
func sameAnswer(t *testing.T, got, want *idem.Entry) {
	t.Helper()
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(idem.Entry{}), cmpopts.IgnoreFields(idem.Entry{}, "State", "Created"), cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("stored answer (-want +got):\n%s", diff)
	}
}

// A key is claimed once; a repeat while it is answered is in flight; the
// answer, every field of it, is what the next repeat gets; keys are scoped
// by vehicle.
func testClaimCompleteRepeat(t *testing.T, b Backend) {
	c := clock.NewFake(start)
	s := open(t, b, c)
	k := idem.Scope("vin1", "a")
	claim(t, s, k, "won")
	claim(t, s, k, idem.InFlight)
	claim(t, s, idem.Scope("vin2", "a"), "won")
	c.Advance(time.Second)
	want := answer("x")
	complete(t, s, k, want)
	if want.State != idem.Done || want.Created != start.Add(time.Second).UnixNano() {
		t.Fatalf("Complete set state %q, created %d", want.State, want.Created)
	}
	if got := claim(t, s, k, idem.Done); got.Created != want.Created {
		t.Fatalf("stored created %d, want %d", got.Created, want.Created)
	}
	sameAnswer(t, claim(t, s, k, idem.Done), want)

	// Every field, and the empty ones.
	for i, e := range []*idem.Entry{
		{Status: 200, Truncated: true, Fingerprint: []byte{0, 1, 2}},
		{Status: 204, BodyUnknown: true, Header: http.Header{}},
		{Status: 409, Body: []byte{0, 0xff, '\n'}},
	} {
		k := idem.Scope("vin1", fmt.Sprint("fields", i))
		claim(t, s, k, "won")
		complete(t, s, k, e)
		sameAnswer(t, claim(t, s, k, idem.Done), e)
	}
}

// A released key is claimed afresh, and a key with a NUL or any byte in it
// is one key.
func testRelease(t *testing.T, b Backend) {
	s := open(t, b, clock.NewFake(start))
	for _, k := range [][]byte{idem.Scope("vin", "r"), idem.Scope("vin", "\x00\xff odd")} {
		claim(t, s, k, "won")
		if err := s.Release(t.Context(), k); err != nil {
			t.Fatal(err)
		}
		claim(t, s, k, "won")
		claim(t, s, k, idem.InFlight)
	}
}

// Of many claims of one key at once, exactly one wins.
func testConcurrentClaims(t *testing.T, b Backend) {
	c := clock.NewFake(start)
	stores := []idem.Store{open(t, b, c)}
	if b.Shared() {
		stores = append(stores, open(t, b, c), open(t, b, c))
	}
	for round := range 5 {
		k := idem.Scope("vin", fmt.Sprint("race", round))
		var wg sync.WaitGroup
		var mu sync.Mutex
		won, inFlight := 0, 0
		for i := range 24 {
			wg.Go(func() {
				e, err := stores[i%len(stores)].Claim(context.Background(), k)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					t.Error(err)
				case e == nil:
					won++
				case e.State == idem.InFlight:
					inFlight++
				}
			})
		}
		wg.Wait()
		if won != 1 || inFlight != 23 {
			t.Fatalf("round %d: %d won, %d in flight; want 1 and 23", round, won, inFlight)
		}
	}
}

// An answer past the window is forgotten: the key is claimed afresh, and a
// new answer replaces it. One within the window is kept.
func testWindowExpiry(t *testing.T, b Backend) {
	c := clock.NewFake(start)
	s := open(t, b, c)
	old, recent := idem.Scope("vin", "old"), idem.Scope("vin", "recent")
	claim(t, s, old, "won")
	complete(t, s, old, answer("first"))
	c.Advance(window / 2)
	claim(t, s, recent, "won")
	complete(t, s, recent, answer("recent"))
	c.Advance(window/2 + time.Second)
	claim(t, s, old, "won")
	claim(t, s, old, idem.InFlight)
	sameAnswer(t, claim(t, s, recent, idem.Done), answer("recent"))
	want := answer("second")
	complete(t, s, old, want)
	sameAnswer(t, claim(t, s, old, idem.Done), want)
}

// Answers outlive a restart (Close, Open); Sweep then removes those past
// the window and keeps the others.
func testRestartAndSweep(t *testing.T, b Backend) {
	c := clock.NewFake(start)
	s := open(t, b, c)
	for i := range 3 {
		k := idem.Scope("vin", fmt.Sprint("old", i))
		claim(t, s, k, "won")
		complete(t, s, k, answer(fmt.Sprint(i)))
	}
	c.Advance(window / 2)
	kept := idem.Scope("vin", "kept")
	claim(t, s, kept, "won")
	complete(t, s, kept, answer("kept"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, b, c)
	for i := range 3 {
		sameAnswer(t, claim(t, s, idem.Scope("vin", fmt.Sprint("old", i)), idem.Done), answer(fmt.Sprint(i)))
	}
	if n, err := s.Sweep(t.Context()); err != nil || n != 0 {
		t.Fatalf("sweep within the window: %d, %v; want 0", n, err)
	}
	c.Advance(window/2 + time.Second)
	if err := s.Close(); err != nil { // the local store sweeps what is checkpointed
		t.Fatal(err)
	}
	s = open(t, b, c)
	if n, err := s.Sweep(t.Context()); err != nil || n != 3 {
		t.Fatalf("swept %d, %v; want the 3 answers past the window", n, err)
	}
	if sz, ok := s.(idem.Sizer); ok && sz.Len() != 1 {
		t.Fatalf("%d keys left after the sweep, want 1", sz.Len())
	}
	sameAnswer(t, claim(t, s, kept, idem.Done), answer("kept"))
	claim(t, s, idem.Scope("vin", "old0"), "won")
}

// The claim of a store that died (kill -9) ends: at the restart for a
// store of one replica, whose claims die with it; at the end of its lease
// for a shared one, whose other replicas answer repeats InFlight until
// then, and never sooner. Its answers stay.
func testDeadOwnerClaim(t *testing.T, b Backend) {
	c := clock.NewFake(start)
	a := open(t, b, c)
	k, done := idem.Scope("vin", "orphan"), idem.Scope("vin", "done")
	claim(t, a, done, "won")
	complete(t, a, done, answer("done"))
	claim(t, a, k, "won")
	b.Kill(t, a)
	other := open(t, b, c)
	if b.Shared() {
		claim(t, other, k, idem.InFlight)
		c.Advance(ttl - time.Nanosecond)
		claim(t, other, k, idem.InFlight)
		c.Advance(time.Nanosecond)
	}
	claim(t, other, k, "won")
	claim(t, other, k, idem.InFlight)
	sameAnswer(t, claim(t, other, done, idem.Done), answer("done"))
	if st, ok := other.(idem.Reporter); ok && b.Shared() && st.Stats().Reclaimed != 1 {
		t.Fatalf("stats: %+v, want 1 reclaimed", st.Stats())
	}
}

// Answers completed at once are all stored (the local store groups them
// into shared writes; the shared one commits each), from every replica.
func testConcurrentCompletes(t *testing.T, b Backend) {
	c := clock.NewFake(start)
	stores := []idem.Store{open(t, b, c)}
	if b.Shared() {
		stores = append(stores, open(t, b, c))
	}
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, k := stores[i%len(stores)], idem.Scope("vin", fmt.Sprint(i))
			if e, err := s.Claim(context.Background(), k); e != nil || err != nil {
				t.Errorf("claim %d: %+v %v", i, e, err)
				return
			}
			if err := s.Complete(context.Background(), k, answer(fmt.Sprint(i))); err != nil {
				t.Errorf("complete %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	for i := range n {
		for _, s := range stores {
			sameAnswer(t, claim(t, s, idem.Scope("vin", fmt.Sprint(i)), idem.Done), answer(fmt.Sprint(i)))
		}
	}
}

// A second replica sees the first's claim as in flight and then its
// answer; a replica cannot release another's claim.
func testReplicaConflict(t *testing.T, b Backend) {
	c := clock.NewFake(start)
	a, r := open(t, b, c), open(t, b, c)
	k := idem.Scope("vin", "k")
	claim(t, a, k, "won")
	claim(t, r, k, idem.InFlight)
	if err := r.Release(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	claim(t, r, k, idem.InFlight)
	want := answer("from a")
	complete(t, a, k, want)
	sameAnswer(t, claim(t, r, k, idem.Done), want)

	k2 := idem.Scope("vin", "k2")
	claim(t, r, k2, "won")
	claim(t, a, k2, idem.InFlight)
	if err := r.Release(t.Context(), k2); err != nil {
		t.Fatal(err)
	}
	claim(t, a, k2, "won")
	claim(t, r, k2, idem.InFlight)

	// A replica that stops gracefully gives its claims up at once.
	k3 := idem.Scope("vin", "k3")
	claim(t, r, k3, "won")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	claim(t, a, k3, "won")
}

// Replicas claiming, answering and repeating the same keys at once: each
// key is claimed once, and every repeat after the answer gets it.
func testReplicaRace(t *testing.T, b Backend) {
	c := clock.NewFake(start)
	stores := []idem.Store{open(t, b, c), open(t, b, c), open(t, b, c)}
	const keys, sends = 50, 6
	var mu sync.Mutex
	wins := map[int]int{}
	var wg sync.WaitGroup
	for i := range keys {
		for j := range sends {
			wg.Go(func() {
				s, k := stores[(i+j)%len(stores)], idem.Scope("vin", fmt.Sprint(i))
				e, err := s.Claim(context.Background(), k)
				switch {
				case err != nil:
					t.Error(err)
				case e == nil:
					mu.Lock()
					wins[i]++
					mu.Unlock()
					if err := s.Complete(context.Background(), k, answer(fmt.Sprint(i))); err != nil {
						t.Error(err)
					}
				case e.State == idem.Done && string(e.Body) != fmt.Sprint(i):
					t.Errorf("key %d answered %q", i, e.Body)
				}
			})
		}
	}
	wg.Wait()
	for i := range keys {
		if wins[i] != 1 {
			t.Errorf("key %d claimed %d times", i, wins[i])
		}
		for _, s := range stores {
			sameAnswer(t, claim(t, s, idem.Scope("vin", fmt.Sprint(i)), idem.Done), answer(fmt.Sprint(i)))
		}
	}
}

// A live replica whose lease ended without renewal (it lost the database
// for a whole lease) loses its claim to the next claimant; of the two
// answers, the first stored wins and the other gets idem.ErrClaimLost.
func testLapsedClaimFirstAnswerWins(t *testing.T, b Backend) {
	c := clock.NewFake(start)
	a, r := open(t, b, c), open(t, b, c)
	for _, aFirst := range []bool{true, false} {
		k := idem.Scope("vin", fmt.Sprint("lapsed-", aFirst))
		claim(t, a, k, "won")
		c.Advance(ttl)
		claim(t, r, k, "won")
		first, second := a, r
		if !aFirst {
			first, second = r, a
		}
		want := answer("first")
		complete(t, first, k, want)
		if err := second.Complete(t.Context(), k, answer("second")); !errors.Is(err, idem.ErrClaimLost) {
			t.Fatalf("the second answer: %v, want idem.ErrClaimLost", err)
		}
		sameAnswer(t, claim(t, a, k, idem.Done), want)
		sameAnswer(t, claim(t, r, k, idem.Done), want)
	}
}
