package spool

import (
	"sort"
	"unsafe"

	"github.com/misaki-io/misaki/internal/framelog"
	"golang.org/x/sys/unix"
)

// Entry states.
const (
	stateQueued   = 0
	stateInFlight = 1
	stateDone     = 2
)

// entry is one live record in memory: 32 bytes, no pointers, so a million
// spooled requests cost 32 MB of index and nothing for the GC to scan.
// A queue past offHeapEntries keeps its entries in anonymous memory mapped
// outside the Go heap (see push): the GC sizes the heap at twice what is
// live, so 32 MB of index on the heap would let it grow by as much again
// in garbage, and a proxy holding a million requests would sit at twice
// its index in RSS.
type entry struct {
	seq      uint64
	seg      uint32 // segment ordinal
	off      uint32 // frame offset in the segment
	size     uint32 // frame bytes plus body file bytes, for quotas
	enq      uint32 // enqueue time, Unix seconds
	exp      uint32 // expiry, Unix seconds rounded up; 0: never
	attempts uint16
	state    uint8
}

// queue is one route's records in sequence order (FIFO). Finished
// records leave gaps (stateDone) that compact removes.
type queue struct {
	route    string
	priority int
	entries  []entry // on the heap, or a window into mem
	mem      []byte  // the mapping behind entries when off the heap
	gaps     int
	live     int64 // queued + in flight
	inFlight int
	bytes    int64
}

// find returns the index of seq, or -1.
func (q *queue) find(seq uint64) int {
	i := sort.Search(len(q.entries), func(i int) bool { return q.entries[i].seq >= seq })
	if i < len(q.entries) && q.entries[i].seq == seq && q.entries[i].state != stateDone {
		return i
	}
	return -1
}

// markDone marks entry i finished.
func (q *queue) markDone(i int) {
	e := &q.entries[i]
	if e.state == stateInFlight {
		q.inFlight--
	}
	e.state = stateDone
	q.live--
	q.bytes -= int64(e.size)
	q.gaps++
	// Drop finished entries at the front at once: the common case,
	// since replay finishes records mostly in order.
	n := 0
	for n < len(q.entries) && q.entries[n].state == stateDone {
		n++
	}
	if n > 0 {
		q.entries = q.entries[n:]
		q.gaps -= n
		if len(q.entries) == 0 && q.mem != nil {
			q.release() // drained: the mapping goes back to the system
		}
	}
	if q.gaps > 64 && q.gaps > len(q.entries)/2 {
		q.compact()
	}
}

// compact removes every gap.
func (q *queue) compact() {
	live := q.entries[:0]
	for _, e := range q.entries {
		if e.state != stateDone {
			live = append(live, e)
		}
	}
	clear(q.entries[len(live):])
	q.entries = live
	q.gaps = 0
}

// firstQueued returns the index of the oldest record not in flight, or -1.
func (q *queue) firstQueued() int {
	for i := range q.entries {
		if q.entries[i].state == stateQueued {
			return i
		}
	}
	return -1
}

// oldest returns the enqueue time of the oldest live record (Unix
// seconds), or 0.
func (q *queue) oldest() uint32 {
	for i := range q.entries {
		if q.entries[i].state != stateDone {
			return q.entries[i].enq
		}
	}
	return 0
}

const (
	entrySize = int(unsafe.Sizeof(entry{}))
	// offHeapEntries is the size from which a queue's entries are mapped
	// outside the heap (128 KiB of entries); smaller queues stay on it,
	// so that a queue going between empty and a few records costs no
	// system calls.
	offHeapEntries = 4096
)

// push appends e to the queue.
func (q *queue) push(e entry) {
	if len(q.entries) == cap(q.entries) {
		q.grow(max(2*len(q.entries), 16))
	}
	q.entries = append(q.entries, e) // within capacity: in place
}

// grow moves the entries to room for n, off the heap when n is large. If
// the mapping fails the heap serves.
func (q *queue) grow(n int) {
	var next []entry
	var mem []byte
	if n >= offHeapEntries {
		if m, err := unix.Mmap(-1, 0, n*entrySize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE); err == nil {
			mem = m
			// Page-aligned memory no Go pointer refers into and the GC
			// never scans; entry holds no pointers.
			next = unsafe.Slice((*entry)(unsafe.Pointer(unsafe.SliceData(m))), n)[:0]
		}
	}
	if next == nil {
		next = make([]entry, 0, n)
	}
	next = append(next, q.entries...)
	q.release()
	q.entries, q.mem = next, mem
}

// release drops the entries and unmaps their memory, if mapped.
func (q *queue) release() {
	q.entries = nil
	if q.mem != nil {
		unix.Munmap(q.mem)
		q.mem = nil
	}
}

// queueLocked returns route's queue, made empty if the route has none.
func (s *Spool) queueLocked(route string) *queue {
	q := s.queues[route]
	if q == nil {
		q = &queue{route: route}
		s.queues[route] = q
	}
	return q
}

// findLocked returns the queue of live record seq and its index there, or
// nil and -1. It searches each route's queue by sequence number.
func (s *Spool) findLocked(seq uint64) (*queue, int) {
	for _, q := range s.queues {
		if i := q.find(seq); i >= 0 {
			return q, i
		}
	}
	return nil, -1
}

// finishLocked ends record i of q with outcome o: a done frame is appended
// (not waited for: losing it only means the record is delivered again, and
// the gateway answers a repeat from its store), the record leaves the
// index, and segments nothing lives in any more are removed, oldest first.
func (s *Spool) finishLocked(q *queue, i int, o Outcome) {
	e := q.entries[i]
	if err := s.appendLocked(framelog.AppendFrame(nil, typeDone, appendDone(nil, e.seq, o))); err != nil {
		s.log.Warn("recording a finished request", "seq", e.seq, "err", err)
	}
	s.forgetLocked(q, i, o)
}

// forgetLocked drops entry i of q, whose done frame is written, from the
// index and the counts; its body file, if any, is removed once that done
// frame is durable, and segments left with no live record are reclaimed.
func (s *Spool) forgetLocked(q *queue, i int, o Outcome) {
	e := q.entries[i]
	q.markDone(i)
	s.liveRecords--
	s.liveBytes -= int64(e.size)
	s.liveBySegment[e.seg]--
	if name, ok := s.bodies[e.seq]; ok {
		delete(s.bodies, e.seq)
		s.pendingUnlinks = append(s.pendingUnlinks, pendingUnlink{seg: s.activeOrd, pos: s.active.Pos(), name: name})
	}
	switch o {
	case Delivered:
		s.stats.Delivered++
	case Failed:
		s.stats.Failed++
	case Expired:
		s.stats.Expired++
	case Cancelled:
		s.stats.Cancelled++
	case Evicted:
		s.stats.Evicted++
	}
	s.reclaimLocked()
}

// expirySeconds rounds a Unix-nanosecond expiry up to whole seconds.
func expirySeconds(ns int64) uint32 {
	if ns <= 0 {
		return 0
	}
	sec := (ns + 1e9 - 1) / 1e9
	return uint32(min(sec, 1<<32-1))
}
