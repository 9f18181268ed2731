package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"
	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

func testAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	list, next, err := s.ListAudit(ctx, store.Page{})
	must(t, "list empty", err)
	if len(list) != 0 || next != "" {
		t.Fatalf("empty log: %v, next %q", list, next)
	}
	const n = 23
	var appended []hubv1.AuditEntry
	for i := range n {
		e := hubv1.AuditEntry{ID: 999, Time: at(time.Duration(i) * time.Second), Actor: "ops",
			Action: "update", Object: fmt.Sprintf("deployments/d%d", i)}
		if i%2 == 0 {
			e.Detail = "generation 2 → 3"
		}
		must(t, "append", s.AppendAudit(ctx, e))
		appended = append(appended, e)
	}
	var pages [][]hubv1.AuditEntry
	p := store.Page{Limit: 10}
	for {
		page, next, err := s.ListAudit(ctx, p)
		must(t, "list", err)
		pages = append(pages, page)
		if next == "" {
			break
		}
		if len(pages) > 10 {
			t.Fatal("the cursor does not advance")
		}
		if want := fmt.Sprint(page[len(page)-1].ID); next != want {
			t.Fatalf("next %q, want the last entry's ID %s", next, want)
		}
		p.After = next
	}
	if got := []int{len(pages[0]), len(pages[len(pages)-1])}; len(pages) != 3 || got[0] != 10 || got[1] != 3 {
		t.Fatalf("pages of %v entries, want 10, 10, 3", func() (l []int) {
			for _, p := range pages {
				l = append(l, len(p))
			}
			return
		}())
	}
	all := slices.Concat(pages...)
	for i, e := range all {
		if i > 0 && e.ID >= all[i-1].ID {
			t.Fatalf("not newest first: ID %d after %d", e.ID, all[i-1].ID)
		}
		want := appended[n-1-i]
		want.ID, want.Time = e.ID, stored(want.Time)
		if d := diff(want, e); d != "" {
			t.Errorf("entry %d (-want +got):\n%s", i, d)
		}
	}
	def, _, err := s.ListAudit(ctx, store.Page{})
	must(t, "list default", err)
	if d := diff(all, def); d != "" {
		t.Errorf("default page (-want +got):\n%s", d)
	}
	_, _, err = s.ListAudit(ctx, store.Page{After: "not-an-id"})
	wantErr(t, "a cursor that is not an entry ID", err, store.ErrBadCursor)
}

func testLeases(t *testing.T, s store.Store) {
	ctx := t.Context()
	const ttl = 10 * time.Second
	for _, st := range []struct {
		name   string
		lease  string
		holder string
		now    time.Duration
		want   bool
	}{
		{"free", "render", "a", 0, true},
		{"held by another", "render", "b", time.Second, false},
		{"another lease is free", "gc", "b", time.Second, true},
		{"renewed by its holder", "render", "a", 5 * time.Second, true},
		{"held by another until the renewal's end", "render", "b", 14 * time.Second, false},
		{"just before the end", "render", "b", 15*time.Second - time.Microsecond, false},
		{"expired at its end", "render", "b", 15 * time.Second, true},
		{"the old holder lost it", "render", "a", 16 * time.Second, false},
		{"taken over by the new holder", "render", "b", 16 * time.Second, true},
		{"expired long ago", "gc", "a", time.Hour, true},
	} {
		t.Run(st.name, func(t *testing.T) {
			got, err := s.TryLease(ctx, st.lease, st.holder, at(st.now), ttl)
			must(t, "try lease", err)
			if got != st.want {
				t.Errorf("TryLease(%s, %s, +%v) = %v, want %v", st.lease, st.holder, st.now, got, st.want)
			}
		})
	}
	t.Run("concurrent takers of a free lease", func(t *testing.T) {
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			won  int
			errs []error
		)
		start := make(chan struct{})
		for i := range 10 {
			wg.Go(func() {
				<-start
				ok, err := s.TryLease(ctx, "race", fmt.Sprint("h", i), at(0), ttl)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				}
				if ok {
					won++
				}
			})
		}
		close(start)
		wg.Wait()
		if len(errs) > 0 || won != 1 {
			t.Errorf("%d of 10 took the lease (errors: %v), want 1", won, errs)
		}
	})
}

func testDirty(t *testing.T, s store.Store) {
	ctx := t.Context()
	take := func(limit int, want ...store.Dirty) {
		t.Helper()
		got, err := s.TakeDirty(ctx, limit)
		must(t, "take", err)
		if want == nil {
			want = []store.Dirty{}
		}
		if d := diff(want, got, cmpopts.EquateEmpty()); d != "" {
			t.Errorf("take %d (-want +got):\n%s", limit, d)
		}
	}
	take(0)
	must(t, "mark", s.MarkDirty(ctx, []store.Dirty{{ID: "b"}, {ID: "a"}, {ID: "b", Force: true}}))
	must(t, "mark", s.MarkDirty(ctx, []store.Dirty{{ID: "c"}, {ID: "a"}, {ID: store.AllVehicles, Force: true}}))
	must(t, "mark nothing", s.MarkDirty(ctx, nil))
	must(t, "mark forced then not", s.MarkDirty(ctx, []store.Dirty{{ID: "d", Force: true}, {ID: "d"}}))
	take(2, store.Dirty{ID: "b", Force: true}, store.Dirty{ID: "a"})
	take(1, store.Dirty{ID: "c"})
	must(t, "mark a taken one again", s.MarkDirty(ctx, []store.Dirty{{ID: "a"}}))
	take(0, store.Dirty{ID: store.AllVehicles, Force: true}, store.Dirty{ID: "d", Force: true}, store.Dirty{ID: "a"})
	take(0)
}

func testDirtyConcurrentTake(t *testing.T, s store.Store) {
	ctx := t.Context()
	var marked []store.Dirty
	for i := range 200 {
		marked = append(marked, store.Dirty{ID: fmt.Sprintf("car-%03d", i)})
	}
	must(t, "mark", s.MarkDirty(ctx, marked))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		got  []string
		errs []error
	)
	for range 4 {
		wg.Go(func() {
			for {
				ds, err := s.TakeDirty(ctx, 7)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				for _, d := range ds {
					got = append(got, d.ID)
				}
				mu.Unlock()
				if err != nil || len(ds) == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("take: %v", errs)
	}
	slices.Sort(got)
	var want []string
	for _, d := range marked {
		want = append(want, d.ID)
	}
	if d := diff(want, got); d != "" {
		t.Errorf("taken by 4 concurrent takers: each exactly once (-want +got):\n%s", d)
	}
}

func testCounts(t *testing.T, s store.Store) {
	ctx := t.Context()
	got, err := s.Counts(ctx, at(0))
	must(t, "counts", err)
	if d := diff(store.Counts{}, got); d != "" {
		t.Errorf("empty store (-want +got):\n%s", d)
	}
	createVehicles(t, s, "a", "b", "c", "d")
	must(t, "seen", s.Seen(ctx, "a", at(time.Minute)))
	must(t, "seen", s.Seen(ctx, "b", at(2*time.Minute)))
	must(t, "seen", s.Seen(ctx, "c", at(-time.Minute)))
	for _, d := range []store.Desired{
		desired("a", hubv1.HalfVehicle, 2), // applied 2: not pending
		desired("a", hubv1.HalfCloud, 3),   // applied 1: pending
		desired("b", hubv1.HalfVehicle, 1), // no report: pending
		desired("c", hubv1.HalfVehicle, 1), // applied 5 (after a restore): not pending
	} {
		must(t, "put desired", s.PutDesired(ctx, d))
	}
	for _, r := range []struct {
		v       string
		half    string
		applied int64
	}{{"a", hubv1.HalfVehicle, 2}, {"a", hubv1.HalfCloud, 1}, {"c", hubv1.HalfVehicle, 5}, {"d", hubv1.HalfVehicle, 0}} {
		_, err := s.PutReported(ctx, r.v, hubv1.Reported{Half: r.half, AppliedRevision: r.applied})
		must(t, "report", err)
	}
	for _, tc := range []struct {
		name  string
		since time.Time
		want  store.Counts
	}{
		{"online since the start", at(0), store.Counts{Vehicles: 4, Online: 2, Pending: 2}},
		{"online since exactly b's last sight", at(2 * time.Minute), store.Counts{Vehicles: 4, Online: 1, Pending: 2}},
		{"online since before everyone", at(-time.Hour), store.Counts{Vehicles: 4, Online: 3, Pending: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Counts(ctx, tc.since)
			must(t, "counts", err)
			if d := diff(tc.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}
