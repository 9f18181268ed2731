package idem

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/misaki-io/misaki/internal/uuidv7"
)

// BenchmarkComplete stores answers from 16 concurrent requests (the edge's
// default replay concurrency), each keyed like a UUID.
func BenchmarkComplete(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "keys.db"), time.Hour, time.Now)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	body := []byte(`{"stored":true}`)
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/16 + 1
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var k [16]byte
			for range per {
				rand.Read(k[:])
				key := Scope("spiffe://misaki/vehicle/bench-car", hex.EncodeToString(k[:]))
				if e, err := s.Claim(b.Context(), key); e != nil || err != nil {
					b.Error(e, err)
					return
				}
				if err := s.Complete(b.Context(), key, &Entry{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: body, Fingerprint: k[:]}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st := s.Stats()
	b.ReportMetric(float64(st.Answers)/float64(st.Commits), "answers/txn")
	b.ReportMetric(float64(st.CommitTime.Microseconds())/float64(st.Commits), "µs/txn")
	b.ReportMetric(float64(st.Answers)/b.Elapsed().Seconds(), "answers/s")
}

// BenchmarkCheckpoint moves answers into bbolt as a checkpoint does, 8,000
// at a time (about a second of a drain's answers), into a store that
// already holds 200,000 keys, scoped by 100 vehicles' identities: keys
// random (UUID version 4, as an app may send) or time-ordered (version 7,
// as the edge proxy assigns).
func BenchmarkCheckpoint(b *testing.B) {
	for _, kind := range []string{"v4", "v7"} {
		b.Run(kind, func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "keys.db"), time.Hour, time.Now)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			body := []byte(`{"stored":true}`)
			vehicle := 0
			group := func(n int) map[string]*Entry {
				m := make(map[string]*Entry, n)
				for range n {
					var r [16]byte
					rand.Read(r[:])
					id := hex.EncodeToString(r[:4]) + "-" + hex.EncodeToString(r[4:6]) + "-4" + hex.EncodeToString(r[6:8])[1:] + "-" + hex.EncodeToString(r[8:10]) + "-" + hex.EncodeToString(r[10:])
					if kind == "v7" {
						id = uuidv7.New()
					}
					e := &Entry{State: Done, Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: body, Fingerprint: r[:], Created: time.Now().UnixNano()}
					key := Scope(fmt.Sprintf("spiffe://misaki/vehicle/car-%03d", vehicle%100), id)
					vehicle++
					if _, err := appendFrame(nil, key, e); err != nil { // as the log leaves it
						b.Fatal(err)
					}
					m[string(key)] = e
				}
				return m
			}
			for range 25 {
				if err := s.db.Update(func(tx *bolt.Tx) error { return s.apply(tx, group(8000)) }); err != nil {
					b.Fatal(err)
				}
			}
			var spent time.Duration
			for b.Loop() {
				g := group(8000)
				start := time.Now()
				if err := s.db.Update(func(tx *bolt.Tx) error { return s.apply(tx, g) }); err != nil {
					b.Fatal(err)
				}
				spent += time.Since(start)
			}
			b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N*8000), "ns/answer")
		})
	}
}
