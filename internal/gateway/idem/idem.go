// Package idem is the cloud gateway's memory of Idempotency-Key values: for
// each key (scoped by the vehicle that sent it), whether a request is in
// flight or what the service answered, kept for a window longer than any
// expected outage (30 days by default).
//
// Answers live in a bbolt file. Claims (a request is being answered) live
// in memory only: a claim matters only while its run of the gateway lives,
// and a gateway that crashes while the service answers must let the key be
// tried again anyway (the service may then see that one request twice;
// nothing short of the service's own cooperation can avoid that). So a
// claim costs no disk write, and each answer costs one bbolt write, made
// durable before Complete returns. Answers completing together share one
// transaction and its fsyncs (group commit): a committer goroutine takes
// every answer queued while the previous transaction was being written, as
// the spool does with its frames. bbolt's own Batch waits on a timer
// (MaxBatchDelay) for a batch to fill, which at a gateway's handful of
// concurrent deliveries per vehicle is pure latency.
package idem

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
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
	Truncated bool  `json:"truncated,omitempty"`
	Created   int64 `json:"created"` // Unix nanoseconds
}

// Store is an open key store.
type Store struct {
	db     *bolt.DB
	window time.Duration
	now    func() time.Time

	mu       sync.Mutex // guards inFlight; held across the lookup in Claim
	inFlight map[string]struct{}

	commits chan *commit
	stopped chan struct{}
}

type commit struct {
	key  []byte
	e    *Entry
	done chan error
}

// Open opens (or creates) the store file at path.
func Open(path string, window time.Duration, now func() time.Time) (*Store, error) {
	db, err := bolt.Open(path, 0o640, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true})
	if err != nil {
		return nil, fmt.Errorf("idempotency store %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketKeys, bucketTime} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("idempotency store %s: %w", path, err)
	}
	s := &Store{
		db: db, window: window, now: now, inFlight: map[string]struct{}{},
		commits: make(chan *commit, 256), stopped: make(chan struct{}),
	}
	go s.committer()
	return s, nil
}

// ErrClosed is returned by Complete after Close.
var ErrClosed = errors.New("idempotency store closed")

// Close waits for answers being committed, then closes the store.
func (s *Store) Close() error {
	close(s.commits)
	<-s.stopped
	return s.db.Close()
}

// Scope joins a vehicle identity and a key.
func Scope(identity, key string) []byte { return []byte(identity + "\x00" + key) }

// Claim claims key for a new request. It returns nil when the caller now
// owns the key and must Complete or Release it. Otherwise it returns what
// the store holds: a Done entry (answer the repeat from it) or an InFlight
// one (the first request is still being answered).
func (s *Store) Claim(key []byte) (*Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.inFlight[string(key)]; ok {
		return &Entry{State: InFlight}, nil
	}
	// Under mu: Complete commits before it drops the claim, so a key
	// either is still claimed here or has its answer readable.
	var found *Entry
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
		if e.State == Done && s.now().Sub(time.Unix(0, e.Created)) <= s.window {
			found = &e
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if found == nil {
		s.inFlight[string(key)] = struct{}{}
	}
	return found, nil
}

// Complete stores the service's answer to the request that claimed key,
// durably, and ends the claim.
func (s *Store) Complete(key []byte, e *Entry) (err error) {
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

// Release gives up a claim: the service gave no final answer (it failed,
// or could not be reached), so a retry must reach it again.
func (s *Store) Release(key []byte) {
	s.mu.Lock()
	delete(s.inFlight, string(key))
	s.mu.Unlock()
}

// committer writes queued answers, as many per transaction as were queued
// while the last one was written.
func (s *Store) committer() {
	defer close(s.stopped)
	batch := make([]*commit, 0, 256)
	for c := range s.commits {
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
		err := s.db.Update(func(tx *bolt.Tx) error {
			keys, byTime := tx.Bucket(bucketKeys), tx.Bucket(bucketTime)
			for _, c := range batch {
				if v := keys.Get(c.key); v != nil {
					var old Entry
					if json.Unmarshal(v, &old) == nil {
						byTime.Delete(timeKey(old.Created, c.key))
					}
				}
				if err := s.put(tx, c.key, c.e); err != nil {
					return err
				}
			}
			return nil
		})
		for _, c := range batch {
			c.done <- err
		}
	}
}

func (s *Store) put(tx *bolt.Tx, key []byte, e *Entry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketKeys).Put(key, v); err != nil {
		return err
	}
	return tx.Bucket(bucketTime).Put(timeKey(e.Created, key), nil)
}

// Sweep removes entries older than the window and returns how many.
func (s *Store) Sweep() (int, error) {
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

// Len returns how many keys the store holds.
func (s *Store) Len() int {
	n := 0
	s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketKeys).Stats().KeyN
		return nil
	})
	return n
}

func timeKey(created int64, key []byte) []byte {
	b := make([]byte, 8, 8+len(key))
	binary.BigEndian.PutUint64(b, uint64(created))
	return append(b, key...)
}
