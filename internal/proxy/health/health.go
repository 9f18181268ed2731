// Package health tells whether an upstream is reachable, from active probes
// (a TCP connect or an HTTP GET on an interval, with jittered exponential
// backoff while it fails) and from passive failures (a real request that could
// not connect marks the upstream unreachable at once and wakes the prober).
package health

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	proxyv1 "github.com/misaki-io/misaki/api/proxy/v1"
	"github.com/misaki-io/misaki/internal/backoff"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/proxy/config"
)

// Status is an upstream's reachability: the admin API's wire type itself
// (GET /v1/routes shows it as upstreamHealth).
type Status = proxyv1.Health

// Prober performs one active check.
type Prober interface {
	Probe(ctx context.Context) error
}

// ProberFunc adapts a function to Prober.
type ProberFunc func(ctx context.Context) error

// Probe calls f.
func (f ProberFunc) Probe(ctx context.Context) error { return f(ctx) }

// Upstream is the reachability of one upstream address.
type Upstream struct {
	name     string
	cfg      config.Probe
	prober   Prober
	clock    clock.Clock
	log      *slog.Logger
	onChange func()
	kick     chan struct{}

	up atomic.Bool // status.Reachable, read without the lock on the request path
	// unanswered is set while the upstream is down because it accepted a
	// connection and then closed it or stayed silent: connecting to it
	// again proves nothing, only an answer does.
	unanswered atomic.Bool

	mu     sync.Mutex // guards status
	status Status
}

// New returns an upstream starting as reachable (optimistic: the first real
// request or probe corrects it). prober may be nil for probe type none.
// onChange is called without locks held whenever reachability flips.
func New(name string, cfg config.Probe, prober Prober, clk clock.Clock, log *slog.Logger, onChange func()) *Upstream {
	u := &Upstream{
		name: name, cfg: cfg, prober: prober, clock: clk, onChange: onChange,
		log:    log.With("component", "health", "upstream", name),
		kick:   make(chan struct{}, 1),
		status: Status{Reachable: true, Since: clk.Now(), Source: "start"},
	}
	u.up.Store(true)
	return u
}

// NewProber builds the prober a route's probe config asks for, or nil for
// none. TCP probes connect to addr with dial and HTTP probes GET baseURL+path
// with client, so both take the same path (timeouts, interface) as real
// requests.
func NewProber(cfg config.Probe, addr, baseURL string, dial func(ctx context.Context, network, addr string) (net.Conn, error), client *http.Client) Prober {
	switch cfg.Type {
	case config.ProbeNone:
		return nil
	case config.ProbeHTTP:
		url := baseURL + cfg.Path
		return ProberFunc(func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			req.Header.Set("User-Agent", "misaki-probe")
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode >= 500 {
				return fmt.Errorf("probe %s: status %d", url, resp.StatusCode)
			}
			return nil
		})
	default:
		return ProberFunc(func(ctx context.Context) error {
			c, err := dial(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			return c.Close()
		})
	}
}

// Reachable reports the current state.
func (u *Upstream) Reachable() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.status.Reachable
}

// Status returns the current state.
func (u *Upstream) Status() Status {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.status
}

// Kick asks for a probe now (for example when a link comes up).
func (u *Upstream) Kick() {
	select {
	case u.kick <- struct{}{}:
	default:
	}
}

// Failed records a passive failure: a request could not connect.
func (u *Upstream) Failed(err error) {
	u.set(false, "request", err)
	u.Kick()
}

// Unanswered records a passive failure after connecting: the upstream (or
// a middlebox in front of it) accepted a request's connection, then closed
// it or stayed silent before any byte of a response. Until an answer or a
// probe says otherwise, a connect that succeeds does not make it reachable.
func (u *Upstream) Unanswered(err error) {
	u.unanswered.Store(true)
	u.set(false, "request", err)
	u.Kick()
}

// Reached records a passive success: a dial (answered false) or a response
// (answered true) of a real request, or of a probe through the same dialer.
// An unreachable upstream becomes reachable at once, without waiting for
// the next probe, unless it went down unanswered and this is only a dial; a
// reachable one costs one atomic load.
func (u *Upstream) Reached(answered bool) {
	if u.up.Load() || (!answered && u.unanswered.Load()) {
		return
	}
	u.set(true, "request", nil)
}

func (u *Upstream) set(ok bool, source string, err error) {
	u.mu.Lock()
	changed := u.status.Reachable != ok
	if changed {
		u.status = Status{Reachable: ok, Since: u.clock.Now(), Source: source}
		u.up.Store(ok)
	}
	if ok {
		u.unanswered.Store(false)
	}
	if err != nil {
		u.status.LastError = err.Error()
	} else if ok {
		u.status.LastError = ""
	}
	u.mu.Unlock()
	if !changed {
		return
	}
	if ok {
		u.log.Info("upstream reachable", "source", source)
	} else {
		u.log.Warn("upstream unreachable", "source", source, "err", err)
	}
	if u.onChange != nil {
		u.onChange()
	}
}

// Run probes until ctx ends: every Interval while reachable, with backoff
// from Backoff.Initial doubling to Backoff.Max (equal jitter, probeBackoff) while not, and at once
// when kicked. With no prober, a passive failure holds for one backoff step
// and then real requests try again, so a route never stays down forever.
func (u *Upstream) Run(ctx context.Context) error {
	fails := 0
	for {
		delay := u.cfg.Interval.D()
		if fails > 0 {
			delay = probeBackoff(u.cfg.Backoff).Delay(fails-1, rand.Float64())
		}
		t := u.clock.NewTimer(delay)
		kicked := false
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-u.kick:
			t.Stop()
			kicked = true
		case <-t.C():
		}
		if u.prober == nil {
			// Without probes, a passive failure is trusted for one backoff
			// step, then the upstream is tried again by real requests.
			switch {
			case kicked:
				fails++
			case u.Reachable():
				fails = 0
			default:
				u.set(true, "retry", nil)
			}
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout.D())
		err := u.prober.Probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			fails++
			u.set(false, "probe", err)
			continue
		}
		fails = 0
		u.set(true, "probe", nil)
	}
}

// probeBackoff is the delay between probes of an unreachable upstream:
// Initial doubling to Max, each delay drawn from [d/2, d] ("equal
// jitter", so the proxies of a fleet neither probe in step nor collapse
// to zero).
func probeBackoff(b config.Backoff) backoff.Policy {
	return backoff.Policy{Initial: b.Initial.D(), Max: b.Max.D(), Multiplier: 2, Jitter: 0.5}
}
