package spool

import "fmt"

// Eviction is what a route does when its quota, or the total, is reached.
type Eviction string

const (
	// Reject refuses the new request (ErrFull).
	Reject Eviction = "reject"
	// DropOldest removes the route's oldest queued records to make room;
	// each one is counted as evicted.
	DropOldest Eviction = "drop-oldest"
)

// Limits bound one route's share of the spool.
type Limits struct {
	MaxBytes   int64    // 0: no bound beyond the total
	MaxRecords int64    // 0: no bound beyond the total
	Evict      Eviction // default Reject
}

// makeRoomLocked checks the route's and the total quota for size more bytes
// and one more record, evicting the route's oldest queued records if its
// policy says so.
func (s *Spool) makeRoomLocked(route string, size int64, lim Limits) error {
	q := s.queues[route]
	fits := func() error {
		var qLive, qBytes int64
		if q != nil {
			qLive, qBytes = q.live, q.bytes
		}
		switch {
		case lim.MaxRecords > 0 && qLive+1 > lim.MaxRecords:
			return fmt.Errorf("%w: route %s holds %d requests (its maximum)", ErrFull, route, qLive)
		case lim.MaxBytes > 0 && qBytes+size > lim.MaxBytes:
			return fmt.Errorf("%w: route %s holds %d bytes, its maximum is %d", ErrFull, route, qBytes, lim.MaxBytes)
		case s.opts.MaxRecords > 0 && s.liveRecords+1 > s.opts.MaxRecords:
			return fmt.Errorf("%w: the spool holds %d requests (its maximum)", ErrFull, s.liveRecords)
		case s.opts.MaxBytes > 0 && s.liveBytes+size > s.opts.MaxBytes:
			return fmt.Errorf("%w: the spool holds %d bytes, its maximum is %d", ErrFull, s.liveBytes, s.opts.MaxBytes)
		}
		return nil
	}
	err := fits()
	if err == nil || lim.Evict != DropOldest || q == nil {
		return err
	}
	for err != nil {
		i := q.firstQueued()
		if i < 0 {
			return err
		}
		e := q.entries[i]
		s.evicted = append(s.evicted, Dropped{Seq: e.seq, Route: route, Outcome: Evicted, Attempts: int(e.attempts)})
		s.finishLocked(q, i, Evicted)
		err = fits()
	}
	return nil
}

// Dropped is a record the spool ended by itself, undelivered: its TTL
// passed (Expired) or drop-oldest made room for a newer one (Evicted).
type Dropped struct {
	Seq      uint64
	Route    string
	Outcome  Outcome // Expired or Evicted
	Attempts int
}

// Sweep ends every queued record whose TTL has passed, and returns those
// and the records drop-oldest evicted since the last call.
func (s *Spool) Sweep() []Dropped {
	now := uint32(s.opts.Now().Unix())
	s.mu.Lock()
	defer s.mu.Unlock()
	done := s.evicted
	s.evicted = nil
	for _, q := range s.queues {
		start := len(done)
		for _, e := range q.entries {
			if e.state == stateQueued && e.exp != 0 && e.exp <= now {
				done = append(done, Dropped{Seq: e.seq, Route: q.route, Outcome: Expired, Attempts: int(e.attempts)})
			}
		}
		for _, f := range done[start:] {
			if i := q.find(f.Seq); i >= 0 {
				s.finishLocked(q, i, Expired)
			}
		}
	}
	return done
}
