package storetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

func storedDesired(d store.Desired, seq int64) store.Desired {
	d.IssuedAt, d.Expires = stored(d.IssuedAt), stored(d.Expires)
	d.Seq = seq
	return d
}

func sequence(t *testing.T, s store.Store) int64 {
	t.Helper()
	seq, err := s.Sequence(t.Context())
	must(t, "sequence", err)
	return seq
}

func testPutDesired(t *testing.T, s store.Store) {
	ctx := t.Context()
	createVehicles(t, s, "car-1")
	_, err := s.GetDesired(ctx, "car-1", hubv1.HalfVehicle)
	wantErr(t, "get before put", err, store.ErrNotFound)
	if seq := sequence(t, s); seq != 0 {
		t.Errorf("sequence of an empty store = %d, want 0", seq)
	}
	wantErr(t, "put for a missing vehicle", s.PutDesired(ctx, desired("car-9", hubv1.HalfVehicle, 1)), store.ErrNotFound)
	if seq := sequence(t, s); seq != 0 {
		t.Errorf("a refused put moved the sequence to %d", seq)
	}

	var last int64
	for _, st := range []struct {
		name string
		d    store.Desired
		err  error
	}{
		{"first", desired("car-1", hubv1.HalfVehicle, 5), nil},
		{"same revision", desired("car-1", hubv1.HalfVehicle, 5), store.ErrStale},
		{"lower revision", desired("car-1", hubv1.HalfVehicle, 4), store.ErrStale},
		{"other half, lower revision", desired("car-1", hubv1.HalfCloud, 1), nil},
		{"higher revision", desired("car-1", hubv1.HalfVehicle, 6), nil},
		{"a jump", desired("car-1", hubv1.HalfVehicle, 100), nil},
		{"below after the jump", desired("car-1", hubv1.HalfVehicle, 99), store.ErrStale},
	} {
		t.Run(st.name, func(t *testing.T) {
			before, err := s.GetDesired(ctx, st.d.Vehicle, st.d.Half)
			if err != nil {
				wantErr(t, "get before", err, store.ErrNotFound)
			}
			err = s.PutDesired(ctx, st.d)
			wantErr(t, "put", err, st.err)
			got, gerr := s.GetDesired(ctx, st.d.Vehicle, st.d.Half)
			must(t, "get", gerr)
			if st.err != nil {
				if !strings.Contains(err.Error(), "car-1") {
					t.Errorf("error %q does not name the vehicle", err)
				}
				if d := diff(before, got); d != "" {
					t.Errorf("a refused put changed the stored revision (-before +after):\n%s", d)
				}
				if seq := sequence(t, s); seq != last {
					t.Errorf("a refused put moved the sequence from %d to %d", last, seq)
				}
				return
			}
			if got.Seq <= last {
				t.Errorf("seq %d, not above the previous %d", got.Seq, last)
			}
			last = got.Seq
			if d := diff(storedDesired(st.d, last), got); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
			if seq := sequence(t, s); seq != last {
				t.Errorf("sequence = %d, want the last write's %d", seq, last)
			}
		})
	}
}

func testDesiredSince(t *testing.T, s store.Store) {
	ctx := t.Context()
	createVehicles(t, s, "a", "b", "c")
	var seqs []int64
	put := func(v, half string, rev int64) {
		t.Helper()
		must(t, "put", s.PutDesired(ctx, desired(v, half, rev)))
		seqs = append(seqs, sequence(t, s))
	}
	put("a", hubv1.HalfVehicle, 1) // seqs[0], replaced by seqs[3]
	put("b", hubv1.HalfVehicle, 1) // seqs[1]
	put("a", hubv1.HalfCloud, 1)   // seqs[2]
	put("a", hubv1.HalfVehicle, 2) // seqs[3]
	put("c", hubv1.HalfCloud, 7)   // seqs[4]
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("sequence did not advance: %v", seqs)
		}
	}
	ch := func(i int, v, half string, rev int64) store.Change {
		return store.Change{Seq: seqs[i], Vehicle: v, Half: half, Revision: rev}
	}
	all := []store.Change{
		ch(1, "b", hubv1.HalfVehicle, 1),
		ch(2, "a", hubv1.HalfCloud, 1),
		ch(3, "a", hubv1.HalfVehicle, 2),
		ch(4, "c", hubv1.HalfCloud, 7),
	}
	for _, tc := range []struct {
		name  string
		after int64
		limit int
		want  []store.Change
	}{
		{"from the start; a's first write coalesced into its second", 0, 0, all},
		{"limit", 0, 2, all[:2]},
		{"limit 1", 0, 1, all[:1]},
		{"after the coalesced write", seqs[0], 10, all},
		{"after the first listed", seqs[1], 10, all[1:]},
		{"after the middle, limit", seqs[2], 1, all[2:3]},
		{"after the last", seqs[4], 10, []store.Change{}},
		{"after the future", seqs[4] + 100, 10, []store.Change{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.DesiredSince(ctx, tc.after, tc.limit)
			must(t, "desired since", err)
			if d := diff(tc.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	t.Run("paging to the end", func(t *testing.T) {
		var got []store.Change
		after := int64(0)
		for {
			page, err := s.DesiredSince(ctx, after, 3)
			must(t, "desired since", err)
			if len(page) == 0 {
				break
			}
			got = append(got, page...)
			after = page[len(page)-1].Seq
		}
		if d := diff(all, got); d != "" {
			t.Errorf("(-want +got):\n%s", d)
		}
	})
}

func testPutDesiredBatch(t *testing.T, s store.Store) {
	ctx := t.Context()
	createVehicles(t, s, "a", "b", "c")
	must(t, "put", s.PutDesired(ctx, desired("a", hubv1.HalfVehicle, 5)))
	start := sequence(t, s)

	for _, tc := range []struct {
		name    string
		batch   []store.Desired
		err     error
		mention string // the entry an error names
	}{
		{"stale entry", []store.Desired{desired("b", hubv1.HalfVehicle, 1), desired("a", hubv1.HalfVehicle, 5), desired("c", hubv1.HalfVehicle, 1)}, store.ErrStale, "a/vehicle"},
		{"missing vehicle", []store.Desired{desired("b", hubv1.HalfVehicle, 1), desired("zz", hubv1.HalfVehicle, 1)}, store.ErrNotFound, "zz"},
		{"same half, not increasing", []store.Desired{desired("b", hubv1.HalfCloud, 2), desired("b", hubv1.HalfCloud, 2)}, store.ErrStale, "b/cloud"},
		{"same half, decreasing", []store.Desired{desired("c", hubv1.HalfCloud, 3), desired("c", hubv1.HalfCloud, 2)}, store.ErrStale, "c/cloud"},
	} {
		t.Run("all or nothing: "+tc.name, func(t *testing.T) {
			err := s.PutDesiredBatch(ctx, tc.batch)
			wantErr(t, "batch", err, tc.err)
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not name %s", err, tc.mention)
			}
			for _, v := range []string{"b", "c"} {
				for _, h := range []string{hubv1.HalfVehicle, hubv1.HalfCloud} {
					if _, err := s.GetDesired(ctx, v, h); err == nil {
						t.Errorf("a refused batch stored %s/%s", v, h)
					}
				}
			}
			if got, _ := s.GetDesired(ctx, "a", hubv1.HalfVehicle); got.Revision != 5 || got.Seq != start {
				t.Errorf("a refused batch changed a/vehicle: revision %d seq %d", got.Revision, got.Seq)
			}
			if seq := sequence(t, s); seq != start {
				t.Errorf("a refused batch moved the sequence from %d to %d", start, seq)
			}
		})
	}

	t.Run("empty", func(t *testing.T) {
		must(t, "empty batch", s.PutDesiredBatch(ctx, nil))
		if seq := sequence(t, s); seq != start {
			t.Errorf("an empty batch moved the sequence from %d to %d", start, seq)
		}
	})

	t.Run("stored", func(t *testing.T) {
		batch := []store.Desired{
			desired("c", hubv1.HalfVehicle, 1),
			desired("a", hubv1.HalfVehicle, 6),
			desired("b", hubv1.HalfCloud, 3),
			desired("b", hubv1.HalfCloud, 4), // replaces the one before
			desired("b", hubv1.HalfVehicle, 1),
		}
		must(t, "batch", s.PutDesiredBatch(ctx, batch))
		end := sequence(t, s)
		if end != start+int64(len(batch)) {
			t.Errorf("sequence %d after a batch of %d from %d: want one number per entry", end, len(batch), start)
		}
		changes, err := s.DesiredSince(ctx, start, 0)
		must(t, "desired since", err)
		var got []string
		for i, c := range changes {
			got = append(got, fmt.Sprintf("%s/%s@%d", c.Vehicle, c.Half, c.Revision))
			if i > 0 && c.Seq <= changes[i-1].Seq {
				t.Errorf("changes out of sequence order: %+v", changes)
			}
		}
		want := []string{"c/vehicle@1", "a/vehicle@6", "b/cloud@4", "b/vehicle@1"}
		if d := diff(want, got); d != "" {
			t.Errorf("changes in batch order (-want +got):\n%s", d)
		}
		if changes[len(changes)-1].Seq != end {
			t.Errorf("last change seq %d, sequence %d", changes[len(changes)-1].Seq, end)
		}
		for _, d := range []store.Desired{batch[0], batch[1], batch[3], batch[4]} {
			got, err := s.GetDesired(ctx, d.Vehicle, d.Half)
			must(t, "get", err)
			if diff := diff(storedDesired(d, got.Seq), got); diff != "" {
				t.Errorf("%s/%s (-want +got):\n%s", d.Vehicle, d.Half, diff)
			}
		}
	})
}

func testConcurrentPutDesired(t *testing.T, s store.Store) {
	ctx := t.Context()
	const writers, each = 8, 10
	for w := range writers {
		createVehicles(t, s, fmt.Sprintf("car-%d", w))
	}
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make(chan error, writers*each*2)
	)
	for w := range writers {
		wg.Go(func() {
			<-start
			v := fmt.Sprintf("car-%d", w)
			for r := range int64(each) {
				if err := s.PutDesired(ctx, desired(v, hubv1.HalfVehicle, r+1)); err != nil {
					errs <- err
				}
				batch := []store.Desired{desired(v, hubv1.HalfCloud, 2*r+1), desired(v, hubv1.HalfCloud, 2*r+2)}
				if err := s.PutDesiredBatch(ctx, batch); err != nil {
					errs <- err
				}
				if _, err := s.PutReported(ctx, v, hubv1.Reported{Half: hubv1.HalfVehicle, AppliedRevision: r}); err != nil {
					errs <- err
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent write: %v", err)
	}
	if want := int64(writers * each * 3); sequence(t, s) != want {
		t.Errorf("sequence %d after %d numbered writes", sequence(t, s), want)
	}
	changes, err := s.DesiredSince(ctx, 0, 1000)
	must(t, "desired since", err)
	if len(changes) != 2*writers {
		t.Errorf("%d changes, want %d (one per vehicle half)", len(changes), 2*writers)
	}
	for _, c := range changes {
		want := int64(each)
		if c.Half == hubv1.HalfCloud {
			want = 2 * each
		}
		if c.Revision != want {
			t.Errorf("%s/%s at revision %d, want %d", c.Vehicle, c.Half, c.Revision, want)
		}
	}
}

func testChanges(t *testing.T, s store.Store) {
	ctx := t.Context()
	createVehicles(t, s, "car-1", "car-2")
	c1, err := s.Changes(ctx)
	must(t, "changes", err)
	c2, err := s.Changes(ctx)
	must(t, "changes", err)
	for rev := int64(1); rev <= 3; rev++ {
		must(t, "put", s.PutDesired(ctx, desired("car-1", hubv1.HalfVehicle, rev)))
		d, err := s.GetDesired(ctx, "car-1", hubv1.HalfVehicle)
		must(t, "get", err)
		for i, c := range []<-chan int64{c1, c2} {
			if got := recv(t, c, fmt.Sprintf("subscriber %d, revision %d", i+1, rev)); got != d.Seq {
				t.Errorf("subscriber %d got %d, want the write's seq %d", i+1, got, d.Seq)
			}
		}
	}
	// A refused write moves nothing and wakes nobody: the next value is
	// the next accepted write's.
	wantErr(t, "stale put", s.PutDesired(ctx, desired("car-1", hubv1.HalfVehicle, 1)), store.ErrStale)
	must(t, "put", s.PutDesired(ctx, desired("car-2", hubv1.HalfCloud, 1)))
	want := sequence(t, s)
	if got := recv(t, c1, "after a refused write"); got != want {
		t.Errorf("got %d after a refused and an accepted write, want %d", got, want)
	}
}

func testChangesCoalesce(t *testing.T, s store.Store) {
	ctx := t.Context()
	createVehicles(t, s, "car-1")
	c, err := s.Changes(ctx)
	must(t, "changes", err)
	for rev := int64(1); rev <= 5; rev++ {
		must(t, "put", s.PutDesired(ctx, desired("car-1", hubv1.HalfVehicle, rev)))
	}
	want := sequence(t, s)
	// A reader that slept through five writes gets the newest, and
	// nothing older after it.
	if got := recv(t, c, "after five writes"); got != want {
		t.Errorf("got %d, want the newest %d", got, want)
	}
	must(t, "put", s.PutDesired(ctx, desired("car-1", hubv1.HalfVehicle, 6)))
	want = sequence(t, s)
	if got := recv(t, c, "after one more write"); got != want {
		t.Errorf("got %d, want %d (an older value was still queued?)", got, want)
	}
}

func testChangesBatch(t *testing.T, s store.Store) {
	ctx := t.Context()
	createVehicles(t, s, "a", "b", "c")
	c, err := s.Changes(ctx)
	must(t, "changes", err)
	must(t, "batch", s.PutDesiredBatch(ctx, []store.Desired{
		desired("a", hubv1.HalfVehicle, 1), desired("b", hubv1.HalfVehicle, 1), desired("c", hubv1.HalfVehicle, 1),
	}))
	want := sequence(t, s)
	if got := recv(t, c, "after a batch"); got != want {
		t.Errorf("got %d, want the batch's last seq %d", got, want)
	}
}

func testChangesClose(t *testing.T, s store.Store) {
	cctx, cancel := context.WithCancel(t.Context())
	c, err := s.Changes(cctx)
	must(t, "changes", err)
	cancel()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-c:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("the channel is still open 10s after its context ended")
		}
	}
}
