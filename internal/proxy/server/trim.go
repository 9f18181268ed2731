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
	var peakReqs int
	var peakBytes int64
	var emptySince time.Time
	t := time.NewTicker(trimCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n, b := s.budget.Held()
		peakReqs, peakBytes = max(peakReqs, n), max(peakBytes, b)
		switch {
		case n > 0 || s.active.Load() > trimMaxActive:
			emptySince = time.Time{}
		case emptySince.IsZero():
			emptySince = time.Now()
		case (peakReqs >= trimMinBurst || peakBytes >= trimMinBytes) && time.Since(emptySince) >= trimQuietTime:
			start := time.Now()
			// Two collections: sync.Pool contents (net/http's per-connection
			// bufio buffers, copy buffers) survive one in the victim cache.
			runtime.GC()
			debug.FreeOSMemory()
			s.log.Info("returned memory after a burst of held requests", "peakHeld", peakReqs, "peakHeldBytes", peakBytes, "took", time.Since(start))
			peakReqs, peakBytes = 0, 0
		}
	}
}
