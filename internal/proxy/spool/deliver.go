package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/misaki-io/misaki/internal/framelog"
)

// Next returns the oldest queued record of route, marked in flight, or
// nil if there is none. Its body, if in a file, is read with OpenBody.
// The caller ends it with Finish or puts it back with Retry.
func (s *Spool) Next(route string) (*Record, error) {
	recs, err := s.NextN(route, 1)
	if len(recs) == 0 {
		return nil, err
	}
	return recs[0], nil
}

// readAhead bounds one read of NextN.
const readAhead = 1 << 20

// NextN takes up to n queued records of route, oldest first, marked in
// flight, as n calls of Next would, but reads records that lie close
// together in a segment with one read: a replay batch costs one system
// call, not one per record. A record that cannot be read back is damage
// found late: counted, ended and skipped, never blocking the queue. It
// returns fewer than n only when the route has no more queued, or the
// spool closed while it read (those it read are returned, without error).
func (s *Spool) NextN(route string, n int) ([]*Record, error) {
	var recs []*Record
	for len(recs) < n {
		got, skipped, err := s.takeAndRead(route, n-len(recs))
		recs = append(recs, got...)
		if err != nil {
			if len(recs) == 0 {
				return nil, err
			}
			return recs, nil
		}
		if skipped == 0 {
			break // as many as were queued
		}
	}
	return recs, nil
}

// takeAndRead takes up to n queued records of route, marks them in
// flight, and reads them; it returns those read and how many it skipped
// as unreadable.
func (s *Spool) takeAndRead(route string, n int) ([]*Record, int, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, 0, ErrClosed
	}
	q := s.queues[route]
	var taken []entry
	var files []segmentReader // nil where the segment could not be opened
	var openErrs []error
	if q != nil && n > 0 {
		for i := q.firstQueued(); i >= 0 && i < len(q.entries) && len(taken) < n; i++ {
			e := &q.entries[i]
			if e.state != stateQueued {
				continue
			}
			e.state = stateInFlight
			q.inFlight++
			f, err := s.segmentFileLocked(e.seg)
			taken, files, openErrs = append(taken, *e), append(files, f), append(openErrs, err)
		}
	}
	s.mu.Unlock()
	// Read outside the lock: after a reboot these are disk reads, and
	// enqueues and other deliveries must not wait for them. The entries
	// are in flight, so their segments stay.
	recs := make([]*Record, 0, len(taken))
	skipped := 0
	for k := 0; k < len(taken); {
		// A run of records in one segment, in order (a route's records are
		// appended in sequence), whose span is not mostly other frames.
		j, sum := k+1, frameSpan(taken[k])
		for j < len(taken) && files[k] != nil && files[j] == files[k] && taken[j].off > taken[j-1].off {
			end := int64(taken[j].off) + frameSpan(taken[j]) - int64(taken[k].off)
			if end > readAhead || end > 2*(sum+frameSpan(taken[j]))+64<<10 {
				break
			}
			sum += frameSpan(taken[j])
			j++
		}
		var buf []byte
		if j-k > 1 {
			// A short read (the end of the file) leaves the records past
			// it to readRecord.
			buf = make([]byte, int64(taken[j-1].off)+frameSpan(taken[j-1])-int64(taken[k].off))
			got, _ := files[k].ReadAt(buf, int64(taken[k].off))
			s.segmentReads.Add(1)
			buf = buf[:got]
		}
		for m := k; m < j; m++ {
			var r *Record
			err := framelog.ErrShortFrame
			if rel := int(taken[m].off - taken[k].off); buf != nil && rel < len(buf) {
				r, err = recordFromFrame(buf[rel:min(len(buf), rel+int(frameSpan(taken[m])))], taken[m])
			}
			if openErrs[m] != nil {
				err = openErrs[m]
			} else if errors.Is(err, framelog.ErrShortFrame) {
				r, err = readRecord(files[m], taken[m]) // alone, or past what the run's read got
				s.segmentReads.Add(1)
			}
			if err == nil {
				recs = append(recs, r)
				continue
			}
			if s.endUnreadable(q, taken[m], err) {
				for _, e := range taken[m+1:] {
					s.endUnreadable(q, e, os.ErrClosed)
				}
				return recs, skipped, ErrClosed
			}
			skipped++
		}
		k = j
	}
	return recs, skipped, nil
}

// endUnreadable ends in-flight entry e of q, which could not be read back
// (err): it is damage found late, counted in DamagedSpans and ended (its
// done frame says Failed), so that it never blocks the queue. If the spool
// closed instead, the entry is queued again and endUnreadable reports true.
func (s *Spool) endUnreadable(q *queue, e entry, err error) (closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := q.find(e.seq)
	if s.closed || errors.Is(err, os.ErrClosed) {
		if j >= 0 && q.entries[j].state == stateInFlight {
			q.entries[j].state = stateQueued
			q.inFlight--
		}
		return true
	}
	if j >= 0 {
		s.log.Warn("unreadable spooled request, skipped", "route", q.route, "seq", e.seq, "err", err)
		s.stats.DamagedSpans++
		s.finishLocked(q, j, Failed)
		s.stats.Failed--
	}
	return false
}

// frameSpan is the most of a segment entry e's record can take: its size
// counts a body file's bytes too.
func frameSpan(e entry) int64 { return min(int64(e.size), framelog.HeaderSize+maxPayload) }

// readRecord reads e's record back from its segment file.
func readRecord(f io.ReaderAt, e entry) (*Record, error) {
	// The entry's size is the frame's, plus a body file's: for a record
	// with its body inline, one read gets the whole frame.
	b := make([]byte, min(int(e.size), framelog.HeaderSize+maxPayload))
	n, err := f.ReadAt(b, int64(e.off))
	if n < framelog.HeaderSize {
		if err == nil || err == io.EOF {
			err = framelog.ErrShortFrame
		}
		return nil, err
	}
	length := binary.LittleEndian.Uint32(b[4:8])
	if length > maxPayload {
		return nil, framelog.ErrBadFrame
	}
	if need := framelog.HeaderSize + int(length); need > n {
		b = make([]byte, need)
		if _, err := f.ReadAt(b, int64(e.off)); err != nil {
			return nil, err
		}
	} else {
		b = b[:need]
	}
	return recordFromFrame(b, e)
}

// recordFromFrame decodes the record of entry e from b, which starts with its
// frame. framelog.ErrShortFrame means b ends inside it.
func recordFromFrame(b []byte, e entry) (*Record, error) {
	typ, payload, _, err := readFrame(b)
	if err != nil {
		return nil, err
	}
	if typ != typeRequest {
		return nil, framelog.ErrBadFrame
	}
	r, err := decodeRecord(payload)
	if err != nil {
		return nil, err
	}
	if r.Seq != e.seq {
		return nil, fmt.Errorf("%w: record %d where %d was indexed", errBadPayload, r.Seq, e.seq)
	}
	return r, nil
}

// Finish ends an in-flight (or queued) record with outcome o.
func (s *Spool) Finish(seq uint64, o Outcome) error {
	return s.FinishAll([]uint64{seq}, []Outcome{o})
}

// FinishAll ends records as Finish does, seqs[i] with outcomes[i], with
// one write for all their done frames (a batch's deliveries end
// together). It returns ErrNotFound, after ending the others, if one of
// them is not in the spool.
func (s *Spool) FinishAll(seqs []uint64, outcomes []Outcome) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var frames []byte
	var found []int
	queues := make([]*queue, len(seqs))
	for k, seq := range seqs {
		if queues[k], _ = s.findLocked(seq); queues[k] != nil {
			frames = framelog.AppendFrame(frames, typeDone, appendDone(nil, seq, outcomes[k]))
			found = append(found, k)
		}
	}
	if len(frames) > 0 {
		if err := s.appendLocked(frames); err != nil {
			s.log.Warn("recording finished requests", "seq", seqs[found[0]], "requests", len(found), "err", err)
		}
	}
	for _, k := range found {
		// Found again by its queue: an earlier removal may have moved it.
		if i := queues[k].find(seqs[k]); i >= 0 {
			s.forgetLocked(queues[k], i, outcomes[k])
		}
	}
	if len(found) < len(seqs) {
		return ErrNotFound
	}
	return nil
}

// Retry puts an in-flight record back at its place in the queue, one
// attempt more.
func (s *Spool) Retry(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, i := s.findLocked(seq)
	if q == nil {
		return ErrNotFound
	}
	e := &q.entries[i]
	if e.state == stateInFlight {
		e.state = stateQueued
		q.inFlight--
	}
	if e.attempts < 1<<16-1 {
		e.attempts++
	}
	if err := s.appendLocked(framelog.AppendFrame(nil, typeAttempt, appendAttempt(nil, seq))); err != nil {
		s.log.Warn("recording an attempt", "seq", seq, "err", err)
	}
	return nil
}

// Cancel removes a queued record. One being delivered cannot be
// cancelled (ErrInFlight).
func (s *Spool) Cancel(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, i := s.findLocked(seq)
	if q == nil {
		return ErrNotFound
	}
	if q.entries[i].state == stateInFlight {
		return ErrInFlight
	}
	s.finishLocked(q, i, Cancelled)
	return nil
}
