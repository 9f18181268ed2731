package agent

import (
	"context"
	"log/slog"
	"sync"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/backoff"
	"github.com/misaki-io/misaki/internal/clock"
)

// Reporter sends halves' reports to the hub. Reports are state, not
// events: a newer report of a half replaces an unsent one (latest wins),
// so a vehicle offline for a week sends one report per half when the
// link returns, not a week of them. Sending retries with backoff until it
// succeeds or a newer report replaces it. A report the hub refuses with a
// 4xx is dropped and logged (sending it again would not change the
// answer).
type Reporter struct {
	hub Hub
	clk clock.Clock
	pol backoff.Policy
	log *slog.Logger

	mu      sync.Mutex // guards pending
	pending map[key]hubv1.Reported
	wake    chan struct{}
}

type key struct{ vehicle, half string }

// NewReporter returns a Reporter; call Run.
func NewReporter(hub Hub, clk clock.Clock, pol backoff.Policy, log *slog.Logger) *Reporter {
	return &Reporter{hub: hub, clk: clk, pol: pol, log: log, pending: map[key]hubv1.Reported{}, wake: make(chan struct{}, 1)}
}

// Set queues r as vehicle's newest report of r.Half.
func (p *Reporter) Set(vehicle string, r hubv1.Reported) {
	p.mu.Lock()
	p.pending[key{vehicle, r.Half}] = r
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Pending counts unsent reports.
func (p *Reporter) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending)
}

// Run sends queued reports until ctx ends.
func (p *Reporter) Run(ctx context.Context) {
	b := backoff.New(p.pol, p.clk)
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		}
		for ctx.Err() == nil {
			k, r, ok := p.next()
			if !ok {
				break
			}
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := p.hub.Report(cctx, k.vehicle, r)
			cancel()
			if err == nil || isClientError(err) {
				if err != nil {
					p.log.Warn("the hub refused a report; dropped", "vehicle", k.vehicle, "half", r.Half, "err", err)
				}
				p.done(k, r)
				b.Reset()
				continue
			}
			delay := b.Next()
			p.log.Info("report not sent; will retry", "vehicle", k.vehicle, "half", r.Half, "err", err, "retry", delay.Round(time.Millisecond))
			if backoff.Sleep(ctx, p.clk, delay) != nil {
				return
			}
		}
	}
}

// next picks a pending report (any order: reports of different halves are
// independent).
func (p *Reporter) next() (key, hubv1.Reported, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, r := range p.pending {
		return k, r, true
	}
	return key{}, hubv1.Reported{}, false
}

// done removes r unless a newer report replaced it while it was sent.
func (p *Reporter) done(k key, r hubv1.Reported) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.pending[k]; ok && sameReport(cur, r) {
		delete(p.pending, k)
	}
}

// sameReport compares the fields Set callers change; a report is a value
// built fresh each time, so pointer identity of its slices tells a
// replacement apart.
func sameReport(a, b hubv1.Reported) bool {
	if a.AppliedRevision != b.AppliedRevision || a.Phase != b.Phase || a.Message != b.Message || len(a.Objects) != len(b.Objects) || a.Failure != b.Failure || a.Refused != b.Refused || a.Facts != b.Facts {
		return false
	}
	for i := range a.Objects {
		if a.Objects[i] != b.Objects[i] {
			return false
		}
	}
	return true
}
