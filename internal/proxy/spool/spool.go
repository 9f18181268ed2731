package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	proxyv1 "github.com/misaki-io/misaki/api/proxy/v1"
	"github.com/misaki-io/misaki/internal/framelog"
)

// Errors returned by the spool.
var (
	// ErrFull means a quota is reached and the route rejects.
	ErrFull = errors.New("spool: quota reached")
	// ErrClosed means the spool is closed.
	ErrClosed = errors.New("spool: closed")
	// ErrNotFound means no live record has that sequence number.
	ErrNotFound = errors.New("spool: no such queued request")
	// ErrInFlight means the record is being delivered and cannot be
	// cancelled.
	ErrInFlight = errors.New("spool: request is being delivered")
)

// Options configure a spool. The zero value of each field is its default.
type Options struct {
	// Dir holds the spool's files. Required.
	Dir string
	// Sync is the fsync policy. Default SyncAlways.
	Sync SyncPolicy
	// SyncInterval is Run's period: it fsyncs everything appended under
	// SyncInterval, and done and attempt frames under either policy.
	// Default 100ms.
	SyncInterval time.Duration
	// SegmentBytes is the size at which a segment file is sealed and a new
	// one started. Default 64 MiB, at most 1 GiB.
	SegmentBytes int64
	// InlineMax is the largest body stored inside its record; larger
	// bodies go to a file of their own. Default 64 KiB, at most 2 MiB.
	InlineMax int
	// MaxBytes and MaxRecords bound the whole spool; 0: no bound.
	MaxBytes   int64
	MaxRecords int64
	// Now is the clock (wall time: TTLs survive power-off). Default time.Now.
	Now func() time.Time
	// Log receives recovery and damage reports. Default: discard.
	Log *slog.Logger
	// BeforeSync, if set, runs before every fsync of a segment, after the
	// range that fsync covers is fixed. The replayer makes results durable
	// there, so that a done frame is never on disk before its result. It
	// may run with the spool's lock held (a segment sealed, reset or
	// closed), so it must not call the spool.
	BeforeSync func() error
	// Failpoint fails the segments' writes, fsyncs and truncations on
	// purpose, for tests.
	Failpoint framelog.Failpoint
}

// Stats are the spool's counters since Open, which include what Open's
// recovery found: the admin API's wire type itself (GET /v1/spool serves
// it as it is), where each counter is described.
type Stats = proxyv1.SpoolStats

// RouteStats describe one route's backlog.
type RouteStats struct {
	Route    string
	Priority int
	Records  int64
	Bytes    int64
	InFlight int
	// Oldest is the enqueue time of the oldest record; zero when empty.
	Oldest time.Time
}

// State is where a live record is.
type State string

const (
	StateQueued     State = "queued"
	StateDelivering State = "delivering"
)

// Spool is a crash-safe, segmented, append-only queue of requests.
//
// Lock order: mu, then a segment log's own locks.
type Spool struct {
	opts Options
	log  *slog.Logger

	segmentReads atomic.Int64 // reads of records from segments, for tests of NextN

	mu             sync.Mutex // guards fields below
	closed         bool
	segments       []uint32                 // segment ordinals on disk, oldest first; the last is active
	liveBySegment  map[uint32]int32         // live request records per segment
	sealed         map[uint32]segmentReader // sealed segments opened for reading
	active         *framelog.Log
	activeOrd      uint32
	nextSeq        uint64
	queues         map[string]*queue // per route
	liveRecords    int64             // queued and in flight, all routes
	liveBytes      int64             // their frames and body files
	bodies         map[uint64]string // seq → body file, for live records that have one
	pendingUnlinks []pendingUnlink   // body files to remove once their done frame is durable
	frameBuf       []byte            // Enqueue's encoding buffer
	evicted        []Dropped         // since the last Sweep
	stats          Stats             // Fsyncs: of sealed segments; the active one counts its own
}

// Open opens (or creates) the spool in opts.Dir and recovers its state:
// a torn write at the end of the newest segment is cut off, damaged frames
// are copied to the quarantine directory and skipped, finished records are
// dropped, and body files nothing refers to are removed.
func Open(opts Options) (*Spool, error) {
	if opts.Dir == "" {
		return nil, errors.New("spool: no directory")
	}
	if opts.Sync == "" {
		opts.Sync = SyncAlways
	}
	if opts.Sync != SyncAlways && opts.Sync != SyncInterval {
		return nil, fmt.Errorf("spool: sync policy %q: want always or interval", opts.Sync)
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = 100 * time.Millisecond
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 64 << 20
	}
	opts.SegmentBytes = min(opts.SegmentBytes, 1<<30)
	if opts.InlineMax <= 0 {
		opts.InlineMax = 64 << 10
	}
	opts.InlineMax = min(opts.InlineMax, maxPayload/2)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	s := &Spool{
		opts:          opts,
		log:           opts.Log.With("component", "spool"),
		liveBySegment: map[uint32]int32{},
		sealed:        map[uint32]segmentReader{},
		queues:        map[string]*queue{},
		bodies:        map[uint64]string{},
		nextSeq:       1,
	}
	for _, d := range []string{opts.Dir, s.path("bodies"), s.path("quarantine")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
	}
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, err
	}
	return s, nil
}

func (s *Spool) path(elem ...string) string {
	return filepath.Join(append([]string{s.opts.Dir}, elem...)...)
}

// Attempts returns how many delivery attempts a live record has had.
func (s *Spool) Attempts(seq uint64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, i := s.findLocked(seq)
	if q == nil {
		return 0, ErrNotFound
	}
	return int(q.entries[i].attempts), nil
}

// Lookup returns the state of a live record and its route.
func (s *Spool) Lookup(seq uint64) (State, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, i := s.findLocked(seq)
	if q == nil {
		return "", "", false
	}
	if q.entries[i].state == stateInFlight {
		return StateDelivering, q.route, true
	}
	return StateQueued, q.route, true
}

// Routes returns every route's backlog, highest priority first, then by
// name.
func (s *Spool) Routes() []RouteStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]RouteStats, 0, len(s.queues))
	for _, q := range s.queues {
		rs := RouteStats{Route: q.route, Priority: q.priority, Records: q.live, Bytes: q.bytes, InFlight: q.inFlight}
		if t := q.oldest(); t != 0 {
			rs.Oldest = time.Unix(int64(t), 0)
		}
		out = append(out, rs)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Priority != out[j].Priority {
			return out[i].Priority > out[j].Priority
		}
		return out[i].Route < out[j].Route
	})
	return out
}

// Stats returns the counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Segments = len(s.segments)
	if s.active != nil {
		st.Fsyncs += s.active.Syncs()
	}
	return st
}

// Close fsyncs and closes the spool, and removes the body files of
// finished records whose done frames that fsync made durable.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.active.Sync(s.active.Pos())
	s.unlinkDurableLocked()
	return errors.Join(err, s.closeFilesLocked())
}
