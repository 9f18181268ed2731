package localdns

import (
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fill puts n answers like the benchmark upstream's (one A record) into s's
// cache.
func fill(s *Server, n int) {
	for i := range n {
		m := new(dns.Msg)
		name := fmt.Sprintf("n%d.bench.test.", i)
		m.SetQuestion(name, dns.TypeA)
		m.Response, m.Compress = true, true
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 3600}, A: net.IPv4(10, 1, 2, 3)}}
		b, err := m.Pack()
		if err != nil {
			panic(err)
		}
		s.cache.put(cacheKey(m.Question[0], false), b, s.cfg.Clock.Now(), 3600)
	}
}

// BenchmarkCacheMemory reports what 100,000 cached answers take: on the
// Go heap (the index), in the slab's slots and chunks (off the heap), and
// as the byte bound counts them:
//
//	go test -run '^$' -bench CacheMemory -benchtime 1x ./internal/proxy/localdns/
func BenchmarkCacheMemory(b *testing.B) {
	const n = 100_000
	for range b.N {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapAlloc
		s := New(Config{})
		fill(s, n)
		runtime.GC()
		runtime.ReadMemStats(&ms)
		_, accounted := s.cache.stats()
		inUse, mapped := s.cache.slab.usage()
		b.ReportMetric(float64(ms.HeapAlloc-before)/n, "heap-B/entry")
		b.ReportMetric(float64(inUse)/n, "slab-B/entry")
		b.ReportMetric(float64(mapped)/n, "mapped-B/entry")
		b.ReportMetric(float64(accounted)/n, "accounted-B/entry")
		runtime.KeepAlive(s)
	}
}

// BenchmarkLoad reads a 100,000-answer cache file:
//
//	go test -run '^$' -bench Load -benchtime 5x ./internal/proxy/localdns/
func BenchmarkLoad(b *testing.B) {
	const n = 100_000
	s := New(Config{})
	fill(s, n)
	file := filepath.Join(b.TempDir(), "dns-cache")
	if _, err := s.Save(file); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		t := New(Config{})
		start := time.Now()
		got, err := t.Load(file)
		if err != nil || got != n {
			b.Fatalf("loaded %d of %d: %v", got, n, err)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/load")
	}
}
