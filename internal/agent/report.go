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

	mu      sync.Mutex // guards pending and gen
	pending map[key]queued
	gen     uint64
	wake    chan struct{}
}

type key struct{ vehicle, half string }

// queued is a pending report and the Set call that queued it.
type queued struct {
	r   hubv1.Reported
	gen uint64
}

// NewReporter returns a Reporter; call Run.
func NewReporter(hub Hub, clk clock.Clock, pol backoff.Policy, log *slog.Logger) *Reporter {
	return &Reporter{hub: hub, clk: clk, pol: pol, log: log, pending: map[key]queued{}, wake: make(chan struct{}, 1)}
}

// Set queues r as vehicle's newest report of r.Half.
func (p *Reporter) Set(vehicle string, r hubv1.Reported) {
	p.mu.Lock()
	p.gen++
	p.pending[key{vehicle, r.Half}] = queued{r, p.gen}
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
			k, q, ok := p.next()
			if !ok {
				break
			}
			r := q.r
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := p.hub.Report(cctx, k.vehicle, r)
			cancel()
			if err == nil || isClientError(err) {
				if err != nil {
					p.log.Warn("the hub refused a report; dropped", "vehicle", k.vehicle, "half", r.Half, "err", err)
				}
				p.done(k, q.gen)
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
func (p *Reporter) next() (key, queued, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, q := range p.pending {
		return k, q, true
	}
	return key{}, queued{}, false
}

// done removes the report queued by Set call gen, unless a newer one
// replaced it while it was sent.
func (p *Reporter) done(k key, gen uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if q, ok := p.pending[k]; ok && q.gen == gen {
		delete(p.pending, k)
	}
}
