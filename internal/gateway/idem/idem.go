// Package idem is the cloud gateway's memory of Idempotency-Key values: for
// each key (scoped by the vehicle that sent it), whether a request is in
// flight or what the service answered, kept for a window longer than any
// expected outage (30 days by default).
//
// It is a bbolt file: one write transaction per claim and per answer, each
// fsynced before the gateway acts on it, so a gateway crash neither
// forgets an answer nor lets a claim block a key forever. A claim made by an
// earlier run of the gateway (it crashed while the service was answering) is
// abandoned, and the key may be tried again. The service may then see that
// one request twice; nothing short of the service's own cooperation can
// avoid that.
package idem

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
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
	Truncated bool   `json:"truncated,omitempty"`
	Created   int64  `json:"created"` // Unix nanoseconds
	Boot      string `json:"boot"`    // the gateway run that claimed it
}

// Store is an open key store.
type Store struct {
	db     *bolt.DB
	window time.Duration
	now    func() time.Time
	boot   string
}

// Open opens (or creates) the store file at path.
func Open(path string, window time.Duration, now func() time.Time) (*Store, error) {
	db, err := bolt.Open(path, 0o640, &bolt.Options{Timeout: 5 * time.Second})
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
	var b [8]byte
	rand.Read(b[:])
	return &Store{db: db, window: window, now: now, boot: hex.EncodeToString(b[:])}, nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

// Scope joins a vehicle identity and a key.
func Scope(identity, key string) []byte { return []byte(identity + "\x00" + key) }

// Claim claims key for a new request. It returns nil when the caller now
// owns the key and must Complete or Release it. Otherwise it returns what
// the store holds: a Done entry (answer the repeat from it) or an InFlight
// one (the first request is still being answered).
func (s *Store) Claim(key []byte) (*Entry, error) {
	var found *Entry
	err := s.db.Update(func(tx *bolt.Tx) error {
		keys := tx.Bucket(bucketKeys)
		if v := keys.Get(key); v != nil {
			var e Entry
			if err := json.Unmarshal(v, &e); err == nil {
				expired := s.now().Sub(time.Unix(0, e.Created)) > s.window
				abandoned := e.State == InFlight && e.Boot != s.boot
				if !expired && !abandoned {
					found = &e
					return nil
				}
				tx.Bucket(bucketTime).Delete(timeKey(e.Created, key))
			}
		}
		return s.put(tx, key, &Entry{State: InFlight, Created: s.now().UnixNano(), Boot: s.boot})
	})
	return found, err
}

// Complete stores the service's answer to the request that claimed key.
func (s *Store) Complete(key []byte, e *Entry) error {
	e.State, e.Boot = Done, s.boot
	return s.db.Update(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketKeys).Get(key); v != nil {
			var old Entry
			if json.Unmarshal(v, &old) == nil {
				e.Created = old.Created
			}
		}
		if e.Created == 0 {
			e.Created = s.now().UnixNano()
		}
		return s.put(tx, key, e)
	})
}

// Release gives up a claim: the service gave no final answer (it failed,
// or could not be reached), so a retry must reach it again.
func (s *Store) Release(key []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		keys := tx.Bucket(bucketKeys)
		if v := keys.Get(key); v != nil {
			var e Entry
			if json.Unmarshal(v, &e) == nil {
				tx.Bucket(bucketTime).Delete(timeKey(e.Created, key))
			}
		}
		return keys.Delete(key)
	})
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
