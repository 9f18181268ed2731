package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// Change feed limits: items in one answer.
const (
	defaultChangesLimit = 500
	maxChangesLimit     = 5000
)

// changesPage is how many rows one store read of the feed takes: at least
// a page of the kind the waker reads, so that following a burst of the
// other half's changes costs a few queries, not one per limit.
const changesPage = 1000

// getChanges is the change feed: the vehicles whose half got a new
// revision after change sequence ?after=, oldest first, at once; else,
// once one is written or ?wait= has passed, what there is then (maybe
// nothing). The answer's Seq is the ?after= of the next call.
//
// The store lists both halves (DesiredSince: one row per vehicle half,
// at its newest write, by sequence); the half is kept here, reading on
// until the answer is full or the list ends. A request reads each row at
// most once however often it is woken, so a follower reads what changed
// since its last answer, and a first call (after=0) reads each vehicle
// half once across its pages.
func (s *Server) getChanges(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	half := q.Get("half")
	if half != hubv1.HalfVehicle && half != hubv1.HalfCloud {
		return badRequest("half", "half: want vehicle or cloud, got %q", half)
	}
	if err := cloudOnly(principal(r.Context()), half); err != nil {
		return err
	}
	after, wait, err := s.longPoll(q, "the seq of the previous answer (0 or more)")
	if err != nil {
		return err
	}
	limit := defaultChangesLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxChangesLimit {
			return badRequest("limit", "limit: want a number from 1 to %d, got %q", maxChangesLimit, l)
		}
		limit = n
	}

	pos := after // every change of half up to pos is answered or not half's
	var timer <-chan time.Time
	for {
		// Register before reading, so a write between the read and the
		// wait still wakes this poll.
		woken := s.waker.Changed(half)
		items, scanned, current, err := s.changesAfter(r.Context(), half, pos, limit)
		if err != nil {
			return err
		}
		switch {
		case len(items) > 0:
			writeJSON(w, http.StatusOK, hubv1.Changes{Items: items, Seq: items[len(items)-1].Seq})
			return nil
		case after > current:
			// The client is ahead of the store (restored from a backup):
			// it follows from the store's sequence.
			writeJSON(w, http.StatusOK, hubv1.Changes{Items: []hubv1.Change{}, Seq: current})
			return nil
		}
		pos = max(pos, scanned)
		if timer == nil {
			if wait == 0 {
				writeJSON(w, http.StatusOK, hubv1.Changes{Items: []hubv1.Change{}, Seq: pos})
				return nil
			}
			t := s.clk.NewTimer(wait)
			defer t.Stop()
			timer = t.C()
		}
		s.metrics.waiting.Inc()
		select {
		case <-woken:
			s.metrics.waiting.Dec()
		case <-timer:
			s.metrics.waiting.Dec()
			writeJSON(w, http.StatusOK, hubv1.Changes{Items: []hubv1.Change{}, Seq: pos})
			return nil
		case <-r.Context().Done():
			s.metrics.waiting.Dec()
			return nil
		}
	}
}

// changesAfter reads the changes of half after seq, at most limit. When
// it finds none, scanned is the sequence up to which there are none: the
// store's sequence read before the rows (every change numbered up to it
// is visible to the read that follows, as both stores number writes in
// commit order), or the last row read when a later write was read too.
// current is that sequence as read.
func (s *Server) changesAfter(ctx context.Context, half string, seq int64, limit int) (items []hubv1.Change, scanned, current int64, err error) {
	current, err = s.st.Sequence(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	scanned = seq
	page := max(limit, changesPage)
	for {
		cs, err := s.st.DesiredSince(ctx, scanned, page)
		if err != nil {
			return nil, 0, 0, err
		}
		for _, c := range cs {
			if c.Half != half {
				continue
			}
			items = append(items, hubv1.Change{Vehicle: c.Vehicle, Half: c.Half, Revision: c.Revision, Seq: c.Seq})
			if len(items) == limit {
				return items, c.Seq, current, nil
			}
		}
		if len(cs) > 0 {
			scanned = cs[len(cs)-1].Seq
		}
		if len(cs) < page {
			return items, max(scanned, current), current, nil
		}
	}
}
