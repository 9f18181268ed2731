// Package idem is the cloud gateway's memory of Idempotency-Key values: for
// each key (scoped by the vehicle that sent it), whether a request is in
// flight or what the service answered, kept for a window longer than any
// expected outage (30 days by default).
//
// Store is what the gateway asks of that memory. It has two
// implementations, run through one test suite (idemtest): FileStore, here,
// a local store for a gateway that runs as one replica, and
// idem/postgres, shared by every replica of a gateway behind a load
// balancer (its claims are rows with a lease; see that package).
//
// FileStore's claims (a request is being answered) live in memory only:
// a claim matters only while its run of the gateway lives, and a gateway
// that crashes while the service answers must let the key be tried again
// anyway (the service may then see that one request twice; nothing short
// of the service's own cooperation can avoid that).
//
// Answers are durable before Complete returns. They are appended to a
// write-ahead log (a framelog log, path.log-N, under framelog.SyncAlways),
// and the answers completing together share one write and one fdatasync
// (group commit: a committer goroutine takes every answer queued while the
// previous group was being synced). About once a second the log is
// checkpointed into a bbolt file, which holds the keys for the whole
// window, in one transaction, and then removed; until then the log's
// answers are also kept in memory. A start applies whatever logs a crash
// left to bbolt before serving, by framelog's one rule: a damaged frame
// costs its own answer and no other, so every key stored after it is
// still remembered and its repeat never reaches the service. The previous
// release's logs (path.wal-N, another frame shape) are applied too, read
// as that release read them: up to their first bad frame.
//
// bbolt alone, one transaction per group, costs about 1.2 ms per group
// here (it rewrites the B+tree pages the random keys land on and syncs
// twice); with the edge's 16 deliveries in flight that held the gateway
// to about 6,000 answers a second before any HTTP was done
// (BenchmarkComplete, run on the tree before the log). An append and one
// fdatasync cost a quarter of that.
package idem

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/misaki-io/misaki/internal/framelog"
)

var (
	bucketKeys = []byte("keys")   // scoped key → entry (JSON)
	bucketTime = []byte("bytime") // created (8 bytes BE) + scoped key → nothing
)

// States of an entry.
const (
	InFlight = "in-flight"
	Done     = "done"
)

// Entry is what the gateway knows of one key.
type Entry struct {
	State string `json:"state"`
	// Fingerprint is a hash of the method, target and body of the request
	// that claimed the key; a repeat must match it.
	Fingerprint []byte      `json:"fingerprint,omitempty"`
	Status      int         `json:"status,omitempty"`
	Header      http.Header `json:"header,omitempty"`
	Body        []byte      `json:"body,omitempty"`
	// Truncated means the body was longer than the gateway keeps; a repeat
	// gets the status and headers, and an empty body.
	Truncated bool `json:"truncated,omitempty"`
	// BodyUnknown means the first request's body broke off after the
	// service had answered: Fingerprint covers its method and target only.
	BodyUnknown bool  `json:"bodyUnknown,omitempty"`
	Created     int64 `json:"created"` // Unix nanoseconds

	enc []byte // the entry as JSON, once written to the log
}

// checkpointEvery is how often the log is moved into bbolt; checkpointBytes
// moves it sooner when it grows past that.
const (
	checkpointEvery = time.Second
	checkpointBytes = 8 << 20
)

// FileStore is the local store: an open key file and its logs, for one
// gateway replica.
type FileStore struct {
	db     *bolt.DB
	path   string
	window time.Duration
	now    func() time.Time

	mu       sync.Mutex // guards the fields below; held across the lookup in Claim
	inFlight map[string]struct{}
	recent   map[string]*Entry // in the current log, not yet in bbolt
	moving   map[string]*Entry // being checkpointed into bbolt
	wal      *framelog.Log
	walSeq   uint64
	rotated  time.Time     // when the current log was started
	every    time.Duration // checkpointEvery; tests stretch it

	commits     chan *commit
	stopped     chan struct{}
	closeOnce   sync.Once
	checkpoints sync.WaitGroup
	failpoint   framelog.Failpoint // tests

	statsMu sync.Mutex
	stats   Stats
}

// Stats count a store's writes. The local store fills the fields up to
// TornBytes; a shared store (idem/postgres) fills Commits to CommitError,
// one transaction per answer, and those after TornBytes.
type Stats struct {
	Commits          int64         // log groups written (answers completing together share one)
	Answers          int64         // answers stored
	CommitTime       time.Duration // spent writing and syncing them
	CommitError      int64         // groups that failed
	Checkpoints      int64         // logs moved into bbolt
	CheckpointErrors int64         // checkpoints that failed (their logs are kept, and retried)
	// What the last start found in the logs a crash left: damaged frames
	// skipped (each costs its own answer) and a torn tail's bytes.
	DamagedFrames, DamagedBytes, TornBytes int64

	// Reclaimed counts claims that took over a key whose last claim's
	// lease had ended (its replica died, or lost the database for a whole
	// lease) or whose answer was past the window.
	Reclaimed int64
	// ClaimsLost counts this replica's claims found ended before it was
	// done with them: taken over by another replica after the lease
	// lapsed, or swept.
	ClaimsLost int64
	// Renewals and RenewErrors count the lease renewals (one statement
	// for all of the replica's claims) and those that failed.
	Renewals, RenewErrors int64
}

// Stats returns the counters so far.
func (s *FileStore) Stats() Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats
}

type commit struct {
	key  []byte
	e    *Entry
	done chan error
}

// Open opens (or creates) the store file at path; its logs are path.log-N.
func Open(path string, window time.Duration, now func() time.Time) (*FileStore, error) {
	return open(path, window, now, nil)
}

// open is Open with a failpoint for the logs (tests).
func open(path string, window time.Duration, now func() time.Time, fp framelog.Failpoint) (*FileStore, error) {
	db, err := bolt.Open(path, 0o640, &bolt.Options{Timeout: 5 * time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("idempotency store %s: %w", path, err)
	}
	s := &FileStore{
		db: db, path: path, window: window, now: now,
		inFlight: map[string]struct{}{}, recent: map[string]*Entry{}, every: checkpointEvery,
		commits: make(chan *commit, 256), stopped: make(chan struct{}), failpoint: fp,
	}
	if err := s.recover(); err != nil {
		db.Close()
		return nil, fmt.Errorf("idempotency store %s: %w", path, err)
	}
	go s.committer()
	return s, nil
}

// Log file names: path + logPrefix + 16 hex digits; legacyPrefix for the
// previous release's.
const (
	logPrefix    = ".log-"
	legacyPrefix = ".wal-"
	typeAnswer   = 1        // a log frame: the key's length (uvarint), the key, the entry as JSON
	maxFrame     = 64 << 20 // an entry holds at most the stored body, in JSON
)

// recover creates the buckets, applies the logs a crash left to bbolt,
// removes them and starts a new one.
func (s *FileStore) recover() error {
	entries := map[string]*Entry{}
	var all []string
	// The previous release's logs are older than any of this one's.
	for _, prefix := range []string{legacyPrefix, logPrefix} {
		logs, err := filepath.Glob(s.path + prefix + "*")
		if err != nil {
			return err
		}
		slices.Sort(logs) // the sequence number is fixed-width hex
		for _, p := range logs {
			read := s.readLog
			if prefix == legacyPrefix {
				read = readLegacyLog
			}
			if err := read(p, func(key []byte, e *Entry) { entries[string(key)] = e }); err != nil {
				return err
			}
			var seq uint64
			if _, err := fmt.Sscanf(p[len(s.path)+len(prefix):], "%016x", &seq); err == nil && seq > s.walSeq {
				s.walSeq = seq
			}
		}
		all = append(all, logs...)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketKeys, bucketTime} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return s.apply(tx, entries)
	}); err != nil {
		return err
	}
	for _, p := range all {
		if err := os.Remove(p); err != nil {
			return err
		}
	}
	return s.newLog()
}

// newLog starts the next log file; called with mu held, or before serving.
func (s *FileStore) newLog() error {
	s.walSeq++
	l, err := framelog.Create(fmt.Sprintf("%s%s%016x", s.path, logPrefix, s.walSeq), framelog.Options{
		Sync: framelog.SyncAlways, MaxPayload: maxFrame, Failpoint: s.failpoint,
	})
	if err != nil {
		return err
	}
	s.wal, s.rotated = l, time.Now()
	return nil
}

// readLog calls fn with each intact answer of the log at p, in order,
// skipping damage (framelog's rule), and counts what it skipped.
func (s *FileStore) readLog(p string, fn func(key []byte, e *Entry)) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	sc := framelog.NewScanner(f, st.Size(), maxFrame)
	for sc.Next() {
		if fr := sc.Frame(); fr.Type == typeAnswer {
			if key, e := decodeAnswer(fr.Payload); e != nil {
				fn(key, e)
			}
		}
	}
	rep := sc.Report()
	s.statsMu.Lock()
	s.stats.DamagedFrames += int64(rep.Damaged)
	s.stats.DamagedBytes += rep.DamagedBytes
	s.stats.TornBytes += rep.TornBytes
	s.statsMu.Unlock()
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// appendFrame appends a log frame of key and e to dst, and keeps e's JSON
// in e: the same bytes the checkpoint puts in bbolt.
func appendFrame(dst []byte, key []byte, e *Entry) ([]byte, error) {
	enc, err := json.Marshal(e)
	if err != nil {
		return dst, err
	}
	e.enc = enc
	payload := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(key)+len(enc)), uint64(len(key)))
	payload = append(append(payload, key...), enc...)
	return framelog.AppendFrame(dst, typeAnswer, payload), nil
}

// decodeAnswer decodes a log frame's payload; a nil entry means it is not
// one.
func decodeAnswer(p []byte) ([]byte, *Entry) {
	n, w := binary.Uvarint(p)
	if w <= 0 || n > uint64(len(p)-w) {
		return nil, nil
	}
	key, enc := p[w:w+int(n)], p[w+int(n):]
	var e Entry
	if json.Unmarshal(enc, &e) != nil {
		return nil, nil
	}
	e.enc = bytes.Clone(enc) // the scanner reuses its buffer
	return bytes.Clone(key), &e
}

// readLegacyLog calls fn with each answer of a log the previous release
// wrote (frames of the payload's length and CRC-32C, 4 bytes each, then
// frameV1, the key's length, the key and the entry as JSON), up to the
// first torn or damaged frame, as that release read them.
func readLegacyLog(p string, fn func(key []byte, e *Entry)) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = framelog.ScanLegacy(f, 0, maxFrame, func(_, payload []byte) error {
		if len(payload) > 0 && payload[0] == frameV1 {
			if key, e := decodeAnswer(payload[1:]); e != nil {
				fn(key, e)
			}
		}
		return nil
	})
	return err
}

// frameV1 began every payload of the previous release's logs.
const frameV1 = 1

// apply writes entries to bbolt, replacing each key's earlier entry.
//
// Keys go in in order: bbolt inserts into a page's sorted slice, so keys
// in map order shift about half of a page's entries per put, and that copy
// was most of a checkpoint's time.
func (s *FileStore) apply(tx *bolt.Tx, entries map[string]*Entry) error {
	keys, byTime := tx.Bucket(bucketKeys), tx.Bucket(bucketTime)
	sorted := slices.Sorted(maps.Keys(entries))
	times := make([][]byte, 0, len(sorted))
	for _, k := range sorted {
		key, e := []byte(k), entries[k]
		if v := keys.Get(key); v != nil {
			var old Entry
			if json.Unmarshal(v, &old) == nil {
				if err := byTime.Delete(timeKey(old.Created, key)); err != nil {
					return err
				}
			}
		}
		v := e.enc
		if v == nil {
			var err error
			if v, err = json.Marshal(e); err != nil {
				return err
			}
		}
		if err := keys.Put(key, v); err != nil {
			return err
		}
		times = append(times, timeKey(e.Created, key))
	}
	slices.SortFunc(times, bytes.Compare)
	for _, t := range times {
		if err := byTime.Put(t, nil); err != nil {
			return err
		}
	}
	return nil
}

// ErrClosed is returned by FileStore.Complete after Close.
var ErrClosed = errors.New("idempotency store closed")

// Close waits for answers being written, moves the log into bbolt and
// closes the store. Calls after the first do nothing.
func (s *FileStore) Close() (err error) {
	s.closeOnce.Do(func() { err = s.close() })
	return err
}

func (s *FileStore) close() error {
	close(s.commits)
	<-s.stopped
	s.checkpoints.Wait()
	s.mu.Lock()
	// Moved at once; a log is left only when it held nothing to move.
	err := s.rotateLocked(false)
	if s.wal != nil {
		s.wal.Close()
		if s.wal.Size() == 0 {
			os.Remove(s.wal.Path())
		}
	}
	s.mu.Unlock()
	return errors.Join(err, s.db.Close())
}

// Scope joins a vehicle identity and a key.
func Scope(identity, key string) []byte { return []byte(identity + "\x00" + key) }

// Claim claims key for a new request (Store.Claim). ctx is not used: the
// store does no I/O that waits on others.
func (s *FileStore) Claim(_ context.Context, key []byte) (*Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.inFlight[string(key)]; ok {
		return &Entry{State: InFlight}, nil
	}
	// Under mu: an answer is in recent before its claim is dropped, and
	// in bbolt before it leaves moving, so a key is always found.
	found := s.recent[string(key)]
	if found == nil {
		found = s.moving[string(key)]
	}
	if found == nil {
		err := s.db.View(func(tx *bolt.Tx) error {
			v := tx.Bucket(bucketKeys).Get(key)
			if v == nil {
				return nil
			}
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return nil // unreadable: claimed afresh, overwritten by Complete
			}
			// An in-flight entry was written by an earlier version of the
			// store, which kept claims on disk: abandoned.
			if e.State == Done {
				found = &e
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if found != nil && s.now().Sub(time.Unix(0, found.Created)) > s.window {
		found = nil
	}
	if found == nil {
		s.inFlight[string(key)] = struct{}{}
	}
	return found, nil
}

// Complete stores the service's answer to the request that claimed key,
// durably, and ends the claim (Store.Complete).
func (s *FileStore) Complete(_ context.Context, key []byte, e *Entry) (err error) {
	e.State, e.Created = Done, s.now().UnixNano()
	c := &commit{key: key, e: e, done: make(chan error, 1)}
	defer func() {
		if recover() != nil { // send on the channel Close closed
			err = ErrClosed
		}
		s.mu.Lock()
		delete(s.inFlight, string(key))
		s.mu.Unlock()
	}()
	s.commits <- c
	return <-c.done
}

// Release gives up a claim (Store.Release); it cannot fail.
func (s *FileStore) Release(_ context.Context, key []byte) error {
	s.mu.Lock()
	delete(s.inFlight, string(key))
	s.mu.Unlock()
	return nil
}

// committer writes queued answers to the log, as many per write and
// fdatasync as were queued while the last group was being written, and
// starts checkpoints.
func (s *FileStore) committer() {
	defer close(s.stopped)
	batch := make([]*commit, 0, 256)
	var buf []byte
	tick := time.NewTicker(checkpointEvery)
	defer tick.Stop()
	for {
		var c *commit
		var ok bool
		select {
		case c, ok = <-s.commits:
			if !ok {
				return
			}
		case <-tick.C:
			s.mu.Lock()
			s.checkpointIfDueLocked()
			s.mu.Unlock()
			continue
		}
		batch = append(batch[:0], c)
	more:
		for len(batch) < cap(batch) {
			select {
			case c, ok := <-s.commits:
				if !ok {
					break more
				}
				batch = append(batch, c)
			default:
				break more
			}
		}
		start := time.Now()
		buf = buf[:0]
		var err error
		for _, c := range batch {
			if buf, err = appendFrame(buf, c.key, c.e); err != nil {
				break
			}
		}
		s.mu.Lock()
		wal := s.wal
		s.mu.Unlock()
		if err == nil {
			// One write and one fdatasync for the group. A failed write is
			// cut back by framelog; a group whose fsync failed is not
			// acknowledged, though its frames may yet be applied at a start:
			// they hold the service's real answers.
			var pos uint64
			if _, pos, err = wal.Append(buf); err == nil {
				err = wal.Commit(pos)
			}
			if err != nil {
				err = fmt.Errorf("idempotency store: %w", err)
			}
		}
		s.mu.Lock()
		if err == nil {
			for _, c := range batch {
				s.recent[string(c.key)] = c.e
			}
			s.checkpointIfDueLocked()
		}
		s.mu.Unlock()
		s.statsMu.Lock()
		s.stats.Commits++
		s.stats.Answers += int64(len(batch))
		s.stats.CommitTime += time.Since(start)
		if err != nil {
			s.stats.CommitError++
		}
		s.statsMu.Unlock()
		for _, c := range batch {
			c.done <- err
		}
	}
}

// checkpointIfDueLocked starts a checkpoint in the background once the
// log is old or large enough. Called with mu held.
func (s *FileStore) checkpointIfDueLocked() {
	if s.wal.Size() >= checkpointBytes || time.Since(s.rotated) >= s.every {
		s.rotateLocked(true)
	}
}

// rotateLocked starts a new log and moves the answers of the current one
// into bbolt: in the background when async (the committer's rotations,
// with answers still coming), else at once and with no new log (Close's).
// A checkpoint still running defers it. Called with mu held.
func (s *FileStore) rotateLocked(async bool) error {
	if s.moving != nil || len(s.recent) == 0 {
		return nil
	}
	old := s.wal
	if async { // the committer's: answers go on coming
		if err := s.newLog(); err != nil {
			return fmt.Errorf("idempotency store: new log: %w", err)
		}
	} else {
		s.wal = nil
	}
	s.moving, s.recent = s.recent, map[string]*Entry{}
	moving := s.moving
	s.checkpoints.Add(1)
	run := func() error {
		defer s.checkpoints.Done()
		err := s.db.Update(func(tx *bolt.Tx) error { return s.apply(tx, moving) })
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			// Kept in memory and in its log (applied at the next start);
			// the next rotation tries again with newer answers too.
			old.Close()
			for k, e := range moving {
				if _, ok := s.recent[k]; !ok {
					s.recent[k] = e
				}
			}
			s.moving = nil
			s.statsMu.Lock()
			s.stats.CheckpointErrors++
			s.statsMu.Unlock()
			return fmt.Errorf("idempotency store: checkpoint: %w", err)
		}
		old.Close()
		os.Remove(old.Path())
		s.moving = nil
		s.statsMu.Lock()
		s.stats.Checkpoints++
		s.statsMu.Unlock()
		return nil
	}
	if async {
		go run()
		return nil
	}
	s.mu.Unlock()
	err := run()
	s.mu.Lock()
	return err
}

// Sweep removes entries older than the window and returns how many
// (Store.Sweep). Answers not yet checkpointed into bbolt are swept by a
// later call.
func (s *FileStore) Sweep(context.Context) (int, error) {
	cutoff := s.now().Add(-s.window).UnixNano()
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		keys, byTime := tx.Bucket(bucketKeys), tx.Bucket(bucketTime)
		c := byTime.Cursor()
		for k, _ := c.First(); k != nil && int64(binary.BigEndian.Uint64(k[:8])) < cutoff; k, _ = c.First() {
			if err := keys.Delete(bytes.Clone(k[8:])); err != nil {
				return err
			}
			if err := c.Delete(); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// Len returns how many keys the store holds (a key answered again since
// the last checkpoint counts twice).
func (s *FileStore) Len() int {
	s.mu.Lock()
	n := len(s.recent) + len(s.moving)
	s.mu.Unlock()
	s.db.View(func(tx *bolt.Tx) error {
		n += tx.Bucket(bucketKeys).Stats().KeyN
		return nil
	})
	return n
}

func timeKey(created int64, key []byte) []byte {
	b := make([]byte, 8, 8+len(key))
	binary.BigEndian.PutUint64(b, uint64(created))
	return append(b, key...)
}
