package health

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/waitfor"
)

// recordingClock is a fake clock that remembers each delay asked of it.
type recordingClock struct {
	*clock.Fake
	mu     sync.Mutex // guards delays
	delays []time.Duration
}

func (c *recordingClock) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	c.delays = append(c.delays, d)
	c.mu.Unlock()
	return c.Fake.NewTimer(d)
}

func (c *recordingClock) last() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.delays[len(c.delays)-1]
}

// A down upstream is probed at least every DefaultProbeBackoffMax, however
// long it has been down: a WebSocket held through a 3 s outage must not wait
// a 10 s backoff step after the upstream is back.
func TestProbeBackoffCappedByDefault(t *testing.T) {
	c := config.Config{Routes: []config.Route{{Name: "r", Hosts: []string{"svc.mesh"}, Upstream: "http://127.0.0.1:1"}}}
	c.SetDefaults()
	cfg := c.Routes[0].Probe
	clk := &recordingClock{Fake: clock.NewFake(time.Unix(0, 0))}
	var probes atomic.Int32
	u := New("up", cfg, ProberFunc(func(context.Context) error {
		probes.Add(1)
		return errors.New("refused")
	}), clk, quiet, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go u.Run(ctx)

	var longest time.Duration
	for n := int32(1); n <= 15; n++ {
		waitfor.True(t, "the next probe's timer armed", func() bool { return clk.Timers() == 1 })
		d := clk.last()
		if n > 1 {
			longest = max(longest, d)
		}
		clk.Advance(d)
		waitfor.True(t, fmt.Sprintf("probe %d sent", n), func() bool { return probes.Load() == n })
	}
	if longest > config.DefaultProbeBackoffMax || longest < cfg.Backoff.Initial.D()/2 {
		t.Fatalf("longest wait between probes of a down upstream %v, want at most %v", longest, config.DefaultProbeBackoffMax)
	}
}

// A dial or a response that succeeds marks a down upstream reachable at
// once, before any probe; after a failure with no answer (the connection
// accepted, then closed or silent) only an answer does.
func TestReachedMarksReachableAtOnce(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	var flips atomic.Int32
	cfg := config.Probe{Interval: config.Duration(time.Hour), Timeout: config.Duration(time.Second),
		Backoff: config.Backoff{Initial: config.Duration(time.Hour), Max: config.Duration(time.Hour)}}
	u := New("up", cfg, ProberFunc(func(context.Context) error { return errors.New("refused") }), clk, quiet, func() { flips.Add(1) })
	u.Failed(errors.New("refused"))
	if u.Reachable() {
		t.Fatal("reachable after a failure")
	}
	u.Reached(false) // a dial that connects
	if s := u.Status(); !s.Reachable || s.Source != "request" || flips.Load() != 2 {
		t.Fatalf("after a dial: %+v, %d flips", s, flips.Load())
	}
	u.Reached(true) // already reachable: no flip
	if flips.Load() != 2 {
		t.Fatalf("%d flips", flips.Load())
	}

	u.Unanswered(errors.New("EOF before any byte of a response"))
	u.Reached(false)
	if u.Reachable() {
		t.Fatal("a dial made an upstream that closes accepted connections reachable")
	}
	u.Reached(true)
	if !u.Reachable() || flips.Load() != 4 {
		t.Fatalf("an answer did not make it reachable: %+v, %d flips", u.Status(), flips.Load())
	}
	u.Failed(errors.New("refused")) // the flag went with the answer
	u.Reached(false)
	if !u.Reachable() {
		t.Fatal("a dial after a refused one did not make it reachable")
	}
}
