package idem

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"
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
				if e, err := s.Claim(key); e != nil || err != nil {
					b.Error(e, err)
					return
				}
				if err := s.Complete(key, &Entry{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: body, Fingerprint: k[:]}); err != nil {
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
