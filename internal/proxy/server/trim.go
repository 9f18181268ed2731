package server

import (
	"context"
	"runtime"
	"runtime/debug"
	"time"
)

// A burst of held requests (thousands of apps' calls through a tunnel) grows
// the heap, and Go's pacer then lets it grow to twice that before collecting
// again, so an idle sidecar would keep a burst's memory for minutes. Once a
// large burst has fully drained, the proxy collects and returns the memory
// to the operating system, once.
const (
	trimCheck     = time.Second
	trimMinBurst  = 1000     // held requests at the burst's peak
	trimMinBytes  = 16 << 20 // or held bytes at the peak
	trimQuietTime = 2 * time.Second
	// trimMaxActive is the most requests in progress that still count as
	// quiet: released held requests are forwarded after the hold count
	// reaches zero, and trimming during that drain would be wasted.
	trimMaxActive = 64
)

// trimAfterBursts runs until ctx ends.
func (s *Server) trimAfterBursts(ctx context.Context) error {
	var tr trimmer
	t := time.NewTicker(trimCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n, b := s.holdBudget.Held()
		if peakReqs, peakBytes, ok := tr.observe(s.clock.Now(), n, b, s.active.Load()); ok {
			start := time.Now()
			// Two collections: sync.Pool contents (net/http's per-connection
			// bufio buffers, copy buffers) survive one in the victim cache.
			runtime.GC()
			debug.FreeOSMemory()
			s.log.Info("returned memory after a burst of held requests", "peakHeld", peakReqs, "peakHeldBytes", peakBytes, "took", time.Since(start))
		}
	}
}

// trimmer decides when a burst has drained: it sees the held count and bytes
// and the requests in progress once per check.
type trimmer struct {
	peakReqs   int
	peakBytes  int64
	emptySince time.Time // zero: not quiet
}

// observe records one check and reports whether to return memory now, with
// the burst's peak. It says so once per burst.
func (t *trimmer) observe(now time.Time, held int, heldBytes, active int64) (peakReqs int, peakBytes int64, trim bool) {
	t.peakReqs, t.peakBytes = max(t.peakReqs, held), max(t.peakBytes, heldBytes)
	switch {
	case held > 0 || active > trimMaxActive:
		t.emptySince = time.Time{}
	case t.emptySince.IsZero():
		t.emptySince = now
	case (t.peakReqs >= trimMinBurst || t.peakBytes >= trimMinBytes) && now.Sub(t.emptySince) >= trimQuietTime:
		peakReqs, peakBytes = t.peakReqs, t.peakBytes
		t.peakReqs, t.peakBytes = 0, 0
		return peakReqs, peakBytes, true
	}
	return 0, 0, false
}
