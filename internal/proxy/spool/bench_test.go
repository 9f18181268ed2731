package spool

import (
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/misaki-io/misaki/internal/durable"
	"github.com/misaki-io/misaki/internal/framelog"
)

// BenchmarkEnqueue measures durable enqueues of 1 KiB bodies from 64
// concurrent callers, beside this disk's raw limits measured in the same
// run: one writer doing write+fdatasync per record, and 64 writers sharing
// fdatasyncs (the best any group commit can do). The spool's directory is
// the test's temporary directory: run it on the disk you care about
// (TMPDIR=...).
//
//	go test -run '^$' -bench Enqueue -benchtime 5s ./internal/proxy/spool/
func BenchmarkEnqueue(b *testing.B) {
	const writers = 64
	body := make([]byte, 1024)
	record := framelog.AppendFrame(nil, typeRequest, appendRecord(nil, &Record{
		Seq: 1 << 40, Route: "telemetry", Method: "POST", URL: "/v1/telemetry",
		IdempotencyKey: "0123456789abcdef0123456789abcdef",
		Header:         http.Header{"Content-Type": {"application/json"}},
		Body:           body,
	}))
	parallel := func(b *testing.B, op func() error) {
		b.SetParallelism(max(1, writers/runtime.GOMAXPROCS(0)))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	}

	b.Run("raw-fsync-each", func(b *testing.B) {
		f := rawFile(b)
		var off int64
		b.ResetTimer()
		for b.Loop() {
			if _, err := f.WriteAt(record, off); err != nil {
				b.Fatal(err)
			}
			off += int64(len(record))
			if err := durable.Fdatasync(f); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	})
	b.Run("raw-group-commit-64", func(b *testing.B) {
		g := &rawGroup{f: rawFile(b)}
		g.cond = sync.NewCond(&g.mu)
		parallel(b, func() error { return g.append(record) })
		b.ReportMetric(float64(b.N)/float64(max(g.syncs, 1)), "req/fsync")
	})
	for _, policy := range []SyncPolicy{SyncAlways, SyncInterval} {
		b.Run("spool-"+string(policy)+"-64", func(b *testing.B) {
			s, err := Open(Options{Dir: b.TempDir(), Sync: policy})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			parallel(b, func() error {
				r := &Record{
					Route: "telemetry", Method: "POST", URL: "/v1/telemetry",
					IdempotencyKey: "0123456789abcdef0123456789abcdef",
					Header:         http.Header{"Content-Type": {"application/json"}},
					Body:           body,
				}
				_, err := s.Enqueue(r, nil, Limits{})
				return err
			})
			st := s.Stats()
			b.ReportMetric(float64(st.Enqueued)/float64(max(st.Fsyncs, 1)), "req/fsync")
		})
	}
}

func rawFile(b *testing.B) *os.File {
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "raw.log"), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// rawGroup is the least a group commit can do: append under a lock, and
// one fdatasync at a time for everything appended so far.
type rawGroup struct {
	f       *os.File
	mu      sync.Mutex
	cond    *sync.Cond
	off     int64
	synced  int64
	syncing bool
	syncs   int
}

func (g *rawGroup) append(rec []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, err := g.f.WriteAt(rec, g.off); err != nil {
		return err
	}
	g.off += int64(len(rec))
	end := g.off
	for g.synced < end {
		if g.syncing {
			g.cond.Wait()
			continue
		}
		g.syncing = true
		target := g.off
		g.mu.Unlock()
		err := durable.Fdatasync(g.f)
		g.mu.Lock()
		g.syncing = false
		g.syncs++
		if err != nil {
			g.cond.Broadcast()
			return err
		}
		g.synced = max(g.synced, target)
		g.cond.Broadcast()
	}
	return nil
}
