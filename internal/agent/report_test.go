package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/backoff"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/waitfor"
)

// reportHub records the reports it takes and refuses them while down.
type reportHub struct {
	Hub
	mu   sync.Mutex
	down bool
	got  []int64
}

func (h *reportHub) Report(_ context.Context, _ string, r hubv1.Reported) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down {
		return errors.New("connection refused")
	}
	h.got = append(h.got, r.AppliedRevision)
	return nil
}

// Reports made while the hub is down are coalesced: when it returns, it
// gets the newest of each half, once.
func TestReporterLatestWins(t *testing.T) {
	h := &reportHub{down: true}
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	pol := backoff.Policy{Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond}
	p := NewReporter(h, clk, pol, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	for rev := int64(1); rev <= 5; rev++ {
		p.Set("car-1", hubv1.Reported{Half: hubv1.HalfVehicle, AppliedRevision: rev})
	}
	// A refused attempt: the reporter waits out its backoff.
	waitfor.True(t, "the reporter to back off", func() bool { return clk.Timers() == 1 })
	h.mu.Lock()
	h.down = false
	h.mu.Unlock()
	clk.Advance(pol.Max)
	waitfor.True(t, "the reports sent once the hub returned", func() bool { return p.Pending() == 0 })
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.got) != 1 || h.got[0] != 5 {
		t.Errorf("the hub got revisions %v, want [5]", h.got)
	}
}
